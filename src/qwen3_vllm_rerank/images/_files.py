"""Reading image files: anywhere (an application's own path, no roots named), or confined to roots.

A confined read never leaves its roots, by any spelling and under any race: the path is
resolved (``..`` and symbolic links) only to find which root it names and what lies below it;
the file is then opened from the root's directory descriptor one component at a time with
``O_NOFOLLOW | O_DIRECTORY`` (``openat``), so a component that is a symbolic link, or becomes one
between the check and the open, is refused rather than followed. Where ``os.open`` takes no
``dir_fd`` the file is opened by its resolved path and the opened descriptor's own path
(``/proc/self/fd``) is checked against the roots instead.

Only regular files are read: the kind is checked before the file is opened (a FIFO, socket or
device node is never opened) and again on the open descriptor before reading. Whatever goes wrong
(missing, a directory, a FIFO or device, unreadable, over the size cap, outside the roots, a
symbolic link, a UNC path) the caller is told one thing, so that a document naming arbitrary paths
learns nothing about the disk; the detail goes to the debug log.
"""

from __future__ import annotations

import os
import stat
import urllib.parse
import urllib.request

from ._failures import UnusableImage, logger

__all__ = ["FILE_UNREADABLE", "FileUnreadable", "file_url_path", "read_file", "unreadable"]

#: What the caller is told about any image file that cannot be used.
FILE_UNREADABLE = (
    "cannot read image file {shown} (missing, not a readable regular file, too large, or not a "
    "PNG/JPEG/GIF/WebP/BMP/TIFF image this library can decode); the reason is logged at debug "
    "level by the qwen3_vllm_rerank.images logger"
)

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NONBLOCK", 0)  # a FIFO swapped in after the check must not block the open
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
)
_DIRECTORY = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
#: Open component by component from the root (``openat``) where the platform can; else open,
#: then check the descriptor's path. A module attribute, so that tests run both.
WALK = (
    os.open in os.supports_dir_fd
    and os.stat in os.supports_dir_fd
    and hasattr(os, "O_DIRECTORY")
    and hasattr(os, "O_NOFOLLOW")
)
#: ``\\server\share``, ``\\?\...`` and ``\\.\...``: opening one may connect to another machine
#: (and hand it the user's credentials) or name a device.
_UNC_PREFIXES = ("\\\\", "//", "\\/", "/\\")


class FileUnreadable(Exception):
    """An image file that cannot be read, with the detail for the debug log only."""


def unreadable(label: str, shown: str, detail: object) -> UnusableImage:
    """The one error for an image file that cannot be used (the detail logged at debug)."""
    logger.debug("%s: image file %s: %s", label, shown, detail)
    return UnusableImage(label, FILE_UNREADABLE.format(shown=shown))


def checked_spelling(path: str, windows: bool = os.name == "nt") -> str:
    """``path`` if it may be opened at all: no NUL, and on Windows no UNC or device path."""
    if "\0" in path:
        raise FileUnreadable("an embedded NUL")
    if windows and path.startswith(_UNC_PREFIXES):
        raise FileUnreadable("a UNC or device path (\\\\server\\share, \\\\?\\, \\\\.\\) is never opened")
    return path


def file_url_path(url: str) -> str:
    """The absolute path a ``file:`` URL names; :class:`FileUnreadable` when it names none."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as exc:
        raise FileUnreadable(f"malformed file URL ({exc})") from exc
    if parts.netloc not in ("", "localhost"):
        raise FileUnreadable(f"a file URL of another host ({parts.netloc!r})")
    if parts.query or parts.fragment:
        raise FileUnreadable("a file URL with a query or fragment")
    path = checked_spelling(urllib.request.url2pathname(parts.path))
    if not os.path.isabs(path):
        raise FileUnreadable("a relative file URL")
    return path


def _resolve(path: str) -> str:
    # os.path.realpath looked up at each call: the race tests swap a directory for a symbolic
    # link right after it ran, as an attacker winning the race would.
    return os.path.realpath(path)


def _identity(info: os.stat_result) -> tuple[int, int]:
    return info.st_dev, info.st_ino


def _regular(info: os.stat_result) -> os.stat_result:
    if not stat.S_ISREG(info.st_mode):
        raise FileUnreadable(f"not a regular file (mode {stat.filemode(info.st_mode)})")
    return info


def _read_open(descriptor: int, checked: os.stat_result, max_bytes: int) -> bytes:
    """The bytes of the open file ``descriptor`` (closed here), if it is still the regular file
    ``checked`` found before it was opened."""
    try:
        info = _regular(os.fstat(descriptor))
        if _identity(info) != _identity(checked):
            raise FileUnreadable("the file was replaced between its check and its opening")
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


def _within(path: str, root: str) -> list[str] | None:
    """The components of ``path`` below ``root`` (both resolved), or ``None`` if it is not below."""
    prefix = root.rstrip(os.sep) + os.sep
    if not path.startswith(prefix):
        return None
    parts = path[len(prefix) :].split(os.sep)
    if not parts or any(part in ("", ".", "..") or (os.altsep and os.altsep in part) for part in parts):
        return None
    return parts


def _below_roots(path: str, roots: tuple[str, ...]) -> tuple[str, list[str]]:
    real = _resolve(path)
    for root in roots:
        parts = _within(real, root)
        if parts is not None:
            return root, parts
    raise FileUnreadable(f"its real path {real!r} is not below file_roots")


def _walk(root: str, parts: list[str], max_bytes: int) -> bytes:
    """Open ``root/parts...`` from the root's descriptor, following no symbolic link."""
    directory = os.open(root, _DIRECTORY)
    try:
        for part in parts[:-1]:
            inner = os.open(part, _DIRECTORY | _NOFOLLOW, dir_fd=directory)
            os.close(directory)
            directory = inner
        checked = _regular(os.stat(parts[-1], dir_fd=directory, follow_symlinks=False))
        descriptor = os.open(parts[-1], _FLAGS | _NOFOLLOW, dir_fd=directory)
    finally:
        os.close(directory)
    return _read_open(descriptor, checked, max_bytes)


def _opened_path(descriptor: int) -> str | None:
    try:
        return os.readlink(f"/proc/self/fd/{descriptor}")
    except OSError:
        return None


def _open_and_verify(path: str, roots: tuple[str, ...], max_bytes: int) -> bytes:
    """Open the resolved ``path``, then check that what was opened lies below the roots."""
    checked = _regular(os.lstat(path))
    descriptor = os.open(path, _FLAGS | _NOFOLLOW)
    try:
        opened = _opened_path(descriptor)
        if opened is None:  # no /proc: the path must still resolve to itself
            opened = _resolve(path)
        if not any(_within(opened, root) is not None for root in roots):
            raise FileUnreadable(f"what was opened ({opened!r}) is not below file_roots")
    except BaseException:
        os.close(descriptor)
        raise
    return _read_open(descriptor, checked, max_bytes)


def read_file(path: str, roots: tuple[str, ...] | None, max_bytes: int) -> bytes:
    """The bytes of the regular image file at ``path``: anywhere when ``roots`` is ``None``, else
    only below one of ``roots`` (resolved directories); :class:`FileUnreadable` otherwise."""
    try:
        checked_spelling(path)
        if roots is None:
            checked = _regular(os.stat(path))
            return _read_open(os.open(path, _FLAGS), checked, max_bytes)
        root, parts = _below_roots(path, roots)
        if WALK:
            return _walk(root, parts, max_bytes)
        return _open_and_verify(os.path.join(root, *parts), roots, max_bytes)
    except (OSError, ValueError) as exc:  # ValueError: a path the OS cannot take
        raise FileUnreadable(f"{type(exc).__name__}: {exc}") from exc
