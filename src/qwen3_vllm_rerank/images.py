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
import math
import os
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from .errors import InvalidInput

if TYPE_CHECKING:
    import httpx
    from PIL.Image import Image as PILImage

__all__ = [
    "IMAGE_FACTOR",
    "MAX_ASPECT_RATIO",
    "MAX_IMAGE_BYTES",
    "MAX_IMAGE_PIXELS",
    "MAX_PIXELS",
    "MIN_PIXELS",
    "Content",
    "Image",
    "ImageSource",
    "PreparedImage",
    "UrlFetcher",
    "aprepare_image",
    "image_tokens",
    "prepare_image",
    "smart_resize",
]

#: Both sides of a prepared image are multiples of this (patch 16 x spatial merge 2).
IMAGE_FACTOR = 32
#: The official reranker's pixel limits: 4 and 1800 image tokens.
MIN_PIXELS = 4 * IMAGE_FACTOR * IMAGE_FACTOR
MAX_PIXELS = 1800 * IMAGE_FACTOR * IMAGE_FACTOR
#: Longer side / shorter side beyond which the official code refuses an image.
MAX_ASPECT_RATIO = 200
#: Default cap on an image's encoded size (file, bytes, data URL or download).
MAX_IMAGE_BYTES = 64 * 1024 * 1024
#: Default cap on an image's decoded pixels, checked from its header before decoding.
MAX_IMAGE_PIXELS = 64_000_000

# What an image file may be. Others (EPS, PSD, ...) are not opened at all: some need
# external programs, and none is what a retrieval pipeline means by an image.
_FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF")
_INSTALL = 'scoring images needs Pillow: pip install "qwen3-vllm-rerank[images]"'

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


def smart_resize(
    height: int,
    width: int,
    *,
    factor: int = IMAGE_FACTOR,
    min_pixels: int = MIN_PIXELS,
    max_pixels: int = MAX_PIXELS,
) -> tuple[int, int]:
    """``(height, width)`` an image is resized to, as ``qwen_vl_utils.smart_resize`` computes it
    for the reranker: sides rounded to multiples of ``factor``, then scaled (keeping the aspect
    ratio) down under ``max_pixels`` or up over ``min_pixels``.

    Raises ``ValueError`` for a side under 1 or an aspect ratio over 200:1."""
    if height < 1 or width < 1:
        raise ValueError(f"image sides must be >= 1, got {width}x{height}")
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        ratio = max(height, width) / min(height, width)
        raise ValueError(f"aspect ratio must be at most {MAX_ASPECT_RATIO}:1, got {ratio:.0f}:1")
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = math.floor(height / beta / factor) * factor
        w_bar = math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def image_tokens(height: int, width: int) -> int:
    """Image tokens for a prepared ``height`` x ``width`` image: one per 32x32 block."""
    return (height // IMAGE_FACTOR) * (width // IMAGE_FACTOR)


@dataclass(frozen=True, slots=True)
class UrlFetcher:
    """The opt-in to fetch ``http(s)://`` images, by this client, never by the server.

    Each fetch has a total ``timeout`` (seconds, over connecting, redirects and the whole
    body) and a ``max_bytes`` cap (refused from ``Content-Length`` when declared, and cut off
    when the body grows past it). Pass one to the client (the lead's option) or to
    :func:`prepare_image`. Only the http and https schemes are ever requested; redirects are
    followed up to ``max_redirects`` times. The URL is still chosen by whoever wrote the
    document: opt in only where the client may reach any address such a document names.
    """

    timeout: float = 10.0
    max_bytes: int = 20 * 1024 * 1024
    max_redirects: int = 3
    headers: tuple[tuple[str, str], ...] = (("User-Agent", "qwen3-vllm-rerank"),)

    def __post_init__(self) -> None:
        if not self.timeout > 0:
            raise ValueError(f"timeout must be > 0, got {self.timeout!r}")
        if self.max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {self.max_bytes!r}")

    def _client_kwargs(self) -> dict[str, Any]:
        return {
            "timeout": self.timeout,
            "follow_redirects": True,
            "max_redirects": self.max_redirects,
            "headers": dict(self.headers),
        }

    def _check_declared(self, response: httpx.Response, url: str, label: str) -> None:
        if response.status_code != 200:
            raise InvalidInput(f"{label}: fetching image {url!r} answered HTTP {response.status_code}")
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            raise InvalidInput(
                f"{label}: image {url!r} is {int(declared)} bytes, over the fetch limit of "
                f"{self.max_bytes}; raise UrlFetcher(max_bytes=...) or pass a smaller image"
            )

    def _over(self, size: int, url: str, label: str) -> InvalidInput:
        return InvalidInput(
            f"{label}: image {url!r} is over the fetch limit of {self.max_bytes} bytes; "
            "raise UrlFetcher(max_bytes=...) or pass a smaller image"
        )

    def _timed_out(self, url: str, label: str) -> InvalidInput:
        return InvalidInput(
            f"{label}: fetching image {url!r} took over {self.timeout} s; "
            "raise UrlFetcher(timeout=...) or pass the image itself"
        )

    def fetch(self, url: str, label: str = "image") -> bytes:
        """The body at ``url``, or :class:`InvalidInput` saying why not."""
        import httpx

        deadline = time.monotonic() + self.timeout
        body = bytearray()
        try:
            with (
                httpx.Client(**self._client_kwargs()) as client,
                client.stream("GET", url) as response,
            ):
                self._check_declared(response, url, label)
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > self.max_bytes:
                        raise self._over(len(body), url, label)
                    if time.monotonic() > deadline:
                        raise self._timed_out(url, label)
        except httpx.TimeoutException as exc:
            raise self._timed_out(url, label) from exc
        except httpx.HTTPError as exc:
            raise InvalidInput(f"{label}: cannot fetch image {url!r}: {exc}") from exc
        return bytes(body)

    async def afetch(self, url: str, label: str = "image") -> bytes:
        """:meth:`fetch` for asyncio."""
        import httpx

        body = bytearray()
        try:
            async with (
                asyncio.timeout(self.timeout),
                httpx.AsyncClient(**self._client_kwargs()) as client,
                client.stream("GET", url) as response,
            ):
                self._check_declared(response, url, label)
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > self.max_bytes:
                        raise self._over(len(body), url, label)
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise self._timed_out(url, label) from exc
        except httpx.HTTPError as exc:
            raise InvalidInput(f"{label}: cannot fetch image {url!r}: {exc}") from exc
        return bytes(body)


# --- preparing ----------------------------------------------------------------------


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
