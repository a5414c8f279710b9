"""Images turned into exactly the pixels the official reranker gives the model.

:func:`prepare_image` turns an :class:`Image` into the pixels of the official reranker
(``Qwen3VLReranker`` in QwenLM/Qwen3-VL-Embedding, through ``qwen_vl_utils.fetch_image``):

* the first frame, converted to RGB (an RGBA image composited on white, any other mode
  through ``convert("RGB")``; no EXIF rotation, as in the official code);
* resized with bicubic resampling to :func:`smart_resize`'s size: both sides multiples
  of 32, between 4,096 and 1,843,200 pixels, the aspect ratio kept as far as possible;

then encodes them losslessly (PNG, as a ``data:`` URL) to be sent inline. A vLLM server
whose processor limits are the official ones (``min_pixels`` 4096, ``max_pixels``
1843200) leaves such an image as it is, so it scores the very pixels the reference does.

Hostile input never gets further than this module: corrupt or non-image bytes, images
over :data:`MAX_IMAGE_PIXELS` decoded pixels or over the decoding budget
(:data:`~qwen3_vllm_rerank.images._memory.DECODE_BUDGET_BYTES`, both checked from the header,
before decoding), over :data:`MAX_IMAGE_BYTES` bytes (checked before reading), aspect ratios
over 200:1, unreadable files and malformed ``data:`` URLs raise
:class:`~qwen3_vllm_rerank.errors.InvalidInput` naming the input. URLs are refused unless the
caller passes a :class:`UrlFetcher`: a retrieved document is attacker-controlled, and fetching
whatever URL it names is a decision for the application, never a default.

Preparation is a pure function of the source's bytes (or PIL image) and the settings: what is
read or fetched is decided first, then :func:`begin` (the cache lookup, the header checks) and
:func:`finish` (decode, RGB, resize, encode) compute. The same pixels always give the same
bytes (PNG at :data:`~qwen3_vllm_rerank.images._cache.PNG_COMPRESS_LEVEL`, no metadata chunks:
no ICC profile, transparency key, gamma or text carried over from the source), so identical
images make byte-identical requests. With a :class:`PreparedImageCache`, an image prepared
before is not decoded, resized or encoded again (see ``_cache.py`` for what a key is made of).

Decoding needs Pillow: ``pip install "qwen3-vllm-rerank[images]"``. The input types do not.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import io
import warnings
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, assert_never

from ._cache import PNG_COMPRESS_LEVEL, PreparedImageCache, pixels_key, source_key
from ._failures import UnusableImage
from ._fetching import UrlFetcher
from ._geometry import smart_resize
from ._local import FileUnreadable, read_file_url, read_path, unreadable
from ._memory import DECODE_BUDGET_BYTES, DecodeBudget, decode_cost
from ._prepared import PreparedImage
from ._sources import Image, ImageSource, SourceKind, _as_image, describe

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage


__all__ = [
    "MAX_IMAGE_BYTES",
    "MAX_IMAGE_PIXELS",
    "Opened",
    "PreparedImage",
    "Settings",
    "aload",
    "aprepare_image",
    "aprepare_in_call",
    "begin",
    "decoding",
    "finish",
    "load",
    "open_checked",
    "prepare_image",
    "prepare_in_call",
]

#: Default cap on an image's encoded size (file, bytes, data URL or download).
MAX_IMAGE_BYTES = 64 * 1024 * 1024
#: Default cap on an image's decoded pixels, checked from its header before decoding.
MAX_IMAGE_PIXELS = 64_000_000

# What an image file may be. Others (EPS, PSD, ...) are not opened at all: some need
# external programs, and none is what a retrieval pipeline means by an image.
_FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF")
_INSTALL = 'scoring images needs Pillow: pip install "qwen3-vllm-rerank[images]"'
_SMALLER = "downscale it before indexing, or pass a smaller image"


@dataclass(frozen=True, slots=True)
class Settings:
    """What decides whether and how an image is prepared (besides its bytes).

    Args:
        max_image_bytes: cap on the encoded image (file, bytes, data URL or download).
        max_image_pixels: cap on its decoded pixels, from the header.
        decode_budget: cap on the memory preparing it may take, estimated from the header.
    """

    max_image_bytes: int = MAX_IMAGE_BYTES
    max_image_pixels: int = MAX_IMAGE_PIXELS
    decode_budget: int = DECODE_BUDGET_BYTES


@dataclass(frozen=True, slots=True)
class Opened:
    """An image whose header was read and checked, not yet decoded: ``cost`` is what decoding
    and preparing it will take at most, in bytes."""

    image: PILImage
    label: str
    shown: str
    cost: int
    size: tuple[int, int]  # prepared (height, width)
    settings: Settings
    #: Its cache key when it is cached by its file's bytes; ``None`` for a PIL image (keyed by
    #: its RGB pixels in :func:`finish`) or without a cache.
    key: Hashable | None = None


def _pil() -> Any:
    try:
        from PIL import Image as PILModule
    except ImportError as exc:
        raise ImportError(_INSTALL) from exc
    return PILModule


def _decode_data_url(source: str, label: str, max_bytes: int) -> bytes:
    # base64 is 4 characters per 3 bytes: refuse an oversized URL before decoding it.
    if len(source) > max_bytes * 4 // 3 + 256:
        raise UnusableImage(
            label, f"data URL of {len(source)} characters is over the limit of {max_bytes} bytes; {_SMALLER}"
        )
    header, comma, payload = source.partition(",")
    lowered = header.lower()
    if not comma or not lowered.startswith("data:image/") or not lowered.endswith(";base64"):
        raise UnusableImage(
            label, f"a data URL must look like data:image/<type>;base64,<data>, got {header[:60]!r}"
        )
    if any(space in payload for space in " \n\r\t"):
        payload = "".join(payload.split())  # line-wrapped base64 (MIME style)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise UnusableImage(label, f"the data URL's base64 data is corrupt ({exc})") from exc


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
        f"image {describe(url)} is a file: URL, which is not read by default (a document's URL is "
        "chosen by whoever wrote the document); to read local files named by documents, pass "
        "image_fetcher=UrlFetcher(file_roots=(directory, ...)) naming the directories they may be in",
    )


def _check_size(data: bytes, label: str, max_bytes: int) -> bytes:
    if len(data) > max_bytes:
        raise UnusableImage(label, f"image of {len(data)} bytes is over the limit of {max_bytes}; {_SMALLER}")
    return data


def _read_local(image: Image, label: str, fetcher: UrlFetcher | None, max_bytes: int) -> bytes | PILImage:
    """What a source that needs no network holds (URLs are the caller's to fetch)."""
    source = image.source
    kind = image.kind
    shown = describe(source)
    match kind:
        case SourceKind.PIL:
            return source  # type: ignore[return-value]
        case SourceKind.BYTES:
            return _check_size(bytes(source), label, max_bytes)  # type: ignore[arg-type]
        case SourceKind.DATA_URL:
            return _decode_data_url(source, label, max_bytes)  # type: ignore[arg-type]
        case SourceKind.PATH:
            try:
                return read_path(source, max_bytes)  # type: ignore[arg-type]
            except FileUnreadable as exc:
                raise unreadable(label, shown, exc) from None
        case SourceKind.FILE_URL:
            if fetcher is None or not fetcher.file_roots:
                raise _refuse_file_url(source, label)  # type: ignore[arg-type]
            try:
                return read_file_url(source, fetcher.file_roots, max_bytes)  # type: ignore[arg-type]
            except FileUnreadable as exc:
                raise unreadable(label, shown, exc) from None
        case SourceKind.URL:
            raise _refuse_url(source, label)  # type: ignore[arg-type]  # pragma: no cover
        case _:
            assert_never(kind)


def _url_fetcher(image: Image, label: str, fetcher: UrlFetcher | None) -> UrlFetcher:
    if fetcher is None:
        raise _refuse_url(image.source, label)  # type: ignore[arg-type]
    return fetcher


def _over_pixels(width: int, height: int, label: str, shown: str, max_pixels: int) -> UnusableImage:
    return UnusableImage(
        label,
        f"image {shown} is {width}x{height} = {width * height} pixels, over the limit of "
        f"{max_pixels}; {_SMALLER}",
    )


def open_checked(loaded: bytes | PILImage, label: str, shown: str, settings: Settings) -> Opened:
    """``loaded``'s header read and checked (pixels, aspect ratio, decoding cost), nothing decoded."""
    pil = _pil()
    if isinstance(loaded, bytes):
        pil.init()  # registers every format plugin (once): open(formats=...) needs them
        try:
            with warnings.catch_warnings():
                # Our own caps are checked from the header below, before decoding.
                warnings.simplefilter("ignore")  # a hostile file's warnings say nothing useful
                image = pil.open(io.BytesIO(loaded), formats=_FORMATS)
        except pil.DecompressionBombError as exc:
            raise UnusableImage(
                label, f"image {shown} has too many pixels, over the limit ({exc}); {_SMALLER}"
            ) from exc
        except pil.UnidentifiedImageError as exc:
            raise UnusableImage(
                label, f"{shown} is not an image this library reads (PNG, JPEG, GIF, WebP, BMP, TIFF)"
            ) from exc
        except Exception as exc:  # corrupt headers surface as OSError, SyntaxError, ValueError...
            raise UnusableImage(label, f"image {shown} is corrupt ({type(exc).__name__}: {exc})") from exc
        encoded = len(loaded)
    else:
        image, encoded = loaded, 0
    width, height = image.width, image.height
    if width * height > settings.max_image_pixels:
        raise _over_pixels(width, height, label, shown, settings.max_image_pixels)
    try:
        new_height, new_width = smart_resize(height, width)
    except ValueError as exc:
        raise UnusableImage(label, f"image {shown} cannot be scored: {exc}; crop or pad it") from exc
    cost = decode_cost(width, height, image.mode, image.format, new_width, new_height, encoded)
    if cost > settings.decode_budget:
        raise UnusableImage(
            label,
            f"image {shown} ({width}x{height} {image.mode}) would take about {cost >> 20} MiB to decode "
            f"and prepare, over the budget of {settings.decode_budget >> 20} MiB per call; {_SMALLER}",
        )
    return Opened(image, label, shown, cost, (new_height, new_width), settings)


def begin(
    loaded: bytes | PILImage,
    label: str,
    shown: str,
    settings: Settings,
    cache: PreparedImageCache | None = None,
) -> PreparedImage | Opened:
    """The cached :class:`PreparedImage` of ``loaded``'s bytes if ``cache`` holds it (nothing
    opened); else ``loaded`` opened and checked by :func:`open_checked`, to :func:`finish`."""
    key = source_key(loaded, settings) if cache is not None and isinstance(loaded, bytes) else None
    if key is not None and cache is not None:
        hit = cache.get(key)
        if hit is not None:
            return hit
    opened = open_checked(loaded, label, shown, settings)
    return opened if key is None else replace(opened, key=key)


def _rgb(image: PILImage) -> PILImage:
    if image.mode == "RGB":
        return image  # convert("RGB") would be a copy of the same pixels
    if image.mode == "RGBA":
        rgb = _pil().new("RGB", image.size, (255, 255, 255))
        rgb.paste(image, mask=image.getchannel("A"))
        return rgb  # type: ignore[no-any-return]
    return image.convert("RGB")


def finish(opened: Opened, cache: PreparedImageCache | None = None) -> PreparedImage:
    """The prepared image: ``opened`` decoded (first frame), made RGB, resized and PNG-encoded,
    then stored in ``cache`` under its file's key; a PIL image is looked up there by its RGB
    pixels first (a hit is returned before resizing) and stored under them."""
    pil = _pil()
    image, label, shown = opened.image, opened.label, opened.shown
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a hostile file's warnings say nothing useful
            image.seek(0)  # the first frame of an animation, as the official code reads it
            image.load()
    except MemoryError as exc:
        raise UnusableImage(label, f"{shown} needs more memory to decode than is available") from exc
    except Exception as exc:  # corrupt data surfaces as OSError, SyntaxError, ValueError, struct.error...
        raise UnusableImage(
            label, f"image {shown} is corrupt or truncated ({type(exc).__name__}: {exc})"
        ) from exc
    new_height, new_width = opened.size
    key = opened.key
    try:
        rgb = _rgb(image)
        if cache is not None and key is None:
            key = pixels_key(rgb, opened.settings)
            hit = cache.get(key)
            if hit is not None:
                return hit
        pixels = rgb.resize((new_width, new_height), pil.Resampling.BICUBIC)
    except MemoryError as exc:
        raise UnusableImage(label, f"image {shown} needs more memory to convert than is available") from exc
    except Exception as exc:
        raise UnusableImage(
            label, f"image {shown} cannot be converted to RGB ({type(exc).__name__}: {exc})"
        ) from exc
    pixels.info = {}  # no ICC profile, tRNS, gamma, text...: the same pixels give the same bytes
    buffer = io.BytesIO()
    pixels.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    png = buffer.getvalue()
    prepared = PreparedImage(
        url="data:image/png;base64," + base64.b64encode(png).decode("ascii"),
        width=pixels.width,
        height=pixels.height,
        original_width=image.width,
        original_height=image.height,
        sha256=hashlib.sha256(png).hexdigest(),
    )
    if cache is not None and key is not None:
        cache.put(key, prepared)
    return prepared


@contextlib.contextmanager
def decoding(image: Image) -> Iterator[None]:
    """For a file, any failure to decode says what any failure to read it says: no oracle of
    what an arbitrary path holds."""
    try:
        yield
    except UnusableImage as error:
        if image.kind is SourceKind.PATH or image.kind is SourceKind.FILE_URL:
            raise unreadable(error.label, describe(image.source), error.reason) from None
        raise


def _begin_local(
    image: Image, label: str, fetcher: UrlFetcher | None, settings: Settings, cache: PreparedImageCache | None
) -> PreparedImage | Opened:
    loaded = _read_local(image, label, fetcher, settings.max_image_bytes)
    with decoding(image):
        return begin(loaded, label, describe(image.source), settings, cache)


def load(
    image: Image, label: str, fetcher: UrlFetcher | None, settings: Settings, cache: PreparedImageCache | None
) -> PreparedImage | Opened:
    """One image of a call read (or fetched) in this thread and :func:`begin` run on it: its
    cached :class:`PreparedImage`, or the :class:`Opened` image to :func:`finish`."""
    _pil()  # before anything is read or fetched
    if image.kind is SourceKind.URL:
        data = _url_fetcher(image, label, fetcher).fetch(image.source, label)  # type: ignore[arg-type]
        loaded = _check_size(data, label, settings.max_image_bytes)
        return begin(loaded, label, describe(image.source), settings, cache)
    return _begin_local(image, label, fetcher, settings, cache)


async def aload(
    image: Image, label: str, fetcher: UrlFetcher | None, settings: Settings, cache: PreparedImageCache | None
) -> PreparedImage | Opened:
    """:func:`load` for asyncio: URLs fetched asynchronously; files read, hashed and headers
    parsed in a worker thread."""
    _pil()
    if image.kind is SourceKind.URL:
        data = await _url_fetcher(image, label, fetcher).afetch(image.source, label)  # type: ignore[arg-type]
        loaded = _check_size(data, label, settings.max_image_bytes)
        return await asyncio.to_thread(begin, loaded, label, describe(image.source), settings, cache)
    return await asyncio.to_thread(_begin_local, image, label, fetcher, settings, cache)


def prepare_in_call(
    image: Image,
    label: str,
    fetcher: UrlFetcher | None,
    settings: Settings,
    cache: PreparedImageCache | None = None,
) -> PreparedImage:
    """One image of a call, prepared in this thread (raises :class:`UnusableImage`)."""
    step = load(image, label, fetcher, settings, cache)
    if isinstance(step, PreparedImage):
        return step
    with decoding(image):
        return finish(step, cache)


async def aprepare_in_call(
    image: Image,
    label: str,
    fetcher: UrlFetcher | None,
    settings: Settings,
    budget: DecodeBudget,
    cache: PreparedImageCache | None = None,
) -> PreparedImage:
    """:func:`prepare_in_call` for asyncio (:func:`aload`), decoding in the budget's pool once
    its cost fits."""
    step = await aload(image, label, fetcher, settings, cache)
    if isinstance(step, PreparedImage):
        return step
    with decoding(image):
        return await budget.run(step.cost, finish, step, cache)


def prepare_image(
    image: Image | ImageSource,
    *,
    label: str = "image",
    fetcher: UrlFetcher | None = None,
    max_image_bytes: int = MAX_IMAGE_BYTES,
    max_image_pixels: int = MAX_IMAGE_PIXELS,
    cache: PreparedImageCache | None = None,
) -> PreparedImage:
    """The official reranker's pixels for ``image``, PNG-encoded for sending inline.

    Args:
        image: an :class:`Image` or a bare source.
        label: names the input in error messages (e.g. ``"documents[3]"``).
        fetcher: the opt-in for URLs (and, with its ``file_roots``, ``file:`` URLs); refused
            without one.
        max_image_bytes: cap on the encoded image.
        max_image_pixels: cap on its decoded size (checked from the header, before decoding).
        cache: a :class:`PreparedImageCache` to look the image up in and store it into
            (``None``, the default: none).

    Raises :class:`InvalidInput` for anything that cannot be scored (including an image whose
    decoding would take more than the budget, 512 MiB), and ``ImportError`` when Pillow is not
    installed.
    """
    settings = Settings(max_image_bytes, max_image_pixels)
    return prepare_in_call(_as_image(image), label, fetcher, settings, cache)


async def aprepare_image(
    image: Image | ImageSource,
    *,
    label: str = "image",
    fetcher: UrlFetcher | None = None,
    max_image_bytes: int = MAX_IMAGE_BYTES,
    max_image_pixels: int = MAX_IMAGE_PIXELS,
    cache: PreparedImageCache | None = None,
) -> PreparedImage:
    """:func:`prepare_image` for asyncio: URLs are fetched asynchronously, and reading,
    decoding and encoding run in worker threads."""
    settings = Settings(max_image_bytes, max_image_pixels)
    return await aprepare_in_call(
        _as_image(image), label, fetcher, settings, DecodeBudget(settings.decode_budget), cache
    )
