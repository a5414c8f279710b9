"""Images as Qwen3-VL-Reranker inputs: the input types, and the exact pixels the model sees.

:class:`Image` names one image (a file path, bytes, a PIL image, a ``data:`` URL or an
``http(s)://`` URL); :class:`Content` is a query or document made of text and images.
:func:`prepare_image` turns an :class:`Image` into exactly the pixels the official
reranker (``Qwen3VLReranker`` in QwenLM/Qwen3-VL-Embedding, through
``qwen_vl_utils.fetch_image``) gives the model:

* the first frame, converted to RGB (an RGBA image composited on white, any other mode
  through ``convert("RGB")``; no EXIF rotation, as in the official code);
* resized with bicubic resampling to :func:`smart_resize`'s size: both sides multiples
  of 32, between 4,096 and 1,843,200 pixels, the aspect ratio kept as far as possible;

then encodes them losslessly (PNG, as a ``data:`` URL) to be sent inline. A vLLM server
whose processor limits are the official ones (``min_pixels`` 4096, ``max_pixels``
1843200) leaves such an image as it is, so it scores the very pixels the reference does.

Hostile input never gets further than this module: corrupt or non-image bytes, images
over :data:`MAX_IMAGE_PIXELS` decoded pixels (checked from the header, before decoding)
or :data:`MAX_IMAGE_BYTES` bytes (checked before reading), aspect ratios over 200:1, a
missing path and malformed ``data:`` URLs raise :class:`~qwen3_vllm_rerank.errors.InvalidInput`
naming the input. ``http(s)://`` URLs are refused unless the caller passes a
:class:`UrlFetcher`: a retrieved document is attacker-controlled, and fetching whatever
URL it names is a decision for the application, never a default.

Decoding needs Pillow: ``pip install "qwen3-vllm-rerank[images]"``. The input types do not.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InvalidInput

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

from ._fetching import UrlFetcher
from ._geometry import image_tokens, smart_resize
from ._sources import Image, ImageSource, _as_image, _describe

__all__ = ["MAX_IMAGE_BYTES", "MAX_IMAGE_PIXELS", "PreparedImage", "aprepare_image", "prepare_image"]

#: Default cap on an image's encoded size (file, bytes, data URL or download).
MAX_IMAGE_BYTES = 64 * 1024 * 1024
#: Default cap on an image's decoded pixels, checked from its header before decoding.
MAX_IMAGE_PIXELS = 64_000_000

# What an image file may be. Others (EPS, PSD, ...) are not opened at all: some need
# external programs, and none is what a retrieval pipeline means by an image.
_FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF")
_INSTALL = 'scoring images needs Pillow: pip install "qwen3-vllm-rerank[images]"'


@dataclass(frozen=True, slots=True)
class PreparedImage:
    """An image as it is sent: the official pixels, PNG-encoded in a ``data:`` URL."""

    #: ``data:image/png;base64,...``: exactly the pixels the official reranker uses.
    url: str
    #: The prepared (resized) size.
    width: int
    height: int
    #: The size of the decoded original.
    original_width: int
    original_height: int
    #: SHA-256 of the prepared pixels' PNG, a cache key.
    sha256: str

    @property
    def tokens(self) -> int:
        """Image tokens the model reads for it (its ``<|image_pad|>`` count)."""
        return image_tokens(self.height, self.width)

    @property
    def prompt_tokens(self) -> int:
        """Tokens it adds to the prompt: :attr:`tokens` plus ``<|vision_start|>`` and ``<|vision_end|>``."""
        return self.tokens + 2


def _pil() -> Any:
    try:
        from PIL import Image as PILModule
    except ImportError as exc:
        raise ImportError(_INSTALL) from exc
    return PILModule


def _read_path(source: str | os.PathLike[str], label: str, max_bytes: int) -> bytes:
    text = os.fsdecode(source)
    if text[:7].lower() == "file://":
        text = text[7:]
    path = Path(text)
    shown = _describe(source)
    try:
        if not path.exists():
            raise InvalidInput(
                f"{label}: image file {shown} does not exist; pass an existing image file, its bytes, "
                "a PIL image or a data: URL"
            )
        if not path.is_file():
            raise InvalidInput(f"{label}: image path {shown} is not a regular file")
        size = path.stat().st_size
        if size > max_bytes:
            raise InvalidInput(
                f"{label}: image file {shown} is {size} bytes, over the limit of {max_bytes}; "
                "pass a smaller image (or raise max_image_bytes)"
            )
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise InvalidInput(f"{label}: cannot read image file {shown}: {exc}") from exc
    if len(data) > max_bytes:
        raise InvalidInput(f"{label}: image file {shown} grew over the limit of {max_bytes} bytes while read")
    return data


def _decode_data_url(source: str, label: str, max_bytes: int) -> bytes:
    # base64 is 4 characters per 3 bytes: refuse an oversized URL before decoding it.
    if len(source) > max_bytes * 4 // 3 + 256:
        raise InvalidInput(
            f"{label}: data URL of {len(source)} characters is over the limit of {max_bytes} bytes; "
            "pass a smaller image (or raise max_image_bytes)"
        )
    header, comma, payload = source.partition(",")
    if not comma or not header.lower().startswith("data:image/") or not header.lower().endswith(";base64"):
        raise InvalidInput(
            f"{label}: a data URL must look like data:image/<type>;base64,<data>, got {header[:60]!r}"
        )
    if any(space in payload for space in " \n\r\t"):
        payload = "".join(payload.split())  # line-wrapped base64 (MIME style)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput(f"{label}: the data URL's base64 data is corrupt ({exc})") from exc


def _check_pixels(width: int, height: int, label: str, what: str, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise InvalidInput(
            f"{label}: {what} is {width}x{height} = {width * height} pixels, over the limit of "
            f"{max_pixels}; downscale it first (or raise max_image_pixels)"
        )


def _open(data: bytes, label: str, shown: str, max_pixels: int) -> PILImage:
    pil = _pil()
    pil.init()  # registers every format plugin (once): open(formats=...) needs them
    try:
        with warnings.catch_warnings():
            # Our own cap (max_pixels) is checked from the header below, before decoding.
            warnings.simplefilter("ignore", pil.DecompressionBombWarning)
            image = pil.open(io.BytesIO(data), formats=_FORMATS)
            _check_pixels(image.width, image.height, label, f"image {shown}", max_pixels)
            image.seek(0)  # the first frame of an animation, as the official code reads it
            image.load()
    except InvalidInput:
        raise
    except pil.DecompressionBombError as exc:
        raise InvalidInput(
            f"{label}: image {shown} has too many pixels, over the limit ({exc}); downscale it first"
        ) from exc
    except pil.UnidentifiedImageError as exc:
        raise InvalidInput(
            f"{label}: {shown} is not an image this library reads (PNG, JPEG, GIF, WebP, BMP, TIFF): {exc}"
        ) from exc
    except MemoryError as exc:
        raise InvalidInput(f"{label}: {shown} needs more memory to decode than is available") from exc
    except Exception as exc:  # corrupt data surfaces as OSError, SyntaxError, ValueError, struct.error...
        raise InvalidInput(
            f"{label}: image {shown} is corrupt or truncated ({type(exc).__name__}: {exc})"
        ) from exc
    return image  # type: ignore[no-any-return]


def _official_pixels(image: PILImage, label: str, shown: str) -> PILImage:
    pil = _pil()
    try:
        if image.mode == "RGBA":
            rgb = pil.new("RGB", image.size, (255, 255, 255))
            rgb.paste(image, mask=image.split()[3])
        else:
            rgb = image.convert("RGB")
        width, height = rgb.size
        try:
            new_height, new_width = smart_resize(height, width)
        except ValueError as exc:
            raise InvalidInput(f"{label}: image {shown} cannot be scored: {exc}; crop or pad it") from exc
        return rgb.resize((new_width, new_height), pil.Resampling.BICUBIC)  # type: ignore[no-any-return]
    except InvalidInput:
        raise
    except MemoryError as exc:
        raise InvalidInput(f"{label}: image {shown} needs more memory to convert than is available") from exc
    except Exception as exc:
        raise InvalidInput(
            f"{label}: image {shown} cannot be converted to RGB ({type(exc).__name__}: {exc})"
        ) from exc


def _prepare_loaded(loaded: bytes | PILImage, label: str, shown: str, max_pixels: int) -> PreparedImage:
    if isinstance(loaded, bytes):
        image = _open(loaded, label, shown, max_pixels)
    else:
        image = loaded
        _check_pixels(image.width, image.height, label, f"image {shown}", max_pixels)
    pixels = _official_pixels(image, label, shown)
    buffer = io.BytesIO()
    pixels.save(buffer, format="PNG", compress_level=1)
    png = buffer.getvalue()
    return PreparedImage(
        url="data:image/png;base64," + base64.b64encode(png).decode("ascii"),
        width=pixels.width,
        height=pixels.height,
        original_width=image.width,
        original_height=image.height,
        sha256=hashlib.sha256(png).hexdigest(),
    )


def _load_local(image: Image, label: str, max_bytes: int) -> bytes | PILImage:
    source = image.source
    kind = image.kind
    if kind == "pil":
        return source  # type: ignore[return-value]
    if kind == "bytes":
        data = bytes(source)  # type: ignore[arg-type]
        if len(data) > max_bytes:
            raise InvalidInput(
                f"{label}: image of {len(data)} bytes is over the limit of {max_bytes}; "
                "pass a smaller image (or raise max_image_bytes)"
            )
        return data
    if kind == "data-url":
        return _decode_data_url(source, label, max_bytes)  # type: ignore[arg-type]
    return _read_path(source, label, max_bytes)  # type: ignore[arg-type]


def _refuse_url(url: str, label: str) -> InvalidInput:
    return InvalidInput(
        f"{label}: image URL {_describe(url)} is not fetched by default (a document's URL is chosen by "
        "whoever wrote the document, and fetching it is the application's decision); opt in by passing "
        "a qwen3_vllm_rerank.images.UrlFetcher (timeout and size cap) to the client, or pass the image "
        "itself (path, bytes, PIL image or data: URL)"
    )


def prepare_image(
    image: Image | ImageSource,
    *,
    label: str = "image",
    fetcher: UrlFetcher | None = None,
    max_image_bytes: int = MAX_IMAGE_BYTES,
    max_image_pixels: int = MAX_IMAGE_PIXELS,
) -> PreparedImage:
    """The official reranker's pixels for ``image``, PNG-encoded for sending inline.

    ``label`` names the input in error messages (e.g. ``"documents[3]"``). ``fetcher``: the
    opt-in for ``http(s)://`` sources (refused without one). ``max_image_bytes`` caps the
    encoded image, ``max_image_pixels`` its decoded size (checked from the header, before decoding).

    Raises :class:`InvalidInput` for anything that cannot be scored, and ``ImportError``
    when Pillow is not installed.
    """
    image = _as_image(image)
    shown = _describe(image.source)
    loaded: bytes | PILImage
    if image.kind == "url":
        if fetcher is None:
            raise _refuse_url(image.source, label)  # type: ignore[arg-type]
        loaded = fetcher.fetch(image.source, label)  # type: ignore[arg-type]
        if len(loaded) > max_image_bytes:
            raise InvalidInput(f"{label}: image {shown} is over the limit of {max_image_bytes} bytes")
    else:
        loaded = _load_local(image, label, max_image_bytes)
    _pil()
    return _prepare_loaded(loaded, label, shown, max_image_pixels)


async def aprepare_image(
    image: Image | ImageSource,
    *,
    label: str = "image",
    fetcher: UrlFetcher | None = None,
    max_image_bytes: int = MAX_IMAGE_BYTES,
    max_image_pixels: int = MAX_IMAGE_PIXELS,
) -> PreparedImage:
    """:func:`prepare_image` for asyncio: URLs are fetched asynchronously, and reading,
    decoding and encoding run in a worker thread."""
    image = _as_image(image)
    if image.kind == "url":
        if fetcher is None:
            raise _refuse_url(image.source, label)  # type: ignore[arg-type]
        shown = _describe(image.source)
        data = await fetcher.afetch(image.source, label)  # type: ignore[arg-type]
        if len(data) > max_image_bytes:
            raise InvalidInput(f"{label}: image {shown} is over the limit of {max_image_bytes} bytes")
        _pil()
        return await asyncio.to_thread(_prepare_loaded, data, label, shown, max_image_pixels)
    return await asyncio.to_thread(
        prepare_image, image, label=label, max_image_bytes=max_image_bytes, max_image_pixels=max_image_pixels
    )
