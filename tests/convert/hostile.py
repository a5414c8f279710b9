"""Building safetensors files, index files and whole tiny checkpoints by hand, for hostile inputs.

No torch: a checkpoint here is a config.json, a word-level tokenizer.json and safetensors bytes
written with ``struct``, small enough to build per test in the fast tier.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer
from tokenizers.models import WordLevel

#: The tiny checkpoint's vocabulary: yes, no and Qwen3's padding token are single tokens.
VOCAB = {"yes": 0, "no": 1, "<|endoftext|>": 2, "other": 3}
HIDDEN = 2
EMBED = "model.embed_tokens.weight"


def safetensors_bytes(header: object, data: bytes = b"", *, length: int | None = None) -> bytes:
    """A safetensors file: the 8-byte little-endian header length, the header, the data.

    ``header``: a JSON value (dumped) or raw ``bytes``; ``length``: a header length to claim
    instead of the real one.
    """
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


def entry(dtype: Any = "F32", shape: Any = (2,), offsets: Any = (0, 8)) -> dict[str, Any]:
    """One header entry, each field as given (lists for tuples)."""
    as_json = [list(v) if isinstance(v, tuple) else v for v in (shape, offsets)]
    return {"dtype": dtype, "shape": as_json[0], "data_offsets": as_json[1]}


def head_header(tensor: str = EMBED) -> tuple[dict[str, Any], bytes]:
    """A valid header holding the output layer (``len(VOCAB)`` x ``HIDDEN`` float32) and its data."""
    nbytes = len(VOCAB) * HIDDEN * 4
    data = struct.pack(f"<{len(VOCAB) * HIDDEN}f", *(0.25 * i for i in range(len(VOCAB) * HIDDEN)))
    return {tensor: entry("F32", (len(VOCAB), HIDDEN), (0, nbytes))}, data


def write_checkpoint(
    root: Path, *, config: dict[str, Any] | None = None, weights: bytes | None = None
) -> Path:
    """A tiny tied Qwen3-Reranker-shaped checkpoint at ``root``: ``config`` entries override the
    defaults (``None`` values remove a key); ``weights`` replaces ``model.safetensors``."""
    root.mkdir(parents=True, exist_ok=True)
    settings: dict[str, Any] = {
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        "tie_word_embeddings": True,
        "vocab_size": len(VOCAB),
        "hidden_size": HIDDEN,
    }
    for key, value in (config or {}).items():
        if value is None:
            settings.pop(key, None)
        else:
            settings[key] = value
    (root / "config.json").write_text(json.dumps(settings))
    Tokenizer(WordLevel(VOCAB, unk_token="other")).save(str(root / "tokenizer.json"))
    (root / "model.safetensors").write_bytes(
        weights if weights is not None else safetensors_bytes(*head_header())
    )
    return root


def write_sharded(root: Path, shards: dict[str, bytes], weight_map: object, **index: Any) -> Path:
    """A sharded checkpoint at ``root``: ``shards`` (file name -> bytes) and an index with ``weight_map``
    (any JSON value) and the other ``index`` entries; no ``model.safetensors``."""
    write_checkpoint(root)
    (root / "model.safetensors").unlink()
    for name, data in shards.items():
        (root / name).write_bytes(data)
    (root / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map, **index}))
    return root


def link(target: Path, source: Path) -> None:
    """``target`` as another name of ``source``: a hard link for a file (the converter refuses a
    symlink out of the checkpoint), a symlink for a directory (it reads none)."""
    if source.is_file():
        target.hardlink_to(source)
    else:
        target.symlink_to(source, target_is_directory=True)
