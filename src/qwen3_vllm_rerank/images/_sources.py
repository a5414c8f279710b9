"""What an image input is: :class:`Image` (one source) and :class:`Content` (text and images)."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Union

from ..errors import InvalidInput

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage


__all__ = ["Content", "Image", "ImageSource"]

ImageSource = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, "PILImage"]


def _is_pil_image(value: object) -> bool:
    # A PIL image can only exist if PIL is imported: no import here.
    module = sys.modules.get("PIL.Image")
    return module is not None and isinstance(value, module.Image)


@dataclass(frozen=True, eq=False, slots=True)
class Image:
    """One image to score: its ``source`` is one of

    * a path to an image file (``str`` or ``os.PathLike``; ``file://`` is accepted),
    * the bytes of an image file (PNG, JPEG, GIF, WebP, BMP, TIFF),
    * a PIL image,
    * a ``data:image/...;base64,...`` URL,
    * an ``http://`` or ``https://`` URL, fetched by the client only when the caller opts in
      with a :class:`UrlFetcher` (refused with :class:`InvalidInput` otherwise).

    Nothing is read or decoded when it is made: that happens when the image is prepared,
    once per call. Compared by identity.
    """

    source: ImageSource

    def __post_init__(self) -> None:
        source = self.source
        if isinstance(source, Image):
            raise InvalidInput("Image(Image(...)): pass the image itself, not wrapped twice")
        if not isinstance(source, str | bytes | bytearray | memoryview | os.PathLike) and not _is_pil_image(
            source
        ):
            raise InvalidInput(
                f"Image source must be a path, bytes, a PIL image, a data: URL or an http(s) URL, "
                f"got {type(source).__name__}"
            )

    @property
    def kind(self) -> str:
        """``"path"``, ``"bytes"``, ``"pil"``, ``"data-url"`` or ``"url"``."""
        source = self.source
        if isinstance(source, bytes | bytearray | memoryview):
            return "bytes"
        if isinstance(source, str):
            lowered = source[:8].lower()
            if lowered.startswith("data:"):
                return "data-url"
            if lowered.startswith(("http://", "https://")):
                return "url"
            return "path"
        if isinstance(source, os.PathLike):
            return "path"
        return "pil"

    def __repr__(self) -> str:
        return f"Image({_describe(self.source)})"


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
        if isinstance(images, Image | str | bytes | bytearray | memoryview | os.PathLike) or _is_pil_image(
            images
        ):
            images = (images,)  # type: ignore[assignment]
        object.__setattr__(self, "images", tuple(_as_image(image) for image in images))

    def __repr__(self) -> str:
        text = self.text if len(self.text) <= 60 else self.text[:60] + "..."
        return f"Content(text={text!r}, images={list(self.images)!r})"


def _describe(source: object) -> str:
    if isinstance(source, bytes | bytearray | memoryview):
        return f"<{len(source)} bytes>"
    if isinstance(source, str):
        if source[:5].lower() == "data:":
            return repr(source[:40] + f"...<{len(source)} chars>") if len(source) > 40 else repr(source)
        return repr(source if len(source) <= 200 else source[:200] + "...")
    if isinstance(source, os.PathLike):
        return repr(os.fspath(source))
    if _is_pil_image(source):
        return f"<PIL image {getattr(source, 'mode', '?')} {getattr(source, 'size', '?')}>"
    return f"<{type(source).__name__}>"
