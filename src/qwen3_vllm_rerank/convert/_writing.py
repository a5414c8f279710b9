"""Writing the plan: safetensors files tensor by tensor, their bytes copied by the kernel, never loaded."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import logging
import os
import shutil
import stat
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import ConversionError
from . import _sentence_transformers as st
from ._conversion_plan import LM_HEAD, SCORE, Plan, is_copied
from ._reading import DTYPE_SIZES, INDEX, Shard, Tensor, open_inside

logger = logging.getLogger("qwen3_vllm_rerank.convert")

_CHUNK = 64 * 1024 * 1024  # bytes per kernel copy call (progress granularity)
BUFFER = 8 * 1024 * 1024  # bytes held in memory when the kernel cannot copy


def _write_all(fd: int, data: bytes) -> int:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    return len(data)


class Copier:
    """Copies byte ranges between files: in the kernel when it can, else through a small buffer."""

    def __init__(self, advance: Callable[[int], object], kernel: bool = True) -> None:
        self.advance, self.kernel = advance, kernel and hasattr(os, "copy_file_range")

    def copy(self, src_fd: int, offset: int, dst_fd: int, length: int) -> None:
        end = offset + length
        while offset < end:
            copied = 0
            if self.kernel:
                with contextlib.suppress(OSError):  # not supported here: copy through a buffer
                    copied = os.copy_file_range(src_fd, dst_fd, min(end - offset, _CHUNK), offset)
                self.kernel = copied > 0  # some filesystems copy nothing instead of failing
            if not self.kernel:
                copied = _write_all(dst_fd, os.pread(src_fd, min(end - offset, BUFFER), offset))
            if copied == 0:
                raise ConversionError(f"unexpected end of file after copying {length - (end - offset)} bytes")
            offset += copied
            self.advance(copied)


def copied_mode(src_mode: int) -> int:
    """The permissions of a file written from a source file's bytes: 0644 if the source was readable
    by others, else the source's own (a private file stays private: never wider than its source)."""
    return 0o644 if src_mode & stat.S_IROTH else stat.S_IMODE(src_mode) & 0o777


def create(path: Path, src_fd: int) -> io.FileIO:
    """``path``, a new file (never an existing one or a symlink), with :func:`copied_mode` of ``src_fd``."""
    mode = copied_mode(os.fstat(src_fd).st_mode)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, mode)
    os.fchmod(fd, mode)  # whatever the umask
    return os.fdopen(fd, "wb", buffering=0)


def copy_file(src: Path, dst: Path) -> None:
    """A checkpoint file copied as it is: read by :func:`~._reading.open_inside`, written by
    :func:`create`."""
    with open_inside(src) as source, create(dst, source.fileno()) as out:
        shutil.copyfileobj(source, out, BUFFER)


def rewrite_shard(shard: Shard, path: Path, score: tuple[Tensor, bytes] | None, copier: Copier) -> None:
    """``shard`` without ``lm_head.weight`` (with ``score`` added), tensor by tensor, into ``path``."""
    tensors = [t for name, t in shard.tensors.items() if name != LM_HEAD] + ([score[0]] if score else [])
    tensors.sort(key=lambda t: (-DTYPE_SIZES[t.dtype], t.name))  # like safetensors: offsets stay aligned
    header: dict[str, Any] = {"__metadata__": shard.metadata or {"format": "pt"}}
    offset = 0
    for t in tensors:
        header[t.name] = {
            "dtype": t.dtype,
            "shape": list(t.shape),
            "data_offsets": [offset, offset + t.nbytes],
        }
        offset += t.nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned, like safetensors writes
    with open_inside(shard.path) as src, create(path, src.fileno()) as dst:
        _write_all(dst.fileno(), struct.pack("<Q", len(encoded)) + encoded)
        for tensor in tensors:
            if score and tensor is score[0]:
                _write_all(dst.fileno(), score[1])
            else:
                copier.copy(src.fileno(), tensor.start, dst.fileno(), tensor.nbytes)


def _link_or_copy(shard: Shard, dst: Path, link: bool, copier: Copier) -> None:
    if link and copied_mode(os.stat(shard.path).st_mode) == stat.S_IMODE(os.stat(shard.path).st_mode):
        # A hard link shares the source's inode and mode, so only a file whose mode a copy would keep.
        try:
            with open_inside(shard.path):  # refuses a symlink out of the checkpoint
                os.link(os.path.realpath(shard.path), dst, follow_symlinks=False)
            copier.advance(shard.size)
            return
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES):
                raise
            logger.warning("cannot hard-link %s (%s); copying it", shard.path, exc.strerror)
    with open_inside(shard.path) as src, create(dst, src.fileno()) as out:
        copier.copy(src.fileno(), 0, out.fileno(), shard.size)  # copy_file_range: ~4x sendfile here


def write(plan: Plan, out: Path, *, link: bool, progress: bool | None) -> None:
    """Write ``plan`` into the empty directory ``out``; ``progress=None`` shows a bar on a terminal only."""
    from tqdm.auto import tqdm

    source = plan.source
    score = Tensor(SCORE, source.head.dtype, (1, source.head.shape[1]), 0, len(plan.score)), plan.score
    disable = None if progress is None else not progress
    total = sum(s.size for s in source.shards)
    with tqdm(total=total, unit="B", unit_scale=True, desc="converting", disable=disable) as bar:
        copier = Copier(bar.update)
        for shard in source.shards:
            if shard.path in plan.rewritten:
                rewrite_shard(shard, out / shard.path.name, score if shard is plan.home else None, copier)
                bar.update(shard.size - sum(t.nbytes for n, t in shard.tensors.items() if n != LM_HEAD))
            else:
                _link_or_copy(shard, out / shard.path.name, link, copier)
    for name, data in ((INDEX, plan.index), ("config.json", plan.config)):
        if data is not None:
            (out / name).write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    for path in sorted(source.root.iterdir()):
        if is_copied(path, source.vl):
            copy_file(path, out / path.name)
    if not source.vl:  # Sentence Transformers cannot load a Qwen3-VL seq-cls checkpoint
        st.write(out)
