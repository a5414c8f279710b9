"""Reading safetensors checkpoints without loading them: headers, the shard index, single rows.

Everything here reads files a checkpoint's publisher wrote, so nothing in them is trusted: every
header and index is checked against the format (and the file's real size) before a byte is used,
and anything wrong is a :class:`~qwen3_vllm_rerank.errors.ConversionError` naming the input file.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import reprlib
import stat
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConversionError

INDEX, SINGLE = "model.safetensors.index.json", "model.safetensors"
DTYPE_SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "U16": 2, "I16": 2,
               "F16": 2, "BF16": 2, "U32": 4, "I32": 4, "F32": 4, "U64": 8, "I64": 8, "F64": 8}  # fmt: skip
#: A header this long is not one of a checkpoint this converter reads: the 8B's shards have headers
#: of about 30 kB. Parsing JSON costs 10-20 times its length in memory (a 22 MB header peaked at
#: 245-455 MB); under this cap a header's parse peaks at about 12 MB (tracemalloc).
MAX_HEADER = 1 << 20
_METADATA = "__metadata__"
_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother = 3, 80, 80


def short(value: object) -> str:
    """An untrusted value as a bounded ``repr`` for an error message (depth and length capped)."""
    return _SHORT.repr(value)


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


class _DuplicateKey(Exception):
    """A JSON object names one key twice: readers disagree on which value counts."""


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` for :func:`json.loads`: an object, refused if it repeats a key."""
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise _DuplicateKey(key)
        obj[key] = value
    return obj


def parse_json(raw: bytes, path: Path, what: str) -> object:
    """UTF-8 JSON text read from ``path`` as a value; ``what`` says what the text is, for the errors.

    Refused as :class:`ConversionError`: text that is not UTF-8 or not JSON, nesting too deep to
    parse, an integer too long to convert, and an object naming a key twice.
    """
    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=_unique)
    except UnicodeDecodeError as exc:
        raise ConversionError(f"{path}: {what} is not UTF-8 text: {exc}") from exc
    except RecursionError as exc:
        raise ConversionError(f"{path}: {what} nests JSON arrays or objects too deeply to be read") from exc
    except _DuplicateKey as exc:
        raise ConversionError(f"{path}: {what} names the key {short(exc.args[0])} twice") from exc
    except ValueError as exc:  # JSONDecodeError, and integers longer than Python converts
        raise ConversionError(f"{path}: {what} is not valid JSON: {short(str(exc))}") from exc


def allowed_roots(root: Path) -> tuple[Path, ...]:
    """Where the files of the checkpoint directory ``root`` may really be: inside ``root``, and for a
    Hugging Face cache snapshot (``.../snapshots/REV``, whose files are symlinks into the repository's
    ``blobs``) inside that ``blobs`` directory."""
    real = Path(os.path.realpath(root))
    return (real, real.parent.parent / "blobs") if real.parent.name == "snapshots" else (real,)


def open_inside(path: Path) -> io.FileIO:
    """``path``, a file of the checkpoint directory it lies in, opened for reading, unbuffered.

    A symlink is followed only to a file inside that directory (or, for a Hugging Face cache
    snapshot, inside its ``blobs``, see :func:`allowed_roots`); the resolved path is opened with
    ``O_NOFOLLOW`` and must be a regular file (no FIFO or device). Else a ConversionError naming it.
    """
    real = Path(os.path.realpath(path))
    if not any(real.is_relative_to(root) for root in allowed_roots(path.parent)):
        raise ConversionError(
            f"{path} is a symlink to {real}, outside the checkpoint directory {path.parent}: the converter "
            "reads only the checkpoint's own files; copy the file into the directory if it belongs there"
        )
    try:
        # O_NONBLOCK: a FIFO is refused below instead of waiting for a writer.
        fd = os.open(real, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        raise ConversionError(f"cannot read {path}: {exc}") from exc
    handle = os.fdopen(fd, "rb", buffering=0)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        handle.close()
        raise ConversionError(f"{path} is not a regular file: the converter reads only plain files")
    return handle


def read_bytes(path: Path) -> bytes:
    """All of ``path``, opened with :func:`open_inside`."""
    with open_inside(path) as handle:
        try:
            return handle.readall()
        except OSError as exc:
            raise ConversionError(f"cannot read {path}: {exc}") from exc


def read_json(path: Path) -> dict[str, Any]:
    """A JSON file holding an object (config.json, the index): anything else is a ConversionError."""
    raw = read_bytes(path)
    data = parse_json(raw, path, "the file")
    if not isinstance(data, dict):
        raise ConversionError(f"{path} does not hold a JSON object but {short(data)}")
    return data


def _naturals(value: object, count: int | None = None) -> list[int] | None:
    """``value`` if it is a JSON array of integers >= 0 (``count`` of them if given; no bools, floats
    or strings), else ``None``."""
    if not isinstance(value, list) or (count is not None and len(value) != count):
        return None
    return value if all(type(v) is int and v >= 0 for v in value) else None


def _numel(shape: Sequence[int], limit: int) -> int | None:
    """The product of ``shape``, or ``None`` once it passes ``limit`` (no huge products computed)."""
    if 0 in shape:
        return 0
    numel = 1
    for dim in shape:
        numel *= dim
        if numel > limit:
            return None
    return numel


def _tensor(path: Path, name: str, entry: object, data_start: int, size: int) -> Tensor:
    """One header entry, checked: a known dtype, a shape, offsets inside the file that match both."""
    bad = f"{path} is not a valid safetensors file: tensor {short(name)}"
    if not isinstance(entry, dict):
        raise ConversionError(f"{bad} is described by {short(entry)}, not an object")
    dtype, shape, offsets = (
        entry.get("dtype"),
        _naturals(entry.get("shape")),
        _naturals(entry.get("data_offsets"), 2),
    )
    if not isinstance(dtype, str) or dtype not in DTYPE_SIZES:
        raise ConversionError(
            f"{bad} has a dtype this converter cannot read: {short(dtype)} (known: {', '.join(DTYPE_SIZES)})"
        )
    if shape is None:
        found = short(entry.get("shape"))
        raise ConversionError(f"{bad} has the shape {found}: not a list of integers >= 0")
    if offsets is None:
        found = short(entry.get("data_offsets"))
        raise ConversionError(f"{bad} has the data_offsets {found}: not two integers >= 0, [begin, end]")
    begin, end = offsets
    if end < begin:
        raise ConversionError(f"{bad} has inconsistent offsets {[begin, end]}: it ends before it begins")
    numel = _numel(shape, size)
    if numel is None or end - begin != numel * DTYPE_SIZES[dtype]:
        needs = "more bytes than the file holds" if numel is None else f"{numel * DTYPE_SIZES[dtype]} bytes"
        raise ConversionError(
            f"{bad} has inconsistent offsets {[begin, end]}: they span {end - begin} bytes, but its shape "
            f"{short(shape)} of {dtype} needs {needs}"
        )
    if data_start + end > size:
        raise ConversionError(
            f"{bad} has inconsistent offsets {[begin, end]}: it ends at byte "
            f"{short(data_start + end)}, past the end of the file ({size} bytes): is it truncated?"
        )
    return Tensor(name, dtype, tuple(shape), data_start + begin, end - begin)


def _check_disjoint(path: Path, tensors: dict[str, Tensor]) -> None:
    """No two tensors share a byte (empty tensors hold none)."""
    spans = sorted((t for t in tensors.values() if t.nbytes), key=lambda t: (t.start, t.nbytes))
    for before, after in itertools.pairwise(spans):
        if after.start < before.start + before.nbytes:
            raise ConversionError(
                f"{path} is not a valid safetensors file: tensors {short(before.name)} and "
                f"{short(after.name)} overlap (their data_offsets share bytes)"
            )


def read_shard(path: Path) -> Shard:
    """Parse a safetensors header and check it: every tensor well described, inside the file, alone
    in its bytes; ``__metadata__`` a string-to-string object if present."""
    try:
        with open_inside(path) as handle:
            size = os.fstat(handle.fileno()).st_size
            raw = handle.read(8)
            length = struct.unpack("<Q", raw)[0] if len(raw) == 8 else None
            if length is None:
                raise ConversionError(
                    f"{path} is not a valid safetensors file: it is {size} bytes long, shorter than the "
                    "8-byte header length every safetensors file starts with"
                )
            if length > size - 8:
                raise ConversionError(
                    f"{path} is not a valid safetensors file: its header length says {length} bytes, more "
                    f"than the data that follows it ({size - 8} bytes): is it a safetensors file, complete?"
                )
            if length > MAX_HEADER:
                raise ConversionError(
                    f"{path}: its safetensors header is {length} bytes long, over this converter's "
                    f"{MAX_HEADER >> 20} MiB limit (Qwen3 rerankers' headers are about 30 kB): it is not "
                    "a Qwen3 reranker's shard, or was written with an unusual amount of metadata"
                )
            text = handle.read(length)
    except OSError as exc:
        raise ConversionError(f"cannot read {path}: {exc}") from exc
    header = parse_json(text, path, "the safetensors header")
    if not isinstance(header, dict):
        raise ConversionError(
            f"{path} is not a valid safetensors file: the header is {short(header)}, not an object"
        )
    metadata = header.pop(_METADATA, None)
    if metadata is not None and not (
        isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())
    ):
        raise ConversionError(
            f"{path} is not a valid safetensors file: {_METADATA} is {short(metadata)}, "
            "not an object of strings"
        )
    data_start = 8 + length
    tensors = {name: _tensor(path, name, entry, data_start, size) for name, entry in header.items()}
    _check_disjoint(path, tensors)
    return Shard(path, tensors, metadata, size)


def _shard_name(index: Path, name: object) -> str:
    """A shard named by the index: a plain ``*.safetensors`` file name beside it, nothing that leads
    elsewhere (``../x.safetensors``, ``/abs/x.safetensors``, ``sub/x.safetensors``)."""
    if (
        not isinstance(name, str)
        or not name.endswith(".safetensors")
        or any(c in name for c in "/\\\0")
        or name in (".", "..")
    ):
        raise ConversionError(
            f"{index} maps tensors to {short(name)}: the index may name only *.safetensors files "
            f"in its own directory ({index.parent}), by their plain names"
        )
    if not (index.parent / name).is_file():
        raise ConversionError(f"{index} names {name!r}, which is not a file in {index.parent}")
    return name


def read_index(root: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """The index json of a sharded checkpoint and its weight map (tensor name -> shard file name)."""
    path = root / INDEX
    index = read_json(path)
    weight_map, metadata = index.get("weight_map"), index.get("metadata")
    if not isinstance(weight_map, dict) or not weight_map:
        raise ConversionError(f"{path} has no weight_map (an object of tensor name -> shard file)")
    if metadata is not None and not isinstance(metadata, dict):
        raise ConversionError(f"{path} has a metadata entry that is {short(metadata)}, not an object")
    return index, {tensor: _shard_name(path, name) for tensor, name in weight_map.items()}


def read_shards(root: Path) -> tuple[list[Shard], dict[str, Any] | None, dict[str, tuple[Shard, Tensor]]]:
    """The shards, the index json (``None`` for a single file) and every tensor by name, cross-checked:
    the index maps every tensor of every shard, each to the one shard that holds it."""
    if not (root / INDEX).is_file():
        if not (root / SINGLE).is_file():
            found = sorted(p.name for p in root.iterdir() if p.suffix in (".bin", ".pt", ".safetensors"))
            raise ConversionError(
                f"{root} has neither {SINGLE} nor {INDEX} (found {found or 'no weight files'}); only "
                "safetensors checkpoints can be converted: re-save the model with safe_serialization=True"
            )
        shard = read_shard(root / SINGLE)
        return [shard], None, {name: (shard, tensor) for name, tensor in shard.tensors.items()}
    index, weight_map = read_index(root)
    shards = {name: read_shard(root / name) for name in sorted(set(weight_map.values()))}
    for file_name, shard in shards.items():
        for tensor_name in shard.tensors:
            if (mapped := weight_map.get(tensor_name)) != file_name:
                where = f"maps it to {mapped}" if mapped else "does not list it"
                raise ConversionError(
                    f"{root / file_name} holds {short(tensor_name)}, but {root / INDEX} {where}: every "
                    "tensor must be in exactly one shard, the one the index names"
                )
    for tensor_name, file_name in weight_map.items():
        if tensor_name not in shards[file_name].tensors:
            raise ConversionError(
                f"{root / INDEX} maps {short(tensor_name)} to {file_name}, which does not hold it"
            )
    located = {name: (shards[file], shards[file].tensors[name]) for name, file in weight_map.items()}
    return list(shards.values()), index, located


def read_rows(path: Path, head: Tensor, ids: Sequence[int]) -> list[list[float]]:
    """Rows of a 2-D float tensor as Python floats, read with ``pread`` (the rest stays on disk)."""
    row_bytes = head.shape[1] * DTYPE_SIZES[head.dtype]
    with open_inside(path) as handle:
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
