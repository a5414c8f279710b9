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
(:data:`~qwen3_vllm_rerank.images._decode_budget.DECODE_BUDGET_BYTES`, both checked from the header,
before decoding), over :data:`MAX_IMAGE_BYTES` bytes (checked before reading), aspect ratios
over 200:1, JPEGs of more scans than :data:`~qwen3_vllm_rerank.images._decode_budget.MAX_JPEG_SCANS`
(counted in the bytes), unreadable files and malformed ``data:`` URLs raise
:class:`~qwen3_vllm_rerank.errors.InvalidInput` naming the input. An image file is decoded
in a worker process (``_sandbox.py``), stopped and refused the same way if it takes longer than
its time bound or more memory than its header announced. URLs are refused unless the
caller passes a :class:`UrlFetcher`: a retrieved document is attacker-controlled, and fetching
whatever URL it names is a decision for the application, never a default.

Preparation is a pure function of the source's bytes (or PIL image) and the settings: what is
read or fetched is decided first, then :func:`begin` (the cache lookup, the header checks) and
:func:`finish` (decode, RGB, resize, encode) compute. The same pixels always give the same
bytes (PNG at :data:`~qwen3_vllm_rerank.images._image_cache.PNG_COMPRESS_LEVEL`, no metadata chunks:
no ICC profile, transparency key, gamma or text carried over from the source), so identical
images make byte-identical requests. With a :class:`PreparedImageCache`, an image prepared
before is not decoded, resized or encoded again (see ``_image_cache.py`` for what a key is made of).

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
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING, Any, assert_never

from ._decode_budget import (
    DECODE_BUDGET_BYTES,
    MAX_JPEG_SCANS,
    DecodeBudget,
    decode_cost,
    decode_pool,
    jpeg_scans,
)
from ._failures import UnusableImage
from ._fetching import UrlFetcher, fetch_failed
from ._files import unreadable
from ._geometry import smart_resize
from ._image_cache import PNG_COMPRESS_LEVEL, PreparedImageCache, pixels_key, source_key
from ._policy import Fetch, Inline, ReadFile, decide, fetched, read
from ._prepared import PreparedImage
from ._sandbox import DECODE_SECONDS, Decoded, Job, chained, memory_bound, sandbox
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
    "render",
    "start",
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
_REPLACE = "re-encode it (a baseline JPEG or a PNG) or pass a smaller image"


@dataclass(frozen=True, slots=True)
class Settings:
    """What decides whether and how an image is prepared (besides its bytes).

    Args:
        max_image_bytes: cap on the encoded image (file, bytes, data URL or download).
        max_image_pixels: cap on its decoded pixels, from the header.
        decode_budget: cap on the memory preparing it may take, estimated from the header.
        decode_seconds: wall (and CPU) seconds its file may take to decode and prepare in
            the sandbox before it is stopped.
        max_jpeg_scans: cap on a JPEG's scans, counted in its bytes before decoding.
    """

    max_image_bytes: int = MAX_IMAGE_BYTES
    max_image_pixels: int = MAX_IMAGE_PIXELS
    decode_budget: int = DECODE_BUDGET_BYTES
    decode_seconds: float = DECODE_SECONDS
    max_jpeg_scans: int = MAX_JPEG_SCANS


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
    #: The file's bytes, decoded in the sandbox; ``None`` for a PIL image (prepared in a thread).
    data: bytes | None = field(default=None, repr=False)


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


def _check_size(data: bytes, label: str, max_bytes: int) -> bytes:
    if len(data) > max_bytes:
        raise UnusableImage(label, f"image of {len(data)} bytes is over the limit of {max_bytes}; {_SMALLER}")
    return data


def _read_local(image: Image, decision: Inline | ReadFile, label: str, max_bytes: int) -> bytes | PILImage:
    """What a source that needs no network holds, as the source policy decided (``_policy.py``)."""
    if isinstance(decision, ReadFile):
        return read(image, decision, label, max_bytes)
    source = image.source
    kind = image.kind
    match kind:
        case SourceKind.PIL:
            return source  # type: ignore[return-value]
        case SourceKind.BYTES:
            return _check_size(bytes(source), label, max_bytes)  # type: ignore[arg-type]
        case SourceKind.DATA_URL:
            return _decode_data_url(source, label, max_bytes)  # type: ignore[arg-type]
        case SourceKind.PATH | SourceKind.FILE_URL | SourceKind.URL:  # pragma: no cover - not INLINE
            raise UnusableImage(label, f"image {describe(source)} holds no image itself")
        case _:
            assert_never(kind)


def _over_pixels(width: int, height: int, label: str, shown: str, max_pixels: int) -> UnusableImage:
    return UnusableImage(
        label,
        f"image {shown} is {width}x{height} = {width * height} pixels, over the limit of "
        f"{max_pixels}; {_SMALLER}",
    )


def _open_bytes(data: bytes, label: str, shown: str) -> PILImage:
    """The image file ``data`` opened (its header read), nothing decoded."""
    pil = _pil()
    pil.init()  # registers every format plugin (once): open(formats=...) needs them
    try:
        with warnings.catch_warnings():
            # Our own caps are checked from the header (open_checked), before decoding.
            warnings.simplefilter("ignore")  # a hostile file's warnings say nothing useful
            return pil.open(io.BytesIO(data), formats=_FORMATS)  # type: ignore[no-any-return]
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


def open_checked(loaded: bytes | PILImage, label: str, shown: str, settings: Settings) -> Opened:
    """``loaded``'s header read and checked (pixels, aspect ratio, decoding cost, a JPEG's
    scans), nothing decoded."""
    if isinstance(loaded, bytes):
        image, encoded = _open_bytes(loaded, label, shown), len(loaded)
        scans = jpeg_scans(loaded) if image.format in ("JPEG", "MPO") else 0
        if scans > settings.max_jpeg_scans:
            raise UnusableImage(
                label,
                f"image {shown} is a JPEG of {scans} scans, over the limit of {settings.max_jpeg_scans} "
                f"(a progressive JPEG has about 10; each scan decodes the whole image again); {_REPLACE}",
            )
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
    data = loaded if isinstance(loaded, bytes) else None
    return Opened(image, label, shown, cost, (new_height, new_width), settings, data=data)


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


def _decoded(image: PILImage, label: str, shown: str) -> None:
    """``image``'s first frame decoded (as the official code reads an animation)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a hostile file's warnings say nothing useful
            image.seek(0)
            image.load()
    except MemoryError as exc:
        raise UnusableImage(label, f"{shown} needs more memory to decode than it may take") from exc
    except Exception as exc:  # corrupt data surfaces as OSError, SyntaxError, ValueError, struct.error...
        raise UnusableImage(
            label, f"image {shown} is corrupt or truncated ({type(exc).__name__}: {exc})"
        ) from exc


@contextlib.contextmanager
def _converting(label: str, shown: str) -> Iterator[None]:
    try:
        yield
    except MemoryError as exc:
        raise UnusableImage(label, f"image {shown} needs more memory to convert than it may take") from exc
    except Exception as exc:
        raise UnusableImage(
            label, f"image {shown} cannot be converted to RGB ({type(exc).__name__}: {exc})"
        ) from exc


def _resized(rgb: PILImage, size: tuple[int, int]) -> PILImage:
    new_height, new_width = size
    return rgb.resize((new_width, new_height), _pil().Resampling.BICUBIC)


def _png(pixels: PILImage) -> bytes:
    pixels.info = {}  # no ICC profile, tRNS, gamma, text...: the same pixels give the same bytes
    buffer = io.BytesIO()
    pixels.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def _prepared(png: bytes, size: tuple[int, int], original: tuple[int, int]) -> PreparedImage:
    return PreparedImage(
        url="data:image/png;base64," + base64.b64encode(png).decode("ascii"),
        width=size[1],
        height=size[0],
        original_width=original[0],
        original_height=original[1],
        sha256=hashlib.sha256(png).hexdigest(),
    )


def render(data: bytes, size: tuple[int, int], label: str, shown: str) -> tuple[bytes, tuple[int, int]]:
    """What a sandbox worker computes (``_sandbox_worker.py``): the image file ``data`` decoded
    (first frame), made RGB, resized to ``size`` ``(height, width)`` and PNG-encoded, with the
    original's ``(width, height)``. Raises :class:`UnusableImage`."""
    image = _open_bytes(data, label, shown)
    _decoded(image, label, shown)
    with _converting(label, shown):
        pixels = _resized(_rgb(image), size)
    return _png(pixels), image.size


def _finish_image(opened: Opened, cache: PreparedImageCache | None) -> PreparedImage:
    """A PIL image (the application's, already decoded) prepared in this thread, looked up in
    ``cache`` by its RGB pixels first (a hit is returned before resizing) and stored under them."""
    image, label, shown = opened.image, opened.label, opened.shown
    _decoded(image, label, shown)
    key = opened.key
    with _converting(label, shown):
        rgb = _rgb(image)
        if cache is not None and key is None:
            key = pixels_key(rgb, opened.settings)
            hit = cache.get(key)
            if hit is not None:
                return hit
        pixels = _resized(rgb, opened.size)
    prepared = _prepared(_png(pixels), opened.size, image.size)
    if cache is not None and key is not None:
        cache.put(key, prepared)
    return prepared


def start(opened: Opened, cache: PreparedImageCache | None, owner: object) -> Future[PreparedImage]:
    """:func:`finish` begun elsewhere: an image file in the sandbox, for ``owner`` (the call's
    budget: the sandbox takes calls in turn), bounded in time and memory (a file that goes over
    raises :class:`UnusableImage`); a PIL image in the :func:`decode_pool`. The prepared image is
    stored in ``cache`` under its key."""
    if opened.data is None:
        return decode_pool().submit(_finish_image, opened, cache)
    bound = memory_bound(opened.cost)
    job = Job(opened.data, opened.size, bound, opened.settings.decode_seconds, opened.label, opened.shown)

    def prepared(decoded: Decoded) -> PreparedImage:
        result = _prepared(decoded.png, opened.size, (decoded.original_width, decoded.original_height))
        if cache is not None and opened.key is not None:
            cache.put(opened.key, result)
        return result

    return chained(sandbox().submit(owner, job), prepared)


def finish(opened: Opened, cache: PreparedImageCache | None = None) -> PreparedImage:
    """The prepared image: ``opened`` decoded (first frame), made RGB, resized and PNG-encoded
    (a file in the sandbox, a PIL image in this thread), then stored in ``cache``."""
    if opened.data is None:
        return _finish_image(opened, cache)
    return start(opened, cache, object()).result()


@contextlib.contextmanager
def decoding(image: Image) -> Iterator[None]:
    """For a file, any failure to decode says what any failure to read it says, and for a fetched
    URL what any failed fetch says: no oracle of what an arbitrary path or address holds."""
    try:
        yield
    except UnusableImage as error:
        if image.kind is SourceKind.PATH or image.kind is SourceKind.FILE_URL:
            raise unreadable(error.label, describe(image.source), error.reason) from None
        if image.kind is SourceKind.URL:
            raise fetch_failed(image.source, error.label, error.reason) from None  # type: ignore[arg-type]
        raise


def _begin_local(
    image: Image,
    decision: Inline | ReadFile,
    label: str,
    settings: Settings,
    cache: PreparedImageCache | None,
) -> PreparedImage | Opened:
    loaded = _read_local(image, decision, label, settings.max_image_bytes)
    with decoding(image):
        return begin(loaded, label, describe(image.source), settings, cache)


def load(
    image: Image, label: str, fetcher: UrlFetcher | None, settings: Settings, cache: PreparedImageCache | None
) -> PreparedImage | Opened:
    """One image of a call read (or fetched) in this thread and :func:`begin` run on it: its
    cached :class:`PreparedImage`, or the :class:`Opened` image to :func:`finish`. What it may
    read or fetch is the source policy's (``_policy.decide``)."""
    _pil()  # before anything is read or fetched
    decision = decide(image, label, fetcher)
    if isinstance(decision, Fetch):
        data = decision.fetcher.fetch(decision.url, label)
        with fetched(decision.url, label):
            loaded = _check_size(data, label, settings.max_image_bytes)
            return begin(loaded, label, describe(image.source), settings, cache)
    return _begin_local(image, decision, label, settings, cache)


async def aload(
    image: Image, label: str, fetcher: UrlFetcher | None, settings: Settings, cache: PreparedImageCache | None
) -> PreparedImage | Opened:
    """:func:`load` for asyncio: URLs fetched asynchronously; files read, hashed and headers
    parsed in a worker thread."""
    _pil()
    decision = decide(image, label, fetcher)
    if isinstance(decision, Fetch):
        data = await decision.fetcher.afetch(decision.url, label)
        with fetched(decision.url, label):
            loaded = _check_size(data, label, settings.max_image_bytes)
            return await asyncio.to_thread(begin, loaded, label, describe(image.source), settings, cache)
    return await asyncio.to_thread(_begin_local, image, decision, label, settings, cache)


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
    """:func:`prepare_in_call` for asyncio (:func:`aload`), decoding (:func:`start`) once its
    cost fits in ``budget``."""
    step = await aload(image, label, fetcher, settings, cache)
    if isinstance(step, PreparedImage):
        return step
    with decoding(image):
        return await budget.run(step.cost, partial(start, step, cache, budget))


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
    decoding would take more than the budget, 512 MiB, or longer than 20 s), and
    ``ImportError`` when Pillow is not installed.
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
    """:func:`prepare_image` for asyncio: URLs are fetched asynchronously, files read in a
    worker thread, and decoding and encoding run in the sandbox's worker processes."""
    settings = Settings(max_image_bytes, max_image_pixels)
    return await aprepare_in_call(
        _as_image(image), label, fetcher, settings, DecodeBudget(settings.decode_budget), cache
    )
