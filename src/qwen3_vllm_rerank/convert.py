"""Turn an original Qwen3-Reranker checkpoint into a one-logit seq-cls checkpoint, streaming.

The original Qwen3-Reranker is a ``Qwen3ForCausalLM`` whose score is
``sigmoid(logit(yes) - logit(no))`` at the last token. Since both logits are dot
products of the same hidden state with two rows of the output layer, the same score
comes from one linear head ``score.weight = W[yes] - W[no]``: a
``Qwen3ForSequenceClassification`` with ``num_labels=1``, which vLLM serves with
``--runner pooling`` alone, and which loads in plain transformers.

:func:`convert_checkpoint` never loads a model, nor torch: it parses the safetensors
headers, reads the two rows it needs at their offsets, copies every other tensor's raw
bytes from the source files to the destination in the kernel (``copy_file_range``;
``link=True`` hard-links whole shards that need no change), and writes the safetensors
format itself, tensor by tensor. Peak memory does not depend on the model's size (about
250 MB, mostly the tokenizer used to look up the yes/no ids). Only
:func:`verify_conversion` (on by default) loads the models, one after the other, with
transformers in float32.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import json
import logging
import math
import os
import shutil
import struct
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConversionError
from .prompt import format_prompt

__all__ = [
    "DEFAULT_PAD_TOKEN",
    "VERIFY_PAIRS",
    "VerificationResult",
    "convert_checkpoint",
    "verify_conversion",
]

logger = logging.getLogger("qwen3_vllm_rerank.convert")

#: Qwen3's padding token; the converted config needs a pad_token_id for batches > 1.
DEFAULT_PAD_TOKEN = "<|endoftext|>"  # noqa: S105 - a token, not a secret
#: (query, document, instruction) pairs the converted model is checked on.
VERIFY_PAIRS: tuple[tuple[str, str, str | None], ...] = (
    ("What is the capital of France?", "Paris is the capital and largest city of France.", None),
    ("What is the capital of France?", "Bananas are rich in potassium.", None),
    (
        "function that reverses a list",
        "def reverse(xs):\n    return xs[::-1]\n",
        "Given a code search query, retrieve code that answers the query",
    ),
    ("什么是机器学习？", "机器学习是人工智能的一个分支，研究计算机如何从数据中学习。", None),  # noqa: RUF001
)

_INDEX = "model.safetensors.index.json"
_SINGLE = "model.safetensors"
_LM_HEAD = "lm_head.weight"
_EMBED = "model.embed_tokens.weight"
_SCORE = "score.weight"
_SOURCE_ARCH = "Qwen3ForCausalLM"
_TARGET_ARCH = "Qwen3ForSequenceClassification"
_MAX_HEADER = 100 * 1024 * 1024
_CHUNK = 64 * 1024 * 1024  # bytes per kernel copy call (progress granularity)
_BUFFER = 8 * 1024 * 1024  # bytes held in memory when the kernel cannot copy
_DTYPE_SIZES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1,
    "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
    "U32": 4, "I32": 4, "F32": 4,
    "U64": 8, "I64": 8, "F64": 8,
}  # fmt: skip
_FLOAT_HEADS = ("F16", "BF16", "F32", "F64")
# Other weight formats are never copied: they would hold the original CausalLM.
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf", ".onnx")


# --- the safetensors format ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Tensor:
    """A tensor's entry in a safetensors file; ``start`` is absolute in the file."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int
    nbytes: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(slots=True)
class _Shard:
    path: Path
    tensors: dict[str, _Tensor]
    metadata: dict[str, str] | None
    size: int


def _read_shard(path: Path) -> _Shard:
    """Parse a safetensors header (the data is not read)."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        raw = handle.read(8)
        if len(raw) != 8:
            raise ConversionError(f"{path} is not a safetensors file: it is shorter than 8 bytes")
        (length,) = struct.unpack("<Q", raw)
        if length > min(_MAX_HEADER, size - 8):
            raise ConversionError(f"{path} is not a valid safetensors file: header length {length}")
        try:
            header = json.loads(handle.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConversionError(f"{path} is not a valid safetensors file: {exc}") from exc
    if not isinstance(header, dict):
        raise ConversionError(f"{path} is not a valid safetensors file: the header is not an object")
    metadata = header.pop("__metadata__", None)
    data_start = 8 + length
    tensors: dict[str, _Tensor] = {}
    for name, entry in header.items():
        try:
            dtype = str(entry["dtype"])
            shape = tuple(int(d) for d in entry["shape"])
            begin, end = (int(o) for o in entry["data_offsets"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ConversionError(f"{path}: malformed header entry for {name!r}: {entry!r}") from exc
        if dtype not in _DTYPE_SIZES:
            raise ConversionError(
                f"{path}: tensor {name!r} has a dtype this converter does not know: {dtype}"
            )
        nbytes = end - begin
        if begin < 0 or nbytes != math.prod(shape) * _DTYPE_SIZES[dtype] or data_start + end > size:
            raise ConversionError(f"{path}: tensor {name!r} has inconsistent offsets {[begin, end]}")
        tensors[name] = _Tensor(name, dtype, shape, data_start + begin, nbytes)
    return _Shard(path, tensors, metadata, size)


@dataclass(frozen=True, slots=True)
class _OutTensor:
    """A tensor to write: ``nbytes`` copied from ``source`` (file, offset), or the given ``data``."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    source: tuple[Path, int] | None = None
    data: bytes | None = None

    @classmethod
    def copy_of(cls, tensor: _Tensor, path: Path) -> _OutTensor:
        return cls(tensor.name, tensor.dtype, tensor.shape, tensor.nbytes, source=(path, tensor.start))


def _header_bytes(tensors: Sequence[_OutTensor], metadata: dict[str, str] | None) -> bytes:
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = metadata
    offset = 0
    for tensor in tensors:
        header[tensor.name] = {
            "dtype": tensor.dtype,
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + tensor.nbytes],
        }
        offset += tensor.nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned, like safetensors writes
    return struct.pack("<Q", len(encoded)) + encoded


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class _Copier:
    """Copies byte ranges between files: in the kernel when it can, else through a small buffer."""

    def __init__(self, advance: Callable[[int], object], kernel: bool = True) -> None:
        self.advance = advance
        self.kernel = kernel and hasattr(os, "copy_file_range")

    def copy(self, src_fd: int, offset: int, dst_fd: int, length: int) -> None:
        remaining = length
        while remaining > 0:
            copied = 0
            if self.kernel:
                try:
                    copied = os.copy_file_range(src_fd, dst_fd, min(remaining, _CHUNK), offset)
                except OSError as exc:
                    logger.debug("copy_file_range unavailable (%s); copying through a buffer", exc)
                    self.kernel = False
                if copied == 0:  # some filesystems copy nothing instead of failing
                    self.kernel = False
            if not self.kernel:
                chunk = os.pread(src_fd, min(remaining, _BUFFER), offset)
                _write_all(dst_fd, chunk)
                copied = len(chunk)
            if copied == 0:
                raise ConversionError(f"unexpected end of file after copying {length - remaining} bytes")
            offset += copied
            remaining -= copied
            self.advance(copied)


def _write_shard(
    path: Path, tensors: Iterable[_OutTensor], metadata: dict[str, str] | None, copier: _Copier
) -> None:
    """Write a safetensors file tensor by tensor; memory holds one chunk at a time."""
    # Largest element size first, like safetensors: every offset stays aligned to its dtype.
    ordered = sorted(tensors, key=lambda t: (-_DTYPE_SIZES[t.dtype], t.name))
    sources: dict[Path, int] = {}
    dst_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        _write_all(dst_fd, _header_bytes(ordered, metadata))
        for tensor in ordered:
            if tensor.data is not None:
                _write_all(dst_fd, tensor.data)
            elif tensor.source is not None:
                src_path, offset = tensor.source
                if src_path not in sources:
                    sources[src_path] = os.open(src_path, os.O_RDONLY)
                copier.copy(sources[src_path], offset, dst_fd, tensor.nbytes)
    finally:
        os.close(dst_fd)
        for fd in sources.values():
            os.close(fd)


# --- reading the original checkpoint -----------------------------------------------------


@dataclass(slots=True)
class _Checkpoint:
    root: Path
    config: dict[str, Any]
    shards: list[_Shard]
    index: dict[str, Any] | None
    tied: bool
    yes_id: int
    no_id: int
    pad_id: int
    head: _Tensor
    head_shard: _Shard


def _resolve_source(src: str | Path) -> Path:
    local = Path(src).expanduser()
    if local.is_dir():
        return local
    if local.exists():
        raise ConversionError(f"{local} is a file; pass the checkpoint's directory")
    text = str(src)
    if text.startswith((".", "/", "~")) or text.count("/") != 1:
        raise ConversionError(
            f"{text} does not exist (and is not a Hugging Face hub id like Qwen/Qwen3-Reranker-0.6B)"
        )
    from huggingface_hub import snapshot_download

    logger.info("downloading %s from the Hugging Face hub", text)
    try:
        path = snapshot_download(
            text,
            allow_patterns=[
                "*.json",
                "*.safetensors",
                "*.txt",
                "*.model",
                "*.tiktoken",
                "*.jinja",
                "LICENSE*",
            ],
        )
    except Exception as exc:  # huggingface_hub raises many types; all mean "cannot get it"
        raise ConversionError(f"cannot download {text} from the Hugging Face hub: {exc}") from exc
    return Path(path)


def _token_id(tokenizer: Any, token: str, role: str, vocab_size: int) -> int:
    token_id = tokenizer.token_to_id(token)
    if token_id is None:
        pieces = tokenizer.encode(token, add_special_tokens=False).tokens
        raise ConversionError(
            f"the {role} token {token!r} is not a single token of this checkpoint's vocabulary "
            f"(it tokenises as {pieces}); pass a token string such as 'yes' or 'no'"
        )
    if not 0 <= token_id < vocab_size:
        raise ConversionError(
            f"the {role} token {token!r} has id {token_id}, outside the vocabulary of {vocab_size}"
        )
    return int(token_id)


def _load_tokenizer(root: Path) -> Any:
    path = root / "tokenizer.json"
    if not path.is_file():
        raise ConversionError(
            f"{root} has no tokenizer.json: it is needed to find the ids of the yes/no tokens "
            "(and to serve the model); copy the original model's tokenizer files there"
        )
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception on malformed files
        raise ConversionError(f"cannot read {path}: {exc}") from exc


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConversionError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConversionError(f"{path} does not hold a JSON object")
    return data


def _check_architecture(root: Path, config: dict[str, Any]) -> None:
    architectures = config.get("architectures") or []
    if _TARGET_ARCH in architectures:
        raise ConversionError(
            f"{root} is already converted (architectures {architectures}); serve it as it is"
        )
    if _SOURCE_ARCH not in architectures or config.get("model_type") != "qwen3":
        raise ConversionError(
            f"{root} is not an original Qwen3-Reranker checkpoint: config.json has architectures "
            f"{architectures} and model_type {config.get('model_type')!r}; "
            f"expected ['{_SOURCE_ARCH}'] and 'qwen3'"
        )


def _read_shards(root: Path) -> tuple[list[_Shard], dict[str, Any] | None]:
    index_path = root / _INDEX
    if index_path.is_file():
        index = _read_json(index_path)
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ConversionError(f"{index_path} has no weight_map")
        files = sorted(set(weight_map.values()))
        for name in files:
            if not isinstance(name, str) or Path(name).name != name:
                raise ConversionError(
                    f"{index_path} names a shard outside the checkpoint directory: {name!r}"
                )
            if not (root / name).is_file():
                raise ConversionError(f"{index_path} names {name}, which is missing from {root}")
        shards = [_read_shard(root / name) for name in files]
        by_file = {shard.path.name: shard for shard in shards}
        for tensor_name, file_name in weight_map.items():
            if tensor_name not in by_file[file_name].tensors:
                raise ConversionError(
                    f"{index_path} maps {tensor_name} to {file_name}, which does not hold it"
                )
        return shards, index
    if (root / _SINGLE).is_file():
        return [_read_shard(root / _SINGLE)], None
    found = sorted(p.name for p in root.iterdir() if p.suffix in (".safetensors", ".bin", ".pt", ".pth"))
    raise ConversionError(
        f"{root} has neither {_SINGLE} nor {_INDEX} (found {found or 'no weight files'}); "
        "only safetensors checkpoints can be converted: re-save the model with safe_serialization=True"
    )


def _inspect(root: Path, yes_token: str, no_token: str) -> _Checkpoint:
    config_path = root / "config.json"
    if not config_path.is_file():
        raise ConversionError(f"{root} has no config.json: is it a checkpoint directory?")
    config = _read_json(config_path)
    _check_architecture(root, config)
    shards, index = _read_shards(root)
    located: dict[str, tuple[_Shard, _Tensor]] = {}
    for shard in shards:
        for name, tensor in shard.tensors.items():
            if name in located and index is None:
                raise ConversionError(f"tensor {name} appears in two files of {root}")
            located.setdefault(name, (shard, tensor))
    if _SCORE in located:
        raise ConversionError(f"{root} already has a {_SCORE} tensor: it looks converted already")

    # Qwen3Config's default is tie_word_embeddings=False (transformers 4.51 to 5.x): a missing
    # key means untied, as transformers and vLLM would read it.
    tied = bool(config.get("tie_word_embeddings", False))
    head_name = _EMBED if tied else _LM_HEAD
    if head_name not in located:
        if tied:
            raise ConversionError(f"{root} has no {_EMBED} tensor: is it a complete Qwen3 checkpoint?")
        raise ConversionError(
            f"config.json of {root} says the output layer is not tied to the input embeddings "
            "(tie_word_embeddings is false, or absent: Qwen3Config's default is false), but the "
            f"checkpoint has no {_LM_HEAD}. If this model ties them (like Qwen3-Reranker-0.6B/4B), "
            'set "tie_word_embeddings": true in its config.json.'
        )
    if tied and _LM_HEAD in located:
        logger.warning("%s ties its embeddings but also stores %s; it is ignored", root, _LM_HEAD)
    head_shard, head = located[head_name]
    vocab_size = int(config.get("vocab_size") or head.shape[0])
    hidden = int(config.get("hidden_size") or 0)
    if len(head.shape) != 2 or head.shape[1] != hidden or head.shape[0] < vocab_size:
        raise ConversionError(
            f"{head_name} has shape {list(head.shape)}; expected [{vocab_size}, {hidden}] from config.json"
        )
    if head.dtype not in _FLOAT_HEADS:
        raise ConversionError(
            f"{head_name} is stored as {head.dtype}; only float16, bfloat16 and float32 heads can be "
            "converted (quantized checkpoints are not supported: convert the unquantized model)"
        )

    tokenizer = _load_tokenizer(root)
    yes_id = _token_id(tokenizer, yes_token, "yes", vocab_size)
    no_id = _token_id(tokenizer, no_token, "no", vocab_size)
    if yes_id == no_id:
        raise ConversionError(f"the yes and no tokens are the same token (id {yes_id})")
    pad_id = config.get("pad_token_id")
    if pad_id is None:
        pad_id = _token_id(tokenizer, _pad_token_of(root), "padding", vocab_size)
    return _Checkpoint(root, config, shards, index, tied, yes_id, no_id, int(pad_id), head, head_shard)


def _pad_token_of(root: Path) -> str:
    path = root / "tokenizer_config.json"
    if path.is_file():
        pad = _read_json(path).get("pad_token")
        if isinstance(pad, dict):
            pad = pad.get("content")
        if isinstance(pad, str) and pad:
            return pad
    return DEFAULT_PAD_TOKEN


def _read_rows(path: Path, head: _Tensor, ids: Sequence[int]) -> list[list[float]]:
    """Rows of the output layer as Python floats, read with ``pread`` (the rest stays on disk).

    Every float dtype a head can have fits exactly in a Python float (a double).
    """
    row_bytes = head.shape[1] * _DTYPE_SIZES[head.dtype]
    fd = os.open(path, os.O_RDONLY)
    try:
        rows = []
        for i in ids:
            raw = os.pread(fd, row_bytes, head.start + i * row_bytes)
            if len(raw) != row_bytes:
                raise ConversionError(f"{path} ends inside row {i} of {head.name}")
            rows.append(_decode(raw, head.dtype))
        return rows
    finally:
        os.close(fd)


def _decode(raw: bytes, dtype: str) -> list[float]:
    n = len(raw) // _DTYPE_SIZES[dtype]
    if dtype == "BF16":  # the high half of a float32
        raw = struct.pack(f"<{n}I", *(h << 16 for h in struct.unpack(f"<{n}H", raw)))
        dtype = "F32"
    code = {"F16": "e", "F32": "f", "F64": "d"}[dtype]
    return list(struct.unpack(f"<{n}{code}", raw))


def _to_bfloat16_bits(float32_bits: int) -> int:
    """Round a float32 (as its bits) to bfloat16 bits, to nearest even, like torch."""
    if float32_bits & 0x7F800000 == 0x7F800000 and float32_bits & 0x007FFFFF:
        return 0x7FC0  # NaN
    return ((float32_bits + 0x7FFF + ((float32_bits >> 16) & 1)) >> 16) & 0xFFFF


def _score_values(w_yes: Sequence[float], w_no: Sequence[float], dtype: str) -> tuple[list[float], bytes]:
    """``W[yes] - W[no]`` computed in float32 (float64 for a float64 head) and its bytes in ``dtype``.

    A double subtraction of two float32 values rounded once to float32 equals float32
    subtraction, so this is exactly what torch computes, without importing torch.
    """
    n = len(w_yes)
    if not all(math.isfinite(v) for v in (*w_yes, *w_no)):
        raise ConversionError(
            "the yes/no rows of the output layer hold NaN or infinite values: the checkpoint is broken"
        )
    try:
        if dtype == "F64":
            exact = [a - b for a, b in zip(w_yes, w_no, strict=True)]
            return exact, struct.pack(f"<{n}d", *exact)
        as_float32 = struct.pack(f"<{n}f", *(a - b for a, b in zip(w_yes, w_no, strict=True)))
        exact = list(struct.unpack(f"<{n}f", as_float32))
        if dtype == "F32":
            return exact, as_float32
        if dtype == "BF16":
            bits = struct.unpack(f"<{n}I", as_float32)
            return exact, struct.pack(f"<{n}H", *(_to_bfloat16_bits(b) for b in bits))
        return exact, struct.pack(f"<{n}e", *exact)
    except (OverflowError, struct.error) as exc:
        raise ConversionError(f"W[yes] - W[no] does not fit in {dtype}: {exc}") from exc


def _score_tensor(ckpt: _Checkpoint) -> tuple[_OutTensor, list[float]]:
    """``score.weight`` (shape ``(1, hidden)``, the head's dtype) and the unrounded difference."""
    if sys.byteorder != "little":  # pragma: no cover - safetensors is little-endian
        raise ConversionError("this converter needs a little-endian machine")
    w_yes, w_no = _read_rows(ckpt.head_shard.path, ckpt.head, (ckpt.yes_id, ckpt.no_id))
    exact, data = _score_values(w_yes, w_no, ckpt.head.dtype)
    hidden = ckpt.head.shape[1]
    return _OutTensor(_SCORE, ckpt.head.dtype, (1, hidden), len(data), data=data), exact


# --- writing ---------------------------------------------------------------------------


def _converted_config(ckpt: _Checkpoint) -> dict[str, Any]:
    config = dict(ckpt.config)
    config["architectures"] = [_TARGET_ARCH]
    config["num_labels"] = 1
    config["id2label"] = {"0": "LABEL_0"}
    config["label2id"] = {"LABEL_0": 0}
    config["pad_token_id"] = ckpt.pad_id
    # vLLM's score API joins text_1 and text_2 with the tokenizer's pair template unless this
    # is false (ModelConfig.use_sep_token defaults to true for converted checkpoints).
    config["use_sep_token"] = False
    for key in ("classifier_from_token", "method", "is_original_qwen3_reranker", "use_pad_token"):
        config.pop(key, None)
    return config


def _dump_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def _check_destination(src: Path, dst: Path) -> None:
    if dst.exists():
        if not dst.is_dir():
            raise ConversionError(f"{dst} exists and is a file; pass a new or empty directory")
        if any(dst.iterdir()):
            raise ConversionError(f"{dst} is not empty; pass a new or empty directory")
    if dst.resolve() == src.resolve():
        raise ConversionError("the destination is the source directory; pass a new directory")


def _link_or_copy(src: Path, dst: Path, link: bool, copier: _Copier, size: int) -> None:
    if link:
        try:
            os.link(src.resolve(), dst)
            copier.advance(size)
            return
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES):
                raise
            logger.warning("cannot hard-link %s into %s (%s); copying it", src.name, dst.parent, exc.strerror)
    src_fd = os.open(src, os.O_RDONLY)
    try:
        dst_fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            copier.copy(src_fd, 0, dst_fd, size)
        finally:
            os.close(dst_fd)
    finally:
        os.close(src_fd)


def _write_checkpoint(ckpt: _Checkpoint, out: Path, *, link: bool, progress: bool | None) -> None:
    from tqdm.auto import tqdm

    score, _ = _score_tensor(ckpt)
    lm_head_shard = next((s for s in ckpt.shards if _LM_HEAD in s.tensors), None)
    # score.weight goes where lm_head was, else into the smallest shard (the cheapest to rewrite).
    home = lm_head_shard or min(ckpt.shards, key=lambda s: s.size)
    rewritten = {id(home)} | ({id(lm_head_shard)} if lm_head_shard else set())
    total = sum(s.size for s in ckpt.shards)
    weight_map: dict[str, str] = {}
    total_size = 0
    total_params = 0
    with tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc="converting",
        disable=_disable(progress),
    ) as bar:
        copier = _Copier(bar.update)
        for shard in ckpt.shards:
            target = out / shard.path.name
            kept = [t for name, t in shard.tensors.items() if name != _LM_HEAD]
            if id(shard) not in rewritten:
                logger.debug("%s %s unchanged", "linking" if link else "copying", shard.path.name)
                _link_or_copy(shard.path, target, link, copier, shard.size)
            else:
                logger.debug("rewriting %s", shard.path.name)
                tensors = [_OutTensor.copy_of(t, shard.path) for t in kept]
                if shard is home:
                    tensors.append(score)
                _write_shard(target, tensors, shard.metadata or {"format": "pt"}, copier)
                bar.update(shard.size - sum(t.nbytes for t in kept))  # header and dropped tensors
            for tensor in kept:
                weight_map[tensor.name] = shard.path.name
                total_size += tensor.nbytes
                total_params += tensor.numel
    weight_map[_SCORE] = home.path.name
    total_size += score.nbytes
    total_params += math.prod(score.shape)

    if ckpt.index is not None:
        index = dict(ckpt.index)
        metadata = dict(index.get("metadata") or {})
        metadata["total_size"] = total_size
        if "total_parameters" in metadata:
            metadata["total_parameters"] = total_params
        index["metadata"] = metadata
        index["weight_map"] = dict(sorted(weight_map.items()))
        _dump_json(out / _INDEX, index)
    _dump_json(out / "config.json", _converted_config(ckpt))
    for path in sorted(ckpt.root.iterdir()):
        if path.name.startswith(".") or path.name in ("config.json", _INDEX) or not path.is_file():
            continue
        if path.name.endswith(_WEIGHT_SUFFIXES) or path.name.endswith(".bin.index.json"):
            continue
        shutil.copyfile(path, out / path.name)


def _disable(progress: bool | None) -> bool | None:
    """tqdm's ``disable``: None shows the bar only on a terminal."""
    return None if progress is None else not progress


# --- verification ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VerificationResult:
    """How the converted checkpoint's logits compare with ``logit(yes) - logit(no)`` of the original.

    ``rounding_bounds`` bound, per pair, how much storing ``score.weight`` in the checkpoint's
    dtype (rather than float32) can move the logit; ``tolerances`` add 1e-4 relative on top.
    """

    expected: tuple[float, ...]
    actual: tuple[float, ...]
    rounding_bounds: tuple[float, ...]
    tolerances: tuple[float, ...]

    @property
    def max_abs_diff(self) -> float:
        return max(abs(a - e) for a, e in zip(self.actual, self.expected, strict=True))

    @property
    def ok(self) -> bool:
        return all(
            math.isfinite(a) and abs(a - e) <= tol
            for a, e, tol in zip(self.actual, self.expected, self.tolerances, strict=True)
        )

    def __str__(self) -> str:
        return (
            f"converted logits vs logit(yes) - logit(no) of the original on {len(self.expected)} "
            f"templated pairs: max |difference| {self.max_abs_diff:.2e} "
            f"(allowed {min(self.tolerances):.2e} to {max(self.tolerances):.2e})"
        )


def verify_conversion(
    original: str | Path,
    converted: str | Path,
    *,
    yes_token: str = "yes",  # noqa: S107 - a token, not a secret
    no_token: str = "no",  # noqa: S107
    pairs: Sequence[tuple[str, str, str | None]] = VERIFY_PAIRS,
) -> VerificationResult:
    """Check that ``converted`` scores exactly like ``original`` on templated pairs.

    Loads the original ``Qwen3ForCausalLM`` with transformers in float32, computes
    ``logit(yes) - logit(no)`` at the last token of each prompt (one at a time, as the
    model card does), frees it, then loads ``converted`` with
    ``AutoModelForSequenceClassification`` in float32 and scores the same prompts as one
    right-padded batch. Memory: about 4 bytes per parameter plus the tokenizer (one model at
    a time), so about 3 GB for the 0.6B and 33 GB for the 8B.

    Raises:
        ConversionError: a logit differs by more than the tolerance.
    """
    return _verify(Path(original), Path(converted), yes_token, no_token, pairs, label=str(converted))


def _load_float32(auto_class: Any, path: Path) -> Any:
    """A model in float32, loaded in its stored dtype and upcast in place.

    Loading with ``dtype=float32`` directly peaks about 1.5x higher (measured on a 0.6B
    bf16 checkpoint: 3.8 GB vs 2.9 GB); upcasting bf16/fp16 to float32 is exact.
    """
    model = auto_class.from_pretrained(path, dtype="auto")
    model.float()
    model.eval()
    return model


def _verify(
    original: Path,
    converted: Path,
    yes_token: str,
    no_token: str,
    pairs: Sequence[tuple[str, str, str | None]],
    *,
    label: str,
) -> VerificationResult:
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    if not pairs:
        raise ConversionError("verify_conversion needs at least one pair")
    ckpt = _inspect(original, yes_token, no_token)
    prompts = [format_prompt(query, document, instruction) for query, document, instruction in pairs]
    tokenizer = AutoTokenizer.from_pretrained(converted)
    tokenizer.padding_side = "right"

    expected: list[float] = []
    with torch.inference_mode():
        model = _load_float32(AutoModelForCausalLM, original)
        for prompt in prompts:
            inputs = tokenizer(prompt, return_tensors="pt")
            logits = model(**inputs, logits_to_keep=1).logits[0, -1]
            expected.append(float(logits[ckpt.yes_id] - logits[ckpt.no_id]))
        del model
        gc.collect()

        model = _load_float32(AutoModelForSequenceClassification, converted)
        captured: list[Any] = []
        hook = model.score.register_forward_hook(lambda _m, args, _out: captured.append(args[0]))
        try:
            batch = tokenizer(prompts, return_tensors="pt", padding=True)
            actual = model(**batch).logits[:, 0].tolist()
        finally:
            hook.remove()
        # What storing W[yes] - W[no] in the head's dtype can change: sum |h| * |rounded - exact|.
        # Computed from the original rows, not from what was stored, so a wrong head still fails.
        w_yes, w_no = _read_rows(ckpt.head_shard.path, ckpt.head, (ckpt.yes_id, ckpt.no_id))
        exact, data = _score_values(w_yes, w_no, ckpt.head.dtype)
        rounded = _decode(data, ckpt.head.dtype)
        error = torch.tensor([abs(r - e) for r, e in zip(rounded, exact, strict=True)], dtype=torch.float64)
        last = batch["attention_mask"].sum(dim=1) - 1
        hidden = captured[0][torch.arange(len(prompts)), last]
        bounds = (hidden.abs().double() * error).sum(dim=1).tolist()
        captured.clear()
        del model
        gc.collect()

    tolerances = [1e-4 * (1.0 + abs(e)) + b for e, b in zip(expected, bounds, strict=True)]
    result = VerificationResult(tuple(expected), tuple(actual), tuple(bounds), tuple(tolerances))
    if not result.ok:
        raise ConversionError(
            f"verification failed: {label} does not score like {original}: {result}; "
            f"expected {[round(e, 6) for e in expected]}, got {[round(a, 6) for a in actual]}. "
            "Do not serve it; check the yes/no tokens and report the checkpoint if they are right."
        )
    logger.info("verified %s: %s", label, result)
    return result


# --- the entry point -------------------------------------------------------------------


def convert_checkpoint(
    src: str | Path,
    dst: str | Path,
    *,
    yes_token: str = "yes",  # noqa: S107 - a token, not a secret
    no_token: str = "no",  # noqa: S107
    verify: bool = True,
    link: bool = False,
    progress: bool | None = None,
) -> Path:
    """Convert an original Qwen3-Reranker checkpoint into a one-logit seq-cls checkpoint.

    Args:
        src: the original checkpoint (a ``Qwen3ForCausalLM`` in safetensors): a local
            directory or a Hugging Face hub id (downloaded with ``snapshot_download``).
        dst: a new or empty directory for the ``Qwen3ForSequenceClassification`` checkpoint.
        yes_token: the token whose logit counts for relevance.
        no_token: the token whose logit counts against it.
        verify: check after writing that the converted checkpoint's logits equal
            ``logit(yes) - logit(no)`` of the original (see :func:`verify_conversion`:
            this loads both models with transformers, one at a time, in float32).
        link: hard-link source shards that need no change instead of copying them
            (same filesystem only; falls back to copying). The files are then shared:
            do not modify either copy in place.
        progress: show a progress bar; ``None`` shows it only when stderr is a terminal.

    Returns:
        ``dst``, complete: ``score.weight = W[yes] - W[no]`` (computed in float32, stored
        in the checkpoint's dtype, shape ``(1, hidden)``), no ``lm_head.weight``, every
        other tensor byte-for-byte unchanged, config.json for vLLM and transformers, the
        tokenizer and generation config copied.

    Raises:
        ConversionError: the source is not an original Qwen3 CausalLM checkpoint, is
            already converted, ``dst`` is not empty, a token is not a single vocabulary
            token, or verification failed. Nothing is left at ``dst`` on failure.

    The output is written into a temporary sibling of ``dst`` and renamed into place,
    so ``dst`` never holds a partial checkpoint. Memory stays at a few MB whatever the
    model's size, except during verification.
    """
    dst = Path(dst).expanduser()
    root = _resolve_source(src)
    _check_destination(root, dst)
    ckpt = _inspect(root, yes_token, no_token)
    logger.info(
        "converting %s (%s, %s head) to %s",
        root,
        "tied" if ckpt.tied else "untied",
        ckpt.head.dtype,
        dst,
    )
    dst.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".converting", dir=dst.parent))
    try:
        _write_checkpoint(ckpt, staging, link=link, progress=progress)
        if verify:
            _verify(root, staging, yes_token, no_token, VERIFY_PAIRS, label=str(dst))
        staging.chmod(0o755)
        try:
            os.replace(staging, dst)
        except OSError as exc:
            raise ConversionError(f"cannot move the converted checkpoint into {dst}: {exc}") from exc
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(staging)
        raise
    logger.info("wrote %s%s", dst, " (verified)" if verify else "")
    return dst
