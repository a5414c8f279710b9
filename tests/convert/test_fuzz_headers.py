"""Hypothesis properties of the converter's readers of untrusted bytes: safetensors files and index
files. Whatever the bytes, reading succeeds with tensors that are sound or raises ConversionError."""

from __future__ import annotations

import itertools
import json
import math
import struct
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qwen3_vllm_rerank.convert._reading import DTYPE_SIZES, Shard, read_shard, read_shards
from qwen3_vllm_rerank.errors import ConversionError
from tests.convert.hostile import entry, safetensors_bytes

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: Any JSON value, nested a few levels (deeper nesting has its own strategy).
JSON: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
_DIM = st.integers(min_value=-2, max_value=5)
_SHAPE = st.lists(_DIM, max_size=3) | st.sampled_from([["2"], [True], [2.5], None, 4])


@st.composite
def _consistent(draw: st.DrawFn) -> dict[str, Any]:
    """An entry whose offsets span exactly shape x dtype bytes (negative sizes included), anywhere."""
    dtype = draw(st.sampled_from(sorted(DTYPE_SIZES)))
    shape = draw(st.lists(_DIM, max_size=3))
    begin = draw(st.integers(min_value=0, max_value=48))
    return entry(dtype, shape, (begin, begin + math.prod(shape) * DTYPE_SIZES[dtype]))


#: Header entries that are often right and often slightly wrong: the paths past the first check.
ENTRY = _consistent() | st.builds(
    entry,
    dtype=st.sampled_from([*DTYPE_SIZES, "F4", "f32", 3, None]),
    shape=_SHAPE,
    offsets=st.lists(st.integers(min_value=-4, max_value=80), min_size=2, max_size=2) | JSON,
)
HEADER = st.dictionaries(st.sampled_from(["a", "b", "c", "__metadata__"]), ENTRY | JSON, max_size=4)
#: Nesting from shallow to far past the parser's recursion limit, as arrays or objects.
DEEP = st.tuples(st.integers(min_value=1, max_value=200_000), st.sampled_from([("[", "]"), ('{"k":', "}")]))


def _deep(depth: int, brackets: tuple[str, str]) -> bytes:
    opening, closing = brackets
    inner = "1" if opening.startswith("{") else ""
    return (opening * depth + inner + closing * depth).encode()


def _assert_sound(shard: Shard, data: bytes) -> None:
    """Every tensor inside the data section, sized by its shape and dtype, no two sharing a byte."""
    (length,) = struct.unpack("<Q", data[:8])
    for tensor in shard.tensors.values():
        assert all(type(d) is int and d >= 0 for d in tensor.shape)
        assert tensor.nbytes == math.prod(tensor.shape) * DTYPE_SIZES[tensor.dtype]
        assert 8 + length <= tensor.start
        assert tensor.start + tensor.nbytes <= len(data) == shard.size
    spans = sorted((t.start, t.start + t.nbytes) for t in shard.tensors.values() if t.nbytes)
    assert all(end <= start for (_, end), (start, _) in itertools.pairwise(spans))


def _read(data: bytes) -> Shard | None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "model.safetensors"
        path.write_bytes(data)
        try:
            shard = read_shard(path)
        except ConversionError as exc:
            refused = str(exc)
        else:
            _assert_sound(shard, data)
            return shard
    assert str(path) in refused, "the error names the file"
    return None


@FUZZ
@given(st.binary(max_size=256))
def test_arbitrary_bytes(data: bytes) -> None:
    """Any bytes as a safetensors file: sound tensors, or a ConversionError naming the file."""
    _read(data)


@FUZZ
@given(st.binary(max_size=128), st.binary(max_size=128))
def test_arbitrary_header_bytes_with_the_right_length(header: bytes, body: bytes) -> None:
    """Any header bytes behind a correct length prefix: sound tensors, or a ConversionError."""
    _read(safetensors_bytes(header, body))


@FUZZ
@given(HEADER | JSON, st.integers(min_value=0, max_value=96), st.none() | st.integers(0, 2**64 - 1))
def test_arbitrary_json_header(header: Any, body: int, length: int | None) -> None:
    """Any JSON as the header, any data size, any claimed length: sound tensors, or a ConversionError."""
    _read(safetensors_bytes(header, bytes(body), length=length))


@st.composite
def _valid(draw: st.DrawFn) -> tuple[dict[str, Any], int]:
    """A well-formed header (tensors laid out in any order, gaps allowed) and its data size."""
    names = draw(st.lists(st.text(min_size=1, max_size=6).filter(lambda n: n != "__metadata__"), unique=True))
    header: dict[str, Any] = {}
    offset = 0
    for name in draw(st.permutations(names)):
        dtype = draw(st.sampled_from(sorted(DTYPE_SIZES)))
        shape = draw(st.lists(st.integers(min_value=0, max_value=4), max_size=3))
        offset += draw(st.integers(min_value=0, max_value=3))
        header[name] = entry(dtype, shape, (offset, offset + math.prod(shape) * DTYPE_SIZES[dtype]))
        offset = header[name]["data_offsets"][1]
    return header, offset + draw(st.integers(min_value=0, max_value=3))


@FUZZ
@given(_valid())
def test_a_well_formed_header_is_read_exactly(valid: tuple[dict[str, Any], int]) -> None:
    """A well-formed header is read, every tensor as written: the checks refuse only what is wrong."""
    header, size = valid
    data = safetensors_bytes(header, bytes(size))
    shard = _read(data)
    assert shard is not None
    start = 8 + len(json.dumps(header).encode())
    written = {n: (e["dtype"], tuple(e["shape"]), start + e["data_offsets"][0]) for n, e in header.items()}
    assert {n: (t.dtype, t.shape, t.start) for n, t in shard.tensors.items()} == written


@FUZZ
@given(DEEP, st.booleans())
def test_deeply_nested_header(nesting: tuple[int, tuple[str, str]], inside_an_entry: bool) -> None:
    """A header nested to any depth, whole or inside one entry: a ConversionError, never RecursionError."""
    nested = _deep(*nesting)
    header = b'{"t": {"dtype": "F32", "shape": ' + nested + b"}}" if inside_an_entry else nested
    assert _read(safetensors_bytes(header)) is None


_SHARD = safetensors_bytes({"a": entry("F32", (1,), (0, 4)), "b": entry("F32", (1,), (4, 8))}, bytes(8))
_FILES = st.sampled_from(
    ["model-1.safetensors", "../model-1.safetensors", "/model-1.safetensors", "x.bin", ""]
)
INDEX = st.fixed_dictionaries(
    {"weight_map": st.dictionaries(st.sampled_from(["a", "b", "c"]), _FILES | JSON, max_size=3) | JSON},
    optional={"metadata": JSON},
)


def assert_names(root: Path, message: str) -> None:
    """The error names a file of the checkpoint read (never another one)."""
    assert str(root) in message


def _read_index(text: bytes) -> None:
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory) / "checkpoint"
        root.mkdir()
        (root / "model-1.safetensors").write_bytes(_SHARD)
        (Path(directory) / "model-1.safetensors").write_bytes(_SHARD)  # what ../ would reach
        (root / "x.bin").write_bytes(_SHARD)
        (root / "model.safetensors.index.json").write_bytes(text)
        try:
            shards, index, located = read_shards(root)
        except ConversionError as exc:
            assert_names(root, str(exc))
            return
        assert [shard.path for shard in shards] == [root / "model-1.safetensors"]
        assert index is not None
        assert set(located) == set(index["weight_map"]) == set(shards[0].tensors)
        assert all(shard is shards[0] and tensor.name == name for name, (shard, tensor) in located.items())
        _assert_sound(shards[0], _SHARD)


@FUZZ
@given(INDEX | JSON)
def test_arbitrary_index(index: Any) -> None:
    """Any JSON as the index: every tensor located in the one shard beside it that holds it, or a ConversionError."""
    _read_index(json.dumps(index).encode())


@FUZZ
@given(DEEP)
def test_deeply_nested_index(nesting: tuple[int, tuple[str, str]]) -> None:
    """An index nested to any depth: a ConversionError, never RecursionError."""
    _read_index(b'{"weight_map": ' + _deep(*nesting) + b"}")
