"""Image preparation (pure, no server): the official pixels, token counts and hostile input."""

from __future__ import annotations

import base64
import io
import json
import struct
import threading
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from qwen3_vllm_rerank import prompt
from qwen3_vllm_rerank.errors import InvalidInput
from qwen3_vllm_rerank.images import Content, Image, PreparedImage, UrlFetcher, aprepare_image, prepare_image
from qwen3_vllm_rerank.images._geometry import MAX_PIXELS, MIN_PIXELS, image_tokens, smart_resize
from tests.support.reference_vl import official_pixels

# (width, height) -> (resized height, resized width) as qwen_vl_utils 0.0.14's smart_resize gives
# it with the reranker's settings (factor 32, min_pixels 4096, max_pixels 1843200); None: refused.
OFFICIAL_SIZES: dict[tuple[int, int], tuple[int, int] | None] = {
    (1, 1): (64, 64),
    (20, 30): (96, 64),
    (30, 20): (64, 96),
    (32, 32): (64, 64),
    (64, 64): (64, 64),
    (63, 65): (64, 64),
    (333, 517): (512, 320),
    (517, 333): (320, 512),
    (3000, 2000): (1088, 1632),
    (2000, 3000): (1632, 1088),
    (1357, 1357): (1344, 1344),
    (1920, 1080): (992, 1792),
    (4096, 4096): (1344, 1344),
    (8000, 6000): (1152, 1536),
    (100, 1): (32, 640),
    (1, 100): (640, 32),
    (199, 1): (32, 192),
    (200, 1): (32, 192),
    (1000, 5): (32, 992),
    (47, 48): (96, 64),
    (1376, 1344): (1312, 1344),
    (1344, 1376): (1344, 1312),
    (1400, 1400): (1344, 1344),
    (10000, 100): (96, 9984),
    (201, 1): None,
    (1, 500): None,
}


def noise(width: int, height: int, mode: str = "RGB", seed: int = 0) -> PILImage.Image:
    rng = np.random.default_rng(seed)
    return PILImage.fromarray(rng.integers(0, 256, (height, width, 4), dtype=np.uint8), "RGBA").convert(mode)


def png_bytes(image: PILImage.Image, fmt: str = "PNG", **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def decode(prepared: PreparedImage) -> PILImage.Image:
    header, _, payload = prepared.url.partition(",")
    assert header == "data:image/png;base64"
    return PILImage.open(io.BytesIO(base64.b64decode(payload)))


def same_pixels(a: PILImage.Image, b: PILImage.Image) -> bool:
    return a.size == b.size and a.mode == b.mode and np.array_equal(np.asarray(a), np.asarray(b))


# --- the official algorithm --------------------------------------------------------------


@pytest.mark.parametrize(("size", "expected"), sorted(OFFICIAL_SIZES.items()))
def test_smart_resize_matches_official(size: tuple[int, int], expected: tuple[int, int] | None) -> None:
    width, height = size
    if expected is None:
        with pytest.raises(ValueError, match="aspect ratio"):
            smart_resize(height, width)
    else:
        assert smart_resize(height, width) == expected


def test_smart_resize_invariants_over_many_sizes() -> None:
    rng = np.random.default_rng(7)
    sizes = [(int(w), int(h)) for w, h in rng.integers(1, 6000, size=(2000, 2))]
    sizes += [(w, h) for w in range(1, 70, 3) for h in range(1, 70, 5)]
    for width, height in sizes:
        if max(width, height) / min(width, height) > 200:
            continue
        new_h, new_w = smart_resize(height, width)
        assert new_h % 32 == 0
        assert new_w % 32 == 0
        assert new_h * new_w <= MAX_PIXELS
        assert new_h * new_w >= MIN_PIXELS
        # An already-prepared size is a fixed point: the server's own resize leaves it alone.
        assert smart_resize(new_h, new_w) == (new_h, new_w)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P", "LA", "CMYK", "I;16"])
@pytest.mark.parametrize("size", [(20, 30), (333, 517), (64, 96), (1, 1), (1500, 1400)])
def test_pixels_equal_the_official_conversion_and_resize(mode: str, size: tuple[int, int]) -> None:
    source = (
        noise(*size, mode="RGBA").convert(mode) if mode != "I;16" else noise(*size, mode="L").convert("I;16")
    )
    prepared = prepare_image(source)
    assert same_pixels(decode(prepared), official_pixels(source))
    assert (prepared.width, prepared.height) == decode(prepared).size
    assert (prepared.original_width, prepared.original_height) == size


def test_rgba_is_composited_on_white() -> None:
    transparent = PILImage.new("RGBA", (64, 64), (10, 20, 30, 0))
    assert decode(prepare_image(transparent)).getpixel((5, 5)) == (255, 255, 255)


def test_every_source_kind_gives_the_same_pixels(tmp_path: Path) -> None:
    image = noise(333, 517)
    data = png_bytes(image)
    path = tmp_path / "page.png"
    path.write_bytes(data)
    data_url = "data:image/png;base64," + base64.b64encode(data).decode()
    fetcher = UrlFetcher(file_roots=(str(tmp_path),))
    prepared = [
        prepare_image(Image(source), fetcher=fetcher)
        for source in (
            image,
            data,
            bytearray(data),
            memoryview(data),
            str(path),
            path,
            f"file://{path}",
            data_url,
        )
    ]
    assert len({p.url for p in prepared}) == 1
    assert len({p.sha256 for p in prepared}) == 1


def test_jpeg_decodes_like_pil() -> None:
    data = png_bytes(noise(200, 150), "JPEG", quality=80)
    assert same_pixels(decode(prepare_image(data)), official_pixels(PILImage.open(io.BytesIO(data))))


# --- token counts ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "tokens"), [((64, 64), 4), ((20, 30), 6), ((333, 517), 160), ((3000, 2000), 1734)]
)
def test_token_counts(size: tuple[int, int], tokens: int) -> None:
    prepared = prepare_image(noise(*size))
    assert prepared.tokens == tokens == image_tokens(prepared.height, prepared.width)
    assert prepared.prompt_tokens == tokens + 2


def test_token_count_is_what_the_checkpoint_processor_expands_to(tmp_path: Path) -> None:
    """The image processor of a real Qwen3-VL checkpoint makes grid_thw.prod() / 4 tokens."""
    from transformers import Qwen2VLImageProcessor

    from qwen3_vllm_rerank.testing._fixture_vl import _IMAGE_PROCESSOR

    (tmp_path / "preprocessor_config.json").write_text(json.dumps(_IMAGE_PROCESSOR))
    processor = Qwen2VLImageProcessor.from_pretrained(tmp_path)
    for size in [(64, 64), (333, 517), (3000, 2000), (1, 1), (1000, 5)]:
        prepared = prepare_image(noise(*size))
        grid = processor(images=[decode(prepared).convert("RGB")], do_resize=False, return_tensors="np")[
            "image_grid_thw"
        ]
        assert int(grid.prod()) // 4 == prepared.tokens


# --- input types ----------------------------------------------------------------------


def test_content_wraps_bare_sources_and_is_frozen(tmp_path: Path) -> None:
    content = Content("caption", images=[str(tmp_path / "a.png"), Image(b"x")])
    assert all(isinstance(image, Image) for image in content.images)
    assert isinstance(content.images, tuple)
    single = Content(images=Image(b"x"))  # type: ignore[arg-type]
    assert len(single.images) == 1
    with pytest.raises(AttributeError):
        content.text = "other"  # type: ignore[misc]


@pytest.mark.parametrize("bad", [12, None, 3.5, ["a.png"], {"url": "x"}])
def test_image_refuses_other_types(bad: object) -> None:
    with pytest.raises(InvalidInput, match="Image source must be"):
        Image(bad)  # type: ignore[arg-type]


def test_content_refuses_non_str_text() -> None:
    with pytest.raises(InvalidInput, match=r"Content\.text must be a str"):
        Content(b"bytes")  # type: ignore[arg-type]


def test_reprs_stay_short() -> None:
    big = b"\x89PNG" + b"0" * 5_000_000
    assert len(repr(Image(big))) < 60
    assert len(repr(Image("data:image/png;base64," + "A" * 1_000_000))) < 120
    assert len(repr(Content("t" * 10_000, images=[big]))) < 200


@pytest.mark.parametrize(
    ("source", "kind"),
    [
        ("a.png", "path"),
        (Path("a.png"), "path"),
        (b"x", "bytes"),
        ("data:image/png;base64,AA", "data-url"),
        ("HTTPS://example.com/a.png", "url"),
        ("http://h/a.png", "url"),
        ("file:///tmp/a.png", "file-url"),
        ("FILE:/tmp/a.png", "file-url"),
        ("C://a.png", "path"),
    ],
)
def test_kind(source: object, kind: str) -> None:
    assert Image(source).kind == kind  # type: ignore[arg-type]


# --- hostile input ----------------------------------------------------------------------


def refused(source: object, match: str, **kwargs: object) -> InvalidInput:
    with pytest.raises(InvalidInput, match=match) as info:
        prepare_image(source, label="documents[3]", **kwargs)  # type: ignore[arg-type]
    assert "documents[3]" in str(info.value)
    return info.value


def test_corrupt_bytes() -> None:
    data = png_bytes(noise(64, 64))
    refused(data[: len(data) // 2], "corrupt or truncated")
    refused(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, "not an image|corrupt")


def test_non_image_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("just text, not an image")
    refused(str(path), "cannot read image file")  # a path says one thing, whatever is wrong
    refused(b"%PDF-1.7 not an image", "not an image")


def test_unsupported_format_is_not_even_opened() -> None:
    refused(png_bytes(noise(32, 32), "PPM"), "not an image")


def test_missing_path_and_directory(tmp_path: Path) -> None:
    missing = refused(str(tmp_path / "nope.png"), "cannot read image file")
    assert "nope.png" in str(missing)
    directory = refused(tmp_path, "cannot read image file")
    assert str(directory).replace(str(tmp_path), "X") == str(missing).replace(str(tmp_path / "nope.png"), "X")


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` (a decompression bomb's signature)."""
    data = bytearray(png_bytes(PILImage.new("L", (1, 1))))
    # IHDR: 8-byte signature, 4-byte length, b"IHDR", then width and height; its CRC follows the data.
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def test_huge_decoded_image_is_refused_from_its_header_without_decoding() -> None:
    # 90 and 400 megapixels claimed by ~70-byte files: refused before any decoding.
    for width, height in [(10000, 9000), (20000, 20000)]:
        refused(png_claiming(width, height), "over the limit")
    error = refused(png_claiming(10000, 9000), "pixels, over the limit of 64000000")
    assert "10000x9000" in str(error)
    refused(PILImage.new("L", (9000, 8000)), "pixels, over the limit of 64000000")


@pytest.mark.heavy  # decodes and resizes a 50-megapixel image (seconds)
def test_fifty_megapixel_image_gets_the_official_pixels() -> None:
    image = PILImage.new("RGB", (8660, 5774), (30, 120, 200))
    prepared = prepare_image(png_bytes(image))
    assert (prepared.height, prepared.width) == smart_resize(5774, 8660) == (1088, 1632)
    assert decode(prepared).getpixel((100, 100)) == (30, 120, 200)


def test_byte_caps(tmp_path: Path) -> None:
    data = png_bytes(noise(256, 256))
    refused(data, "over the limit", max_image_bytes=1000)
    path = tmp_path / "a.png"
    path.write_bytes(data)
    refused(path, "cannot read image file", max_image_bytes=1000)
    refused(
        "data:image/png;base64," + base64.b64encode(data).decode(), "over the limit", max_image_bytes=1000
    )


def test_huge_data_url_is_refused_before_decoding() -> None:
    url = "data:image/png;base64," + "A" * (90 * 1024 * 1024)
    refused(url, "data URL of .* characters is over the limit")


@pytest.mark.parametrize(
    "url",
    ["data:text/plain;base64,aGVsbG8=", "data:image/png,rawbytes", "data:image/png;base64,!!!notbase64"],
)
def test_malformed_data_urls(url: str) -> None:
    refused(url, "data URL|base64")


def test_one_by_one_image_is_scored_like_the_official_code() -> None:
    prepared = prepare_image(png_bytes(PILImage.new("RGB", (1, 1), (1, 2, 3))))
    assert (prepared.width, prepared.height) == (64, 64)
    assert decode(prepared).getpixel((10, 10)) == (1, 2, 3)


def test_extreme_aspect_ratio_is_refused() -> None:
    refused(PILImage.new("RGB", (5000, 10)), "aspect ratio")


def test_animated_gif_uses_its_first_frame() -> None:
    frames = [PILImage.new("RGB", (64, 48), color) for color in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    prepared = prepare_image(buffer.getvalue())
    assert decode(prepared).getpixel((5, 5)) == (255, 0, 0)
    assert same_pixels(decode(prepared), official_pixels(PILImage.open(io.BytesIO(buffer.getvalue()))))


def test_user_pil_image_is_not_modified() -> None:
    image = noise(100, 80, mode="RGBA")
    before = image.tobytes()
    prepare_image(image)
    assert image.mode == "RGBA"
    assert image.size == (100, 80)
    assert image.tobytes() == before


# --- URLs -------------------------------------------------------------------------------


def test_urls_are_refused_by_default_with_the_way_to_opt_in() -> None:
    error = refused("https://example.com/cat.png", "not fetched by default")
    assert "UrlFetcher" in str(error)


class _Handler(BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        if self.path == "/slow":
            self.send_response(200)
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            for _ in range(100):
                self.wfile.write(b"x" * 100)
                self.wfile.flush()
                threading.Event().wait(0.1)
            return
        if self.path == "/missing":
            self.send_response(404)
            self.end_headers()
            return
        body = self.body if self.path == "/image.png" else b"y" * 5_000_000
        self.send_response(200)
        if self.path != "/undeclared":
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that hangs up mid-body (the size and time caps) is the point of those tests


@pytest.fixture(scope="module")
def image_server() -> Iterator[str]:
    _Handler.body = png_bytes(noise(333, 517))
    server = _QuietServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


LOCAL = UrlFetcher(allowed_hosts=("127.0.0.1",))


def test_opted_in_fetch_gives_the_same_pixels(image_server: str) -> None:
    prepared = prepare_image(f"{image_server}/image.png", fetcher=LOCAL)
    assert prepared.url == prepare_image(_Handler.body).url


async def test_opted_in_async_fetch(image_server: str) -> None:
    prepared = await aprepare_image(f"{image_server}/image.png", fetcher=LOCAL)
    assert prepared.url == prepare_image(_Handler.body).url
    with pytest.raises(InvalidInput, match="not fetched by default"):
        await aprepare_image(f"{image_server}/image.png")


@pytest.mark.parametrize("path", ["/big", "/undeclared"])
def test_fetch_size_cap(image_server: str, path: str) -> None:
    fetcher = UrlFetcher(max_bytes=1_000_000, allowed_hosts=("127.0.0.1",))
    refused(f"{image_server}{path}", "could not be fetched", fetcher=fetcher)


def test_fetch_total_timeout(image_server: str) -> None:
    refused(
        f"{image_server}/slow",
        "could not be fetched",
        fetcher=UrlFetcher(timeout=1.0, allowed_hosts=("127.0.0.1",)),
    )


async def test_async_fetch_total_timeout(image_server: str) -> None:
    fetcher = UrlFetcher(timeout=1.0, allowed_hosts=("127.0.0.1",))
    with pytest.raises(InvalidInput, match="could not be fetched"):
        await aprepare_image(f"{image_server}/slow", label="documents[3]", fetcher=fetcher)


def test_fetch_http_error(image_server: str) -> None:
    refused(f"{image_server}/missing", "could not be fetched", fetcher=LOCAL)


# --- the VL prompt ------------------------------------------------------------------------


def test_vl_prompt_is_the_official_one() -> None:
    from jinja2 import Template

    from qwen3_vllm_rerank.testing import QWEN3_VL_CHAT_TEMPLATE
    from tests.support.reference_vl import Side, messages

    image = noise(8, 8)
    for q_text, q_images, d_text, d_images, instruction in [
        ("q", 0, "d", 0, None),
        ("", 1, "d", 2, "Custom."),
        ("what", 1, "", 1, None),
        ("", 0, "", 0, None),
        ("q", 0, "", 0, None),
    ]:
        rendered = Template(QWEN3_VL_CHAT_TEMPLATE).render(
            messages=messages(
                Side(q_text or None, [image] * q_images),
                Side(d_text or None, [image] * d_images),
                instruction,
            ),
            add_generation_prompt=True,
        )
        ours = prompt.format_vl_prompt(
            q_text, d_text, instruction, query_images=q_images, document_images=d_images
        )
        assert ours == rendered


def test_vl_score_params() -> None:
    assert prompt.vl_query_param("q") == prompt.format_vl_query("q")
    assert prompt.vl_document_param("d") == prompt.format_vl_document("d")
    param = prompt.vl_document_param("d", ["data:image/png;base64,AA", "data:image/png;base64,BB"])
    assert isinstance(param, dict)
    parts = param["content"]
    assert [p["type"] for p in parts] == ["image_url", "image_url", "text"]
    assert parts[1]["image_url"]["url"].endswith("BB")
    assert parts[2]["text"].count(prompt.IMAGE_PLACEHOLDER) == 2
    query = prompt.vl_query_param("q", ["data:image/png;base64,AA"], "Find.")
    assert isinstance(query, dict)
    assert query["content"][-1]["text"].endswith(f"<Query>:{prompt.IMAGE_PLACEHOLDER}q\n<Document>:")
