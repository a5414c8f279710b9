"""The prepared PNG (no server): deterministic, free of metadata, and lossless.

Identical images must make byte-identical requests (so that caches keyed by bytes, ours and
the server's, can hit), and the server must decode exactly the pixels the official reranker
computes, whatever the encoder's settings.
"""

from __future__ import annotations

import asyncio
import base64
import io
import struct
import subprocess
import sys
import textwrap

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image as PILImage
from PIL import ImageCms, PngImagePlugin

from qwen3_vllm_rerank.images import PreparedImage, aprepare_image, prepare_image
from tests.support.reference_vl import official_pixels


def _page(seed: int = 0) -> PILImage.Image:
    """A page-like image: white, with dark text-like strokes and a photo-like block."""
    rng = np.random.default_rng(seed)
    pixels = np.full((300, 240, 3), 255, np.uint8)
    pixels[20:280:12, 20:220] = rng.integers(0, 80, (22, 200, 3), dtype=np.uint8)
    pixels[200:280, 140:220] = rng.integers(0, 256, (80, 80, 3), dtype=np.uint8)
    return PILImage.fromarray(pixels, "RGB")


def _file(image: PILImage.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _png(prepared: PreparedImage) -> bytes:
    header, _, payload = prepared.url.partition(",")
    assert header == "data:image/png;base64"
    return base64.b64decode(payload)


def _chunks(png: bytes) -> list[bytes]:
    kinds, offset = [], 8
    while offset < len(png):
        (length,) = struct.unpack(">I", png[offset : offset + 4])
        kinds.append(png[offset + 4 : offset + 8])
        offset += 12 + length
    return kinds


def test_the_same_source_gives_byte_identical_urls_across_calls_sync_async_and_processes() -> None:
    data = _file(_page(), "PNG")
    first = prepare_image(data)
    assert prepare_image(data).url == first.url
    assert asyncio.run(aprepare_image(data)).url == first.url
    script = textwrap.dedent(
        """
        import sys
        from qwen3_vllm_rerank.images import prepare_image
        print(prepare_image(sys.stdin.buffer.read()).sha256)
        """
    )
    other = subprocess.run(
        [sys.executable, "-c", script], input=data, capture_output=True, timeout=120, check=True
    )
    assert other.stdout.decode().strip() == first.sha256


def test_the_same_pixels_from_differently_tagged_files_give_the_same_bytes() -> None:
    page = _page(1)
    plain = prepare_image(_file(page, "BMP"))
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", "a scanner")
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    tagged = prepare_image(_file(page, "PNG", pnginfo=info, icc_profile=srgb, transparency=(1, 2, 3)))
    assert tagged.url == plain.url
    assert _chunks(_png(tagged)) == [b"IHDR", b"IDAT", b"IEND"]


_MODES = st.sampled_from(["RGB", "RGBA", "L", "P", "LA", "CMYK", "I;16"])


@settings(max_examples=25, deadline=None)
@given(
    mode=_MODES,
    width=st.integers(1, 300),
    height=st.integers(1, 300),
    seed=st.integers(0, 2**32 - 1),
)
def test_the_server_decodes_exactly_the_official_pixels(
    mode: str, width: int, height: int, seed: int
) -> None:
    """For any image, decoding the prepared PNG gives exactly the official reranker's pixels."""
    if max(width, height) / min(width, height) > 200:
        width = height = max(width, height)
    rng = np.random.default_rng(seed)
    source = PILImage.fromarray(rng.integers(0, 256, (height, width, 4), dtype=np.uint8), "RGBA").convert(
        mode
    )
    decoded = PILImage.open(io.BytesIO(_png(prepare_image(source))))
    decoded.load()
    expected = official_pixels(source)
    assert decoded.mode == "RGB"
    assert decoded.size == expected.size
    assert np.array_equal(np.asarray(decoded), np.asarray(expected))
