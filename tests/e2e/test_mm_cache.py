"""vLLM's multimodal processor cache hits when a page comes back under a new query.

The client sends an identical image as byte-identical data URLs (deterministic PNG, no metadata
chunks), so vLLM's processor cache (``--mm-processor-cache-gb``, 4 GiB by default, on for
pooling runners too) recognises it by its content hash and skips its image processor the second
time. These tests watch both ends: the request bodies the client sends (an httpx event hook) and
the server's own ``vllm:mm_cache_queries`` / ``vllm:mm_cache_hits`` counters on ``/metrics``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image as PILImage

from qwen3_vllm_rerank import Content, Image, RerankClient
from tests.support.fixtures import Served
from tests.support.mm_metrics import mm_cache_counters


def _noise(width: int, height: int, seed: int) -> PILImage.Image:
    """An image no other test sends (its own seed and size): the server has not seen it."""
    rng = random.Random(seed)
    return PILImage.frombytes("RGB", (width, height), rng.randbytes(width * height * 3))


def _image_urls(node: Any) -> Iterator[str]:
    """Every ``image_url.url`` in a request body, in order."""
    if isinstance(node, dict):
        if node.get("type") == "image_url":
            yield node["image_url"]["url"]
        for value in node.values():
            yield from _image_urls(value)
    elif isinstance(node, list):
        for value in node:
            yield from _image_urls(value)


class BodyLog:
    """The image data URLs of every request a client sends, per request (an httpx hook)."""

    def __init__(self) -> None:
        self.images: list[list[str]] = []
        self.paths: list[str] = []

    def on_request(self, request: httpx.Request) -> None:
        self.paths.append(request.url.path)
        body = json.loads(request.content) if request.content else None
        self.images.append(list(_image_urls(body)))


@pytest.fixture
def page(tmp_path: Path) -> tuple[Path, PILImage.Image]:
    """A page-sized image not aligned to 32 (so the client resizes it), as a file and in memory."""
    image = _noise(700, 911, seed=18_001)
    path = tmp_path / "page.png"
    image.save(path)
    return path, image


def test_a_page_under_a_new_query_hits_the_servers_multimodal_cache(
    vl_served: Served, page: tuple[Path, PILImage.Image]
) -> None:
    """Two calls with the same page (once as a file, once as the decoded image, under different
    queries): the server's cache misses it once, then hits it, and the two requests carried the
    very same bytes for it."""
    path, image = page
    log = BodyLog()
    base_url = vl_served.base_url
    before = mm_cache_counters(base_url)
    with (
        httpx.Client(event_hooks={"request": [log.on_request]}, timeout=300) as http,
        RerankClient(base_url, http_client=http) as client,
    ):
        first = client.score("a page of a quarterly report", [Image(path)])
        after_first = mm_cache_counters(base_url, before["queries"] + 1)
        second = client.score("which page has a chart", [Content("page 3", images=[Image(image)])])
        after_second = mm_cache_counters(base_url, after_first["queries"] + 1)

    sent = [urls for urls in log.images if urls]
    assert len(sent) == 2, f"expected two requests with one image each, got {log.paths} / {sent}"
    assert sent[0] == sent[1], "the same page was sent as different bytes: the server cannot reuse it"
    assert len(sent[0]) == 1
    assert sent[0][0].startswith("data:image/png;base64,")
    # First sight: one lookup, a miss. Second: one lookup, a hit.
    assert after_first["queries"] - before["queries"] == 1
    assert after_first["hits"] - before["hits"] == 0
    assert after_second["queries"] - after_first["queries"] == 1
    assert after_second["hits"] - after_first["hits"] == 1
    assert 0.0 <= first[0] <= 1.0
    assert 0.0 <= second[0] <= 1.0
