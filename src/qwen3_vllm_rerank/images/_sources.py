"""What an image input is: :class:`Image` (one source) and :class:`Content` (text and images),
and :class:`SourceKind`, the one table of the kinds of source every other module dispatches on."""

from __future__ import annotations

import enum
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Union

from .._redaction import redact_url
from ..errors import InvalidInput

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage


__all__ = ["Content", "Image", "ImageSource", "SourceKind", "describe", "source_kind"]

ImageSource = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, "PILImage"]


class SourceKind(enum.StrEnum):
    """The kinds of image source. A new input type is one member here, one branch in
    :func:`source_kind`, and the branches mypy then names (every dispatch ends in
    ``assert_never``)."""

    #: A filesystem path (``str`` without a URL scheme, or ``os.PathLike``): read only inside the
    #: fetcher's ``file_roots`` when it names any, or when a retrieved document named it.
    PATH = "path"
    #: A ``file:`` URL: read only inside the roots a :class:`UrlFetcher` was given.
    FILE_URL = "file-url"
    #: ``bytes``, ``bytearray`` or ``memoryview`` holding an image file.
    BYTES = "bytes"
    #: A PIL image.
    PIL = "pil"
    #: A ``data:`` URL.
    DATA_URL = "data-url"
    #: Any other URL (``scheme://...``): fetched only through a :class:`UrlFetcher`, and only
    #: http and https.
    URL = "url"


_SCHEME = re.compile(r"[a-z][a-z0-9+.-]+://", re.IGNORECASE)


def _is_pil_image(value: object) -> bool:
    # A PIL image can only exist if PIL is imported: no import here.
    module = sys.modules.get("PIL.Image")
    return module is not None and isinstance(value, module.Image)


def _string_kind(source: str) -> SourceKind:
    lowered = source[:16].lower()
    if lowered.startswith("data:"):
        return SourceKind.DATA_URL
    if lowered.startswith("file:"):
        return SourceKind.FILE_URL
    # Two characters at least: "C://x" is a Windows drive, not a URL.
    if _SCHEME.match(source):
        return SourceKind.URL
    return SourceKind.PATH


def source_kind(value: object) -> SourceKind | None:
    """The kind of image source ``value`` is, or ``None`` when it is none."""
    if isinstance(value, bytes | bytearray | memoryview):
        return SourceKind.BYTES
    if isinstance(value, str):
        return _string_kind(value)
    if isinstance(value, os.PathLike):
        return SourceKind.PATH
    if _is_pil_image(value):
        return SourceKind.PIL
    return None


@dataclass(frozen=True, eq=False, slots=True)
class Image:
    """One image to score: its ``source`` is one of

    * a path to an image file (``str`` without a URL scheme, or ``os.PathLike``): read anywhere
      unless the fetcher names ``file_roots`` (then only inside them),
    * the bytes of an image file (PNG, JPEG, GIF, WebP, BMP, TIFF),
    * a PIL image,
    * a ``data:image/...;base64,...`` URL,
    * an ``http://`` or ``https://`` URL, fetched by the client only when the caller opts in
      with a :class:`UrlFetcher` (refused with :class:`InvalidInput` otherwise),
    * a ``file:`` URL, read only when that fetcher was given ``file_roots`` and only inside them.

    Nothing is read or decoded when it is made: that happens when the image is prepared,
    once per call. Compared by identity.

    ``retrieved=True`` marks a reference that a retrieved document named (an adapter's
    ``metadata["image"]``, ``image_path``, ``meta["file_path"]``, ...): the source policy
    (``images/_policy.py``) reads such a path only inside the fetcher's ``file_roots``, and
    refuses it when there are none.
    """

    source: ImageSource
    retrieved: bool = field(default=False, kw_only=True)

    def __post_init__(self) -> None:
        if isinstance(self.source, Image):
            raise InvalidInput("Image(Image(...)): pass the image itself, not wrapped twice")
        if source_kind(self.source) is None:
            raise InvalidInput(
                "Image source must be a path, bytes, a PIL image, a data: URL or an http(s) URL, "
                f"got {type(self.source).__name__}"
            )

    @property
    def kind(self) -> SourceKind:
        """What kind of source it is (a :class:`SourceKind`, equal to its string value)."""
        kind = source_kind(self.source)
        if kind is None:  # pragma: no cover - refused in __post_init__
            raise InvalidInput(f"Image source of type {type(self.source).__name__}")
        return kind

    def __repr__(self) -> str:
        flag = ", retrieved=True" if self.retrieved else ""
        return f"Image({describe(self.source)}{flag})"


def _as_image(value: Image | ImageSource) -> Image:
    return value if isinstance(value, Image) else Image(value)


@dataclass(frozen=True, eq=False, slots=True)
class Content:
    """A query or document of text and images, e.g.
    ``Content("Q3 revenue by region", images=[Image("slides/page7.png")])``.

    ``images`` may hold :class:`Image` objects or bare sources (wrapped for you); they are
    shown to the model in order, before the text, as the official reranker does. A
    ``Content`` with neither text nor images reads as the official placeholder ``NULL``.
    """

    text: str = ""
    images: Sequence[Image | ImageSource] = field(default=())

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise InvalidInput(f"Content.text must be a str, got {type(self.text).__name__}")
        images = self.images
        if isinstance(images, Image) or source_kind(images) is not None:
            images = (images,)  # type: ignore[assignment]
        object.__setattr__(self, "images", tuple(_as_image(image) for image in images))

    def __repr__(self) -> str:
        text = self.text if len(self.text) <= 60 else self.text[:60] + "..."
        return f"Content(text={text!r}, images={list(self.images)!r})"


def describe(source: object) -> str:
    """A short, safe description of an image source for reprs and messages."""
    if isinstance(source, bytes | bytearray | memoryview):
        return f"<{len(source)} bytes>"
    if isinstance(source, str):
        kind = _string_kind(source)
        if kind is SourceKind.DATA_URL:
            return repr(source[:40] + f"...<{len(source)} chars>") if len(source) > 40 else repr(source)
        if kind is SourceKind.URL or kind is SourceKind.FILE_URL:
            shown = redact_url(source)
            return repr(shown if len(shown) <= 200 else shown[:200] + "...")
        return repr(source if len(source) <= 200 else source[:200] + "...")
    if isinstance(source, os.PathLike):
        return repr(os.fspath(source))
    if _is_pil_image(source):
        return f"<PIL image {getattr(source, 'mode', '?')} {getattr(source, 'size', '?')}>"
    return f"<{type(source).__name__}>"
