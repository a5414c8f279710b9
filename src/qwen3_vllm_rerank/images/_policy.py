"""The one source policy: what any image reference may read or fetch.

Every image a call prepares goes through :func:`decide` before anything is read or fetched,
whatever spelling or adapter field brought it:

* bytes, a PIL image or a ``data:`` URL hold the image itself: always used (:data:`INLINE`);
* a ``file:`` URL, and a path that a retrieved document named (``Image(..., retrieved=True)``,
  as the adapters make them from ``metadata["image"]``, ``image_path``, ``meta["file_path"]``),
  is read only below the fetcher's ``file_roots``; with none it is refused, saying how to allow it;
* a path the application gives itself (``Image("/x.png")``) is read anywhere when no roots are
  named (the application's choice, like passing the bytes) and only below them when they are:
  ``file_roots`` are the roots of every local read, by any spelling;
* an http(s) URL is fetched only with a :class:`UrlFetcher` (which then decides which hosts).

Failures say one thing per kind of source, whatever the cause: every unreadable, refused or
undecodable file :data:`~._files.FILE_UNREADABLE`, every refused, failed or undecodable fetch
:data:`~._fetching.FETCH_FAILED` (see :func:`fetched`); the detail goes to the debug log.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final, assert_never

from ._failures import UnusableImage
from ._fetching import UrlFetcher, fetch_failed
from ._files import FileUnreadable, file_url_path, read_file, unreadable
from ._sources import Image, SourceKind, describe

__all__ = ["INLINE", "Decision", "Fetch", "Inline", "ReadFile", "decide", "fetched", "read"]

_ALLOW = (
    "pass image_fetcher=UrlFetcher(allowed_hosts=(), file_roots=(directory, ...)) naming the "
    "directories they may be in (allowed_hosts=() fetches no URL)"
)


@dataclass(frozen=True, slots=True)
class Inline:
    """The source holds the image itself (bytes, a PIL image, a ``data:`` URL)."""


#: The one :class:`Inline` decision.
INLINE: Final = Inline()


@dataclass(frozen=True, slots=True)
class ReadFile:
    """Read the file at ``path``: anywhere when ``roots`` is ``None``, else only below them."""

    path: str
    roots: tuple[str, ...] | None


@dataclass(frozen=True, slots=True)
class Fetch:
    """Fetch ``url`` with ``fetcher`` (which checks the host, the addresses and the headers)."""

    fetcher: UrlFetcher
    url: str


Decision = Inline | ReadFile | Fetch


def _refuse_url(url: str, label: str) -> UnusableImage:
    return UnusableImage(
        label,
        f"image URL {describe(url)} is not fetched by default (a document's URL is chosen by whoever "
        "wrote the document, and fetching it is the application's decision); opt in by passing a "
        "qwen3_vllm_rerank.images.UrlFetcher to the client (image_fetcher=...), or pass the image "
        "itself (path, bytes, PIL image or data: URL)",
    )


def _refuse_file_url(url: str, label: str) -> UnusableImage:
    return UnusableImage(
        label,
        f"image {describe(url)} is a file: URL, which is read only inside the fetcher's file_roots "
        f"(a document's URL is chosen by whoever wrote the document); to read local files, {_ALLOW}",
    )


def _refuse_retrieved_path(path: str, label: str) -> UnusableImage:
    return UnusableImage(
        label,
        f"image {describe(path)} is a local path that a retrieved document named, which is read only "
        "inside the fetcher's file_roots (a document's path is chosen by whoever wrote the document); "
        f"to read local files named by documents, {_ALLOW}",
    )


def decide(image: Image, label: str, fetcher: UrlFetcher | None) -> Decision:
    """What ``image`` may read or fetch (see the module docstring); :class:`UnusableImage` when
    nothing. Pure: it touches neither the disk nor the network."""
    source = image.source
    kind = image.kind
    roots = fetcher.file_roots if fetcher is not None else ()
    match kind:
        case SourceKind.PIL | SourceKind.BYTES | SourceKind.DATA_URL:
            return INLINE
        case SourceKind.PATH:
            path = os.fspath(source)  # type: ignore[arg-type]
            if not isinstance(path, str):  # a PathLike of bytes
                raise unreadable(label, describe(source), "a path of bytes")
            if roots:
                return ReadFile(path, roots)
            if image.retrieved:
                raise _refuse_retrieved_path(path, label)
            return ReadFile(path, None)
        case SourceKind.FILE_URL:
            if not roots:
                raise _refuse_file_url(source, label)  # type: ignore[arg-type]
            try:
                return ReadFile(file_url_path(source), roots)  # type: ignore[arg-type]
            except FileUnreadable as exc:
                raise unreadable(label, describe(source), exc) from None
        case SourceKind.URL:
            if fetcher is None:
                raise _refuse_url(source, label)  # type: ignore[arg-type]
            return Fetch(fetcher, source)  # type: ignore[arg-type]
        case _:
            assert_never(kind)


def read(image: Image, decision: ReadFile, label: str, max_bytes: int) -> bytes:
    """The bytes of the file ``decision`` allows, or the one error for an unusable file."""
    try:
        return read_file(decision.path, decision.roots, max_bytes)
    except FileUnreadable as exc:
        raise unreadable(label, describe(image.source), exc) from None


@contextlib.contextmanager
def fetched(url: str, label: str) -> Iterator[None]:
    """For a fetched body, any failure to use it (too large, not an image, corrupt, over the
    pixel or decoding limits) says what any failed fetch says: no oracle of what a URL serves."""
    try:
        yield
    except UnusableImage as error:
        raise fetch_failed(url, label, error.reason) from None
