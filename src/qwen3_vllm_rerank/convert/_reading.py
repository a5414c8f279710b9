"""Reading safetensors checkpoints without loading them: headers, the shard index, single rows."""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConversionError

INDEX, SINGLE = "model.safetensors.index.json", "model.safetensors"
DTYPE_SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "U16": 2, "I16": 2,
               "F16": 2, "BF16": 2, "U32": 4, "I32": 4, "F32": 4, "U64": 8, "I64": 8, "F64": 8}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Tensor:
    """A tensor's entry in a safetensors file; ``start`` is absolute in the file."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int
    nbytes: int


@dataclass(frozen=True, slots=True)
class Shard:
    """One safetensors file: its tensors (in header order) and metadata; the data stays on disk."""

    path: Path
    tensors: dict[str, Tensor]
    metadata: dict[str, str] | None
    size: int


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConversionError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConversionError(f"{path} does not hold a JSON object")
    return data


def read_shard(path: Path) -> Shard:
    """Parse a safetensors header and check that every tensor lies inside the file."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        raw = handle.read(8)
        length = struct.unpack("<Q", raw)[0] if len(raw) == 8 else -1
        if not 0 <= length <= min(size - 8, 100 << 20):  # a header of 100 MB or more is not one
            raise ConversionError(f"{path} is not a valid safetensors file: header length {length}")
        try:
            header = json.loads(handle.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConversionError(f"{path} is not a valid safetensors file: {exc}") from exc
    if not isinstance(header, dict):
        raise ConversionError(f"{path} is not a valid safetensors file: the header is not an object")
    metadata, data_start, tensors = header.pop("__metadata__", None), 8 + length, {}
    for name, entry in header.items():
        try:
            dtype, shape = str(entry["dtype"]), tuple(int(d) for d in entry["shape"])
            begin, end = (int(o) for o in entry["data_offsets"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ConversionError(f"{path}: malformed header entry for {name!r}: {entry!r}") from exc
        if dtype not in DTYPE_SIZES:
            raise ConversionError(f"{path}: tensor {name!r} has a dtype this converter cannot read: {dtype}")
        if begin < 0 or end - begin != math.prod(shape) * DTYPE_SIZES[dtype] or data_start + end > size:
            raise ConversionError(f"{path}: tensor {name!r} has inconsistent offsets {[begin, end]}")
        tensors[name] = Tensor(name, dtype, shape, data_start + begin, end - begin)
    return Shard(path, tensors, metadata, size)


def read_shards(root: Path) -> tuple[list[Shard], dict[str, Any] | None, dict[str, tuple[Shard, Tensor]]]:
    """The shards, the index json (``None`` for a single file) and every tensor by name, cross-checked."""
    if not (root / INDEX).is_file():
        if not (root / SINGLE).is_file():
            found = sorted(p.name for p in root.iterdir() if p.suffix in (".bin", ".pt", ".safetensors"))
            raise ConversionError(
                f"{root} has neither {SINGLE} nor {INDEX} (found {found or 'no weight files'}); only "
                "safetensors checkpoints can be converted: re-save the model with safe_serialization=True"
            )
        shard = read_shard(root / SINGLE)
        return [shard], None, {name: (shard, tensor) for name, tensor in shard.tensors.items()}
    index = read_json(root / INDEX)
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise ConversionError(f"{root / INDEX} has no weight_map")
    for name in set(weight_map.values()):
        if not isinstance(name, str) or Path(name).name != name or not (root / name).is_file():
            raise ConversionError(f"{root / INDEX} names {name!r}, which is not a file in {root}")
    shards = {name: read_shard(root / name) for name in sorted(set(weight_map.values()))}
    for tensor_name, file_name in weight_map.items():
        if tensor_name not in shards[file_name].tensors:
            raise ConversionError(f"{root / INDEX} maps {tensor_name} to {file_name}, which does not hold it")
    located = {name: (shards[file], shards[file].tensors[name]) for name, file in weight_map.items()}
    return list(shards.values()), index, located


def read_rows(path: Path, head: Tensor, ids: Sequence[int]) -> list[list[float]]:
    """Rows of a 2-D float tensor as Python floats, read with ``pread`` (the rest stays on disk)."""
    row_bytes = head.shape[1] * DTYPE_SIZES[head.dtype]
    with path.open("rb") as handle:
        rows = [os.pread(handle.fileno(), row_bytes, head.start + i * row_bytes) for i in ids]
    if any(len(row) != row_bytes for row in rows):
        raise ConversionError(f"{path} ends inside a row of {head.name}")
    return [decode(row, head.dtype) for row in rows]


def decode(raw: bytes, dtype: str) -> list[float]:
    """Little-endian F16, BF16, F32 or F64 values; each fits exactly in a Python float."""
    n = len(raw) // DTYPE_SIZES[dtype]
    if dtype == "BF16":  # the high half of a float32
        raw, dtype = struct.pack(f"<{n}I", *(h << 16 for h in struct.unpack(f"<{n}H", raw))), "F32"
    code = {"F16": "e", "F32": "f", "F64": "d"}[dtype]
    return list(struct.unpack(f"<{n}{code}", raw))
