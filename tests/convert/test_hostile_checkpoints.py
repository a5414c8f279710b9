"""A checkpoint is its publisher's bytes: every malformed header, index or config is a ConversionError
that names the input file and says what is wrong, before anything is written. No torch needed."""

from __future__ import annotations

import json
import os
import stat
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from qwen3_vllm_rerank.convert import convert_checkpoint
from qwen3_vllm_rerank.convert._reading import MAX_HEADER, read_shard, read_shards
from qwen3_vllm_rerank.errors import ConversionError
from tests.convert.hostile import (
    EMBED,
    entry,
    head_header,
    safetensors_bytes,
    write_checkpoint,
    write_sharded,
)

DEEP = 100_000  # far past the JSON parser's recursion limit

# --- one safetensors file --------------------------------------------------------------------------

#: name -> (the file's bytes, what the error must say). Each case marked "passed" was read without
#: error before the converter's hardening (or raised something else than ConversionError).
HOSTILE_FILES: dict[str, tuple[bytes, str]] = {
    # passed (RecursionError)
    "deeply nested header": (safetensors_bytes(b"[" * DEEP + b"]" * DEEP), "nests JSON .* too deeply"),
    "deeply nested entry": (
        safetensors_bytes(b'{"t": {"shape": ' + b"[" * DEEP + b"]" * DEEP + b"}}"),
        "nests JSON .* too deeply",
    ),
    # passed: prod([-1, -4]) * 4 == 16 == end - begin
    "negative dimensions": (
        safetensors_bytes({"t": entry("F32", (-1, -4), (0, 16))}, bytes(16)),
        r"shape \[-1, -4\]: not a list of integers >= 0",
    ),
    # passed: a negative size made end < begin consistent
    "end before begin": (
        safetensors_bytes({"t": entry("F32", (-2,), (8, 0))}, bytes(8)),
        r"shape \[-2\]: not a list of integers >= 0",
    ),
    "end before begin, sizes nonnegative": (
        safetensors_bytes({"t": entry("F32", (0,), (8, 0))}, bytes(8)),
        r"offsets \[8, 0\]: it ends before it begins",
    ),
    # passed: int("2")
    "string shape": (
        safetensors_bytes({"t": entry("F32", ("2", "2"), (0, 16))}, bytes(16)),
        r"shape \['2', '2'\]: not a list of integers",
    ),
    # passed: int(True), int(2.5)
    "bool shape": (safetensors_bytes({"t": entry("F32", (True,), (0, 4))}, bytes(4)), "shape \\[True\\]"),
    "float shape": (safetensors_bytes({"t": entry("F32", (2.5,), (0, 8))}, bytes(8)), "shape \\[2.5\\]"),
    # passed (OverflowError)
    "infinite shape": (
        safetensors_bytes(b'{"t": {"dtype": "F32", "shape": [Infinity], "data_offsets": [0, 4]}}', bytes(4)),
        "shape \\[inf\\]",
    ),
    # passed (ValueError: more than 4300 digits)
    "integer too long to parse": (
        safetensors_bytes(
            b'{"t": {"dtype": "F32", "shape": [' + b"9" * 5000 + b'], "data_offsets": [0, 4]}}'
        ),
        "is not valid JSON",
    ),
    # passed: both tensors read, sharing bytes 8-15
    "overlapping offsets": (
        safetensors_bytes({"a": entry("F32", (4,), (0, 16)), "b": entry("F32", (4,), (8, 24))}, bytes(24)),
        "tensors 'a' and 'b' overlap",
    ),
    # passed: the last entry won
    "a tensor named twice": (
        safetensors_bytes(
            b'{"t": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "t": {}}', bytes(4)
        ),
        "names the key 't' twice",
    ),
    # passed: json.loads guesses UTF-16 from bytes
    "UTF-16 header": (
        safetensors_bytes(json.dumps({"t": entry("F32", (1,), (0, 4))}).encode("utf-16"), bytes(4)),
        "is not UTF-8 text",
    ),
    # passed, then written back into the converted shard
    "metadata that is not strings": (
        safetensors_bytes({"__metadata__": {"format": 1}, "t": entry("F32", (1,), (0, 4))}, bytes(4)),
        "__metadata__ is {'format': 1}, not an object of strings",
    ),
    # already refused; the messages now say more
    "offsets past the file end": (
        safetensors_bytes({"t": entry("F32", (4,), (0, 16))}, bytes(8)),
        r"ends at byte \d+, past the end of the file \(\d+ bytes\)",
    ),
    "header longer than the file": (
        safetensors_bytes({"t": entry()}, bytes(8), length=10_000),
        "header length says 10000 bytes, more than the data that follows it",
    ),
    "header of more than 100 MB": (
        safetensors_bytes(b"{}", bytes(8), length=200 << 20),
        "header length says 209715200 bytes",
    ),
    "shorter than the length prefix": (b"\x01\x02", "shorter than the 8-byte header length"),
    "header not an object": (safetensors_bytes([1, 2]), r"the header is \[1, 2\], not an object"),
    "entry not an object": (safetensors_bytes({"t": [1]}), r"described by \[1\], not an object"),
    "unknown dtype": (safetensors_bytes({"t": entry("F4", (2,), (0, 1))}, bytes(1)), "dtype .* 'F4'"),
    "dtype not a string": (safetensors_bytes({"t": entry(["F32"])}, bytes(8)), r"dtype .* \['F32'\]"),
    "three offsets": (safetensors_bytes({"t": entry(offsets=(0, 8, 16))}, bytes(16)), "data_offsets"),
    "size mismatch": (
        safetensors_bytes({"t": entry("F32", (4,), (0, 8))}, bytes(8)),
        r"span 8 bytes, but its shape \[4\] of F32 needs 16 bytes",
    ),
    "a huge shape": (
        safetensors_bytes({"t": entry("F32", [2**62] * 1000, (0, 8))}, bytes(8)),
        "needs more bytes than the file holds",
    ),
    "not JSON": (safetensors_bytes(b"{nope"), "is not valid JSON"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_FILES))
def test_a_malformed_safetensors_file_is_refused_naming_it(tmp_path: Path, case: str) -> None:
    data, match = HOSTILE_FILES[case]
    path = tmp_path / "model.safetensors"
    path.write_bytes(data)
    with pytest.raises(ConversionError, match=match) as info:
        read_shard(path)
    assert str(path) in str(info.value)
    assert len(str(info.value)) < 1000, "untrusted values are shown shortened"


def test_a_well_formed_file_is_still_read(tmp_path: Path) -> None:
    """The checks refuse only what is wrong: zero-size tensors, gaps, metadata and any order are fine."""
    header = {
        "__metadata__": {"format": "pt"},
        "b": entry("BF16", (2, 2), (16, 24)),
        "a": entry("F32", (4,), (0, 16)),
        "empty": entry("F32", (0, 3), (16, 16)),
        "scalar": entry("I64", (), (32, 40)),
    }
    path = tmp_path / "model.safetensors"
    path.write_bytes(safetensors_bytes(header, bytes(40)))
    shard = read_shard(path)
    start = 8 + len(json.dumps(header).encode())
    assert shard.metadata == {"format": "pt"}
    assert [(t.name, t.start - start, t.nbytes, t.shape) for t in shard.tensors.values()] == [
        ("b", 16, 8, (2, 2)),
        ("a", 0, 16, (4,)),
        ("empty", 16, 0, (0, 3)),
        ("scalar", 32, 8, ()),
    ]


# --- the index of a sharded checkpoint -------------------------------------------------------------


def _shard(*names: str) -> bytes:
    """A valid shard holding one float32 tensor per name."""
    return safetensors_bytes(
        {n: entry("F32", (1,), (4 * i, 4 * i + 4)) for i, n in enumerate(names)}, bytes(16)
    )


def test_an_index_pointing_outside_the_checkpoint_is_refused(tmp_path: Path) -> None:
    """A path traversal from a hostile index: ``../x`` and absolute names, even to real safetensors files."""
    outside = tmp_path / "outside.safetensors"
    outside.write_bytes(_shard("t"))
    for name in ("../outside.safetensors", str(outside), "sub/x.safetensors", "..\\outside.safetensors"):
        root = write_sharded(tmp_path / f"ckpt{len(name)}", {}, {"t": name})
        with pytest.raises(ConversionError, match=r"may name only \*.safetensors files in its own directory"):
            read_shards(root)


@pytest.mark.parametrize(
    ("shards", "weight_map", "index", "match"),
    [
        # passed: b.safetensors's own "t" was silently dropped from the converted index
        (
            {"a.safetensors": _shard("t"), "b.safetensors": _shard("t", "u")},
            {"t": "a.safetensors", "u": "b.safetensors"},
            {},
            "b.safetensors holds 't', but .* maps it to a.safetensors",
        ),
        # passed: a tensor the index does not list was copied, unlisted, into the output
        (
            {"a.safetensors": _shard("t", "hidden")},
            {"t": "a.safetensors"},
            {},
            "a.safetensors holds 'hidden', but .* does not list it",
        ),
        # passed: the last of two entries won
        ({"a.safetensors": _shard("t")}, "DUPLICATE", {}, "names the key 't' twice"),
        # passed read_shards (a TypeError in the plan later)
        (
            {"a.safetensors": _shard("t")},
            {"t": "a.safetensors"},
            {"metadata": [1]},
            "metadata entry .* not an object",
        ),
        # passed: any file name was read as a shard and written into the output
        ({"weights.bin": _shard("t")}, {"t": "weights.bin"}, {}, "may name only \\*.safetensors files"),
        # already refused
        ({}, {"t": "missing.safetensors"}, {}, "names 'missing.safetensors', which is not a file in"),
        ({"a.safetensors": _shard("t")}, {}, {}, "has no weight_map"),
        ({"a.safetensors": _shard("t")}, ["a.safetensors"], {}, "has no weight_map"),
        ({"a.safetensors": _shard("t")}, {"t": 3}, {}, "maps tensors to 3"),
        (
            {"a.safetensors": _shard("t")},
            {"t": "a.safetensors", "v": "a.safetensors"},
            {},
            "maps 'v' to a.safe",
        ),
    ],
)
def test_an_inconsistent_index_is_refused_naming_it(
    tmp_path: Path, shards: dict[str, bytes], weight_map: Any, index: dict[str, Any], match: str
) -> None:
    root = write_sharded(tmp_path / "ckpt", shards, {} if weight_map == "DUPLICATE" else weight_map, **index)
    if weight_map == "DUPLICATE":
        (root / "model.safetensors.index.json").write_text(
            '{"weight_map": {"t": "a.safetensors", "t": "a.safetensors"}}'
        )
    with pytest.raises(ConversionError, match=match) as info:
        read_shards(root)
    assert str(root) in str(info.value)


@pytest.mark.parametrize("text", ["[" * DEEP + "]" * DEEP, '{"weight_map": ' + "{" * DEEP, "[1, 2]", '"x"'])
def test_an_index_that_is_not_an_object_is_refused(tmp_path: Path, text: str) -> None:
    """Deep nesting passed as RecursionError before; a non-object was already refused."""
    root = write_sharded(tmp_path / "ckpt", {"a.safetensors": _shard("t")}, {"t": "a.safetensors"})
    (root / "model.safetensors.index.json").write_text(text)
    with pytest.raises(
        ConversionError, match=r"too deeply|does not hold a JSON object|not valid JSON"
    ) as info:
        read_shards(root)
    assert str(root / "model.safetensors.index.json") in str(info.value)


# --- end to end: refused before a byte is written, naming the input ---------------------------------


def _refused(source: Path, tmp_path: Path, match: str) -> str:
    dst = tmp_path / "out"
    with pytest.raises(ConversionError, match=match) as info:
        convert_checkpoint(source, dst, progress=False)
    message = str(info.value)
    assert ".converting" not in message, "the staging output is never what is blamed"
    assert not dst.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".converting")]
    return message


def test_the_tiny_checkpoint_converts(tmp_path: Path) -> None:
    """The base of the hostile variants below is a valid checkpoint: converted and verified."""
    out = convert_checkpoint(write_checkpoint(tmp_path / "ok"), tmp_path / "out", progress=False)
    assert json.loads((out / "config.json").read_text())["architectures"] == [
        "Qwen3ForSequenceClassification"
    ]


@pytest.mark.parametrize(
    "case", ["negative dimensions", "overlapping offsets", "deeply nested header", "string shape"]
)
def test_convert_blames_the_input_file(tmp_path: Path, case: str) -> None:
    header, data = head_header()
    weights = HOSTILE_FILES[case][0]
    if case == "overlapping offsets":  # the real head plus a tensor on its bytes
        header["extra"] = entry("F32", (2,), (0, 8))
        weights = safetensors_bytes(header, data)
    source = write_checkpoint(tmp_path / "src", weights=weights)
    message = _refused(
        source, tmp_path, HOSTILE_FILES[case][1] if case != "overlapping offsets" else "overlap"
    )
    assert str(source / "model.safetensors") in message


def test_convert_refuses_a_tensor_in_two_shards(tmp_path: Path) -> None:
    header, data = head_header()
    twice = {**header, "other": entry("F32", (1,), (len(data), len(data) + 4))}
    shards = {
        "a.safetensors": safetensors_bytes(header, data),
        "b.safetensors": safetensors_bytes(twice, data + bytes(4)),
    }
    source = write_sharded(tmp_path / "src", shards, {EMBED: "a.safetensors", "other": "b.safetensors"})
    message = _refused(source, tmp_path, f"holds '{EMBED}', but .* maps it to a.safetensors")
    assert str(source / "b.safetensors") in message


@pytest.mark.parametrize(
    ("config", "match"),
    [
        # passed as an original checkpoint: a substring test on a string
        ({"architectures": "Qwen3ForCausalLM"}, "architectures is 'Qwen3ForCausalLM', not a list"),
        ({"model_type": ["qwen3"]}, r"config.json says \['Qwen3ForCausalLM'\] \['qwen3'\]"),  # was TypeError
        ({"text_config": [1]}, r"text_config is \[1\], not an object"),  # was AttributeError
        ({"vocab_size": "many"}, "vocab_size is 'many', not an integer"),  # was ValueError
        ({"hidden_size": 2.0}, "hidden_size is 2.0, not an integer"),  # was read as 2
        ({"tie_word_embeddings": "false"}, "tie_word_embeddings is 'false', not true or false"),  # was tied
        ({"pad_token_id": "2"}, "pad_token_id is '2', not a token id"),  # was int("2")
        ({"pad_token_id": [2]}, r"pad_token_id is \[2\], not a token id"),  # was TypeError
    ],
)
def test_a_malformed_config_is_refused_naming_it(tmp_path: Path, config: dict[str, Any], match: str) -> None:
    source = write_checkpoint(tmp_path / "src", config=config)
    message = _refused(source, tmp_path, match)
    assert str(source) in message


# --- what the converter opens stays inside the checkpoint (issue 23, hole 13) ------------------


def _private(path: Path, text: str = "private notes") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o600)
    return path


@pytest.mark.parametrize("name", ["README.md", "tokenizer.json", "config.json", "model.safetensors"])
def test_a_symlink_out_of_the_checkpoint_is_refused_naming_it(tmp_path: Path, name: str) -> None:
    """Before the fix ``README.md -> /private/notes.txt`` (0600) was copied into the output as 0644."""
    source = write_checkpoint(tmp_path / "src")
    outside = _private(tmp_path / "private" / "notes.txt")
    if (source / name).exists():
        outside.write_bytes((source / name).read_bytes())  # a valid file: only where it lies is wrong
        (source / name).unlink()
    (source / name).symlink_to(outside)
    with pytest.raises(ConversionError, match=f"{name} is a symlink to .*outside the checkpoint"):
        convert_checkpoint(source, tmp_path / "out")
    leaked = [p for p in (tmp_path / "out").rglob("*") if p.is_file() and b"private" in p.read_bytes()]
    assert leaked == []


def test_a_symlink_inside_the_checkpoint_is_followed(tmp_path: Path) -> None:
    source = write_checkpoint(tmp_path / "src")
    (source / "docs").mkdir()
    (source / "docs" / "readme.txt").write_text("the model card")
    (source / "README.md").symlink_to("docs/readme.txt")
    convert_checkpoint(source, tmp_path / "out")
    copied = tmp_path / "out" / "README.md"
    assert not copied.is_symlink()
    assert copied.read_text() == "the model card"


def test_a_hugging_face_cache_snapshot_converts(tmp_path: Path) -> None:
    """A cache snapshot's files are symlinks into the repository's ``blobs``: followed there."""
    repo = tmp_path / "models--Qwen--Qwen3-Reranker-0.6B"
    built = write_checkpoint(tmp_path / "built")
    snapshot = repo / "snapshots" / "abc123"
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for i, file in enumerate(sorted(built.iterdir())):
        blob = repo / "blobs" / f"blob{i}"
        file.rename(blob)
        (snapshot / file.name).symlink_to(Path("..", "..", "blobs", blob.name))
    convert_checkpoint(snapshot, tmp_path / "out")
    assert (tmp_path / "out" / "tokenizer.json").read_bytes() == (snapshot / "tokenizer.json").read_bytes()


def test_a_fifo_in_the_checkpoint_is_refused_without_waiting(tmp_path: Path) -> None:
    """A file the converter must read that is a FIFO is refused, not waited on (one it would only
    copy, such as a README, is skipped: it is not a file)."""
    source = write_checkpoint(tmp_path / "src")
    (source / "config.json").unlink()
    os.mkfifo(source / "config.json")
    os.mkfifo(source / "README.md")
    with pytest.raises(ConversionError, match=r"config\.json"):
        convert_checkpoint(source, tmp_path / "out")


@pytest.mark.parametrize(
    ("mode", "expected"), [(0o600, 0o600), (0o640, 0o640), (0o644, 0o644), (0o666, 0o644)]
)
def test_copied_files_are_never_more_readable_than_their_source(
    tmp_path: Path, mode: int, expected: int
) -> None:
    source = write_checkpoint(tmp_path / "src")
    for name in ("tokenizer.json", "model.safetensors"):
        (source / name).chmod(mode)
    convert_checkpoint(source, tmp_path / "out")
    for name in ("tokenizer.json", "model.safetensors"):  # copied; rewritten without lm_head
        assert stat.S_IMODE((tmp_path / "out" / name).stat().st_mode) == expected, name


def _header_of(nbytes: int) -> bytes:
    """A valid safetensors file whose header (empty tensors) is about ``nbytes`` long."""
    per = len(json.dumps({"t0000000": entry("U8", (0,), (0, 0))}))
    return safetensors_bytes({f"t{i:07d}": entry("U8", (0,), (0, 0)) for i in range(nbytes // per)})


def test_a_header_over_the_limit_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    """Before the fix a 22 MB header was parsed: 245 MB peak here (455 MB in the issue)."""
    path = tmp_path / "model.safetensors"
    path.write_bytes(_header_of(22_000_000))
    tracemalloc.start()
    try:
        with pytest.raises(ConversionError, match=r"model.safetensors: its safetensors header is \d+ bytes"):
            read_shard(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20  # nothing of the header was read


def test_the_largest_header_allowed_parses_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(_header_of(MAX_HEADER - 4096))
    tracemalloc.start()
    try:
        assert len(read_shard(path).tensors) > 10_000
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20  # measured 12 MB; 245 MB for the 22 MB header before the cap
