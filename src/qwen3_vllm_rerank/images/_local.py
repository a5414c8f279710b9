"""Reading image files: paths as given, ``file:`` URLs only inside the fetcher's roots.

Whatever goes wrong reading a file (missing, a directory, a FIFO, unreadable, over the size
cap, outside the roots) the caller is told one thing, so that a document naming arbitrary
paths learns nothing about the disk; the detail goes to the debug log.
"""

from __future__ import annotations

import os
import stat
import urllib.parse
import urllib.request

from ._failures import UnusableImage, logger

__all__ = ["FILE_UNREADABLE", "FileUnreadable", "read_file_url", "read_path"]

#: What the caller is told about any image file that cannot be used.
FILE_UNREADABLE = (
    "cannot read image file {shown} (missing, not a readable regular file, too large, or not a "
    "PNG/JPEG/GIF/WebP/BMP/TIFF image this library can decode); the reason is logged at debug "
    "level by the qwen3_vllm_rerank.images logger"
)

_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


class FileUnreadable(Exception):
    """An image file that cannot be read, with the detail for the debug log only."""


def unreadable(label: str, shown: str, detail: object) -> UnusableImage:
    """The one error for an image file that cannot be used (the detail logged at debug)."""
    logger.debug("%s: image file %s: %s", label, shown, detail)
    return UnusableImage(label, FILE_UNREADABLE.format(shown=shown))


def _read(path: str, max_bytes: int, flags: int = _FLAGS) -> bytes:
    try:
        # Non-blocking: opening a FIFO must not wait for a writer. Checked on the open file.
        descriptor = os.open(path, flags)
    except (OSError, ValueError) as exc:  # ValueError: an embedded NUL
        raise FileUnreadable(f"{type(exc).__name__}: {exc}") from exc
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise FileUnreadable("not a regular file")
        if info.st_size > max_bytes:
            raise FileUnreadable(f"{info.st_size} bytes, over the limit of {max_bytes}")
        if hasattr(os, "set_blocking"):
            os.set_blocking(descriptor, True)
        with os.fdopen(descriptor, "rb", closefd=True) as handle:
            descriptor = -1
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise FileUnreadable(f"{type(exc).__name__}: {exc}") from exc
    finally:
        if descriptor >= 0:
            os.close(descriptor)
    if len(data) > max_bytes:
        raise FileUnreadable(f"grew over the limit of {max_bytes} bytes while read")
    return data


def read_path(path: str | os.PathLike[str], max_bytes: int) -> bytes:
    """The bytes of the image file at ``path``; :class:`FileUnreadable` otherwise."""
    return _read(os.fspath(path), max_bytes)


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def read_file_url(url: str, roots: tuple[str, ...], max_bytes: int) -> bytes:
    """The bytes of the file a ``file:`` URL names, if its real path lies inside one of ``roots``
    (already real paths); :class:`FileUnreadable` otherwise."""
    if not roots:
        raise FileUnreadable("no file_roots")
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as exc:
        raise FileUnreadable(f"malformed file URL ({exc})") from exc
    if parts.netloc not in ("", "localhost"):
        raise FileUnreadable(f"a file URL of another host ({parts.netloc!r})")
    if parts.query or parts.fragment:
        raise FileUnreadable("a file URL with a query or fragment")
    path = urllib.request.url2pathname(parts.path)
    if not os.path.isabs(path):
        raise FileUnreadable("a relative file URL")
    try:
        real = os.path.realpath(path, strict=True)
    except (OSError, ValueError) as exc:
        raise FileUnreadable(f"{type(exc).__name__}: {exc}") from exc
    if not any(_within(real, root) for root in roots):
        raise FileUnreadable(f"its real path {real!r} is outside file_roots")
    # The real path has no symlink left: one swapped in since is not followed at the last step.
    return _read(real, max_bytes, _FLAGS | getattr(os, "O_NOFOLLOW", 0))
