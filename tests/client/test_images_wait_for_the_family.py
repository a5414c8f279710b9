"""Images are neither fetched nor decoded before the server's family is known: a text-only server
refuses them before the client touches the network or a file for them (issue 17, item 6)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image as PILImage

from qwen3_vllm_rerank import AsyncRerankClient, Content, Image, InvalidInput, RerankClient, UrlFetcher
from tests.support.fixtures import Served
from tests.support.recording import ImageSite

TEXT_ONLY = r"is a text-only Qwen3-Reranker"


def _png() -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", (64, 64), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def image_site() -> Iterator[ImageSite]:
    site = ImageSite(_png())
    yield site
    site.close()


def _fetcher() -> UrlFetcher:
    # The site is on loopback: allow-listed, so fetching it would succeed if it were attempted.
    return UrlFetcher(timeout=5, allowed_hosts=("127.0.0.1",))


def _images(site: ImageSite, tmp_path: Path) -> list[object]:
    """Images whose preparation would touch the network, fail on a file, or fail to decode."""
    return [
        Image(site.url),
        Content("a caption", images=[site.url]),
        Image(tmp_path / "missing.png"),
        Image(b"not an image at all"),
    ]


def test_a_text_server_refuses_images_before_fetching_or_decoding_them(
    served: Served, image_site: ImageSite, tmp_path: Path
) -> None:
    with RerankClient(served.base_url, image_fetcher=_fetcher()) as client:
        for image in _images(image_site, tmp_path):
            with pytest.raises(InvalidInput, match=rf"documents\[1\] has images, but .*{TEXT_ONLY}"):
                client.score("a red square", ["text", image])
        with pytest.raises(InvalidInput, match=rf"query has images, but .*{TEXT_ONLY}"):
            client.score(Image(image_site.url), ["text"])
    assert image_site.hits == 0


async def test_the_async_client_refuses_them_before_fetching_too(
    served: Served, image_site: ImageSite, tmp_path: Path
) -> None:
    async with AsyncRerankClient(served.base_url, image_fetcher=_fetcher()) as client:
        for image in _images(image_site, tmp_path):
            with pytest.raises(InvalidInput, match=rf"documents\[1\] has images, but .*{TEXT_ONLY}"):
                await client.score("a red square", ["text", image])
    assert image_site.hits == 0
