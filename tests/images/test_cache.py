"""The prepared-image cache (no server): a page that comes back is not decoded, resized or encoded
again, the cache stays within its bytes, and a hit never skips a check.

Pillow's own entry points are counted through thin wrappers that call the real functions (a spy
on the dependency, not a stand-in for the code under test), as are the jobs sent to the decoding
sandbox (image files are decoded, resized and encoded in its worker processes, where this
process's Pillow is not called), and a hit is also seen directly: it returns the very
:class:`PreparedImage` object stored by the first call.
"""

from __future__ import annotations

import base64
import io
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image as PILImage
from PIL import ImageFile

from qwen3_vllm_rerank.client import _inputs
from qwen3_vllm_rerank.errors import InvalidInput
from qwen3_vllm_rerank.images import (
    IMAGE_CACHE_BYTES,
    Content,
    Image,
    PreparedImage,
    PreparedImageCache,
    UrlFetcher,
    aprepare_image,
    prepare_image,
    shared_image_cache,
)
from qwen3_vllm_rerank.images._sandbox import Sandbox
from tests.images.test_fetching import Site, _serve, body


def _png(colour: tuple[int, int, int], size: tuple[int, int] = (200, 150)) -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


class PillowCalls:
    """How often Pillow opened, decoded, resized and encoded an image in this process, and how
    many image files were sent to the sandbox (``"sandbox"``), since :meth:`reset`."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._wrap(monkeypatch, PILImage, "open", "open")
        self._wrap(monkeypatch, ImageFile.ImageFile, "load", "decode")
        self._wrap(monkeypatch, PILImage.Image, "resize", "resize")
        self._wrap(monkeypatch, PILImage.Image, "save", "encode")
        self._wrap(monkeypatch, Sandbox, "submit", "sandbox")

    def _wrap(self, monkeypatch: pytest.MonkeyPatch, owner: Any, name: str, what: str) -> None:
        real: Callable[..., Any] = getattr(owner, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.counts[what] += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(owner, name, counted)

    def reset(self) -> None:
        self.counts.clear()


@pytest.fixture
def pillow(monkeypatch: pytest.MonkeyPatch) -> PillowCalls:
    return PillowCalls(monkeypatch)


def _documents(tmp_path: Path) -> list[object]:
    """One document per kind of source that has bytes, and a PIL image; all distinct."""
    path = tmp_path / "page.png"
    path.write_bytes(_png((10, 20, 30)))
    data_url = "data:image/png;base64," + base64.b64encode(_png((40, 50, 60))).decode()
    return [
        Image(_png((70, 80, 90))),
        Content("a page", images=[path]),
        Image(data_url),
        Image(PILImage.new("RGB", (180, 120), (100, 110, 120))),
    ]


def _prepared(documents: list[Any]) -> list[PreparedImage]:
    return [image for document in documents for image in document.images]


@pytest.mark.parametrize("path", ["sync", "async"])
def test_a_second_call_over_the_same_pages_does_not_decode_resize_or_encode_them(
    path: str, tmp_path: Path, pillow: PillowCalls
) -> None:
    cache = PreparedImageCache()
    request = _inputs.score_request("q", _documents(tmp_path), None)
    pillow.reset()

    def call() -> list[PreparedImage]:
        if path == "sync":
            prepared = _inputs.prepare(request, None, cache)
        else:
            import asyncio

            prepared = asyncio.run(_inputs.aprepare(request, None, cache))
        return _prepared([prepared.documents[i] for i in sorted(prepared.documents)])

    first = call()
    # The three files in the sandbox's workers, the PIL image here.
    assert pillow.counts["sandbox"] == 3
    assert pillow.counts["resize"] == pillow.counts["encode"] == 1
    pillow.reset()
    second = call()
    # The three file sources are not even opened (nor sent to the sandbox); the PIL image is
    # hashed, never resized or encoded.
    assert pillow.counts == Counter(), pillow.counts
    assert all(a is b for a, b in zip(first, second, strict=True))
    info = cache.info()
    assert (info.hits, info.misses, info.entries, info.evictions) == (4, 4, 4, 0)
    assert info.bytes >= sum(len(p.url) for p in first)


def test_sync_and_async_share_one_cache(tmp_path: Path) -> None:
    import asyncio

    cache = PreparedImageCache()
    data = _png((1, 2, 3))
    stored = prepare_image(data, cache=cache)
    assert asyncio.run(aprepare_image(data, cache=cache)) is stored
    assert cache.info().hits == 1


def test_the_least_recently_used_page_is_evicted_to_stay_within_max_bytes() -> None:
    pages = [_png((i * 100, 0, 0)) for i in range(3)]
    sizes = [len(prepare_image(page).url) + 512 for page in pages]
    # Room for page 0 with either other page, not for all three.
    cache = PreparedImageCache(max_bytes=sizes[0] + max(sizes[1], sizes[2]))
    a = prepare_image(pages[0], cache=cache)
    prepare_image(pages[1], cache=cache)
    assert prepare_image(pages[0], cache=cache) is a  # page 0 is now the most recently used
    prepare_image(pages[2], cache=cache)  # evicts page 1, not page 0
    assert prepare_image(pages[0], cache=cache) is a
    info = cache.info()
    assert (info.entries, info.evictions) == (2, 1)
    assert info.bytes <= info.max_bytes
    assert prepare_image(pages[1], cache=cache) is not None  # prepared again: a miss
    assert cache.info().misses == 4


def test_zero_bytes_turns_the_cache_off(pillow: PillowCalls) -> None:
    cache = PreparedImageCache(max_bytes=0)
    data = _png((5, 5, 5))
    pillow.reset()
    prepare_image(data, cache=cache)
    prepare_image(data, cache=cache)
    assert pillow.counts["sandbox"] == 2
    assert cache.info().entries == 0
    assert cache.info().bytes == 0


def test_a_hit_never_lets_through_an_image_the_settings_refuse() -> None:
    cache = PreparedImageCache()
    data = _png((9, 9, 9), size=(400, 300))
    prepare_image(data, cache=cache)
    with pytest.raises(InvalidInput, match="over the limit of 1000"):
        prepare_image(data, cache=cache, max_image_pixels=1000)
    with pytest.raises(InvalidInput, match="over the limit of 100"):
        prepare_image(data, cache=cache, max_image_bytes=100)


def test_a_file_that_changed_is_prepared_again(tmp_path: Path) -> None:
    cache = PreparedImageCache()
    path = tmp_path / "page.png"
    path.write_bytes(_png((1, 1, 1)))
    before = prepare_image(path, cache=cache)
    path.write_bytes(_png((200, 1, 1)))
    after = prepare_image(path, cache=cache)
    assert after.sha256 != before.sha256
    assert cache.info().hits == 0


def test_a_pil_image_changed_in_place_is_prepared_again() -> None:
    cache = PreparedImageCache()
    image = PILImage.new("RGB", (100, 100), (0, 0, 0))
    before = prepare_image(image, cache=cache)
    assert prepare_image(image.copy(), cache=cache) is before  # same pixels, another object: a hit
    image.putpixel((50, 50), (255, 255, 255))
    assert prepare_image(image, cache=cache).sha256 != before.sha256


@pytest.fixture
def page_site() -> Iterator[Site]:
    yield from _serve(Site("127.0.0.1", {"/page.png": body(_png((3, 4, 5)))}))


def test_a_url_is_fetched_on_every_call_and_keyed_by_what_it_returned(page_site: Site) -> None:
    cache = PreparedImageCache()
    fetcher = UrlFetcher(allowed_hosts=("127.0.0.1",))
    url = page_site.url("/page.png")
    first = prepare_image(url, fetcher=fetcher, cache=cache)
    assert prepare_image(url, fetcher=fetcher, cache=cache) is first
    assert len(page_site.seen) == 2  # fetched again: the URL's content may have changed
    page_site.routes["/page.png"] = body(_png((250, 4, 5)))
    assert prepare_image(url, fetcher=fetcher, cache=cache).sha256 != first.sha256
    # A hit skips no check: the same URL through a fetcher that refuses it is refused.
    with pytest.raises(InvalidInput):
        prepare_image(url, fetcher=UrlFetcher(), cache=cache)


def test_threads_sharing_a_cache_agree_and_count_every_lookup() -> None:
    cache = PreparedImageCache()
    pages = [_png((i, i, i)) for i in range(6)]

    def work(i: int) -> str:
        return prepare_image(pages[i % len(pages)], cache=cache).url

    with ThreadPoolExecutor(4) as pool:
        urls = list(pool.map(work, range(48)))
    assert all(url == urls[i % len(pages)] for i, url in enumerate(urls))
    info = cache.info()
    assert info.hits + info.misses == 48
    assert info.entries == len(pages)


def test_the_client_option_names_a_cache() -> None:
    assert _inputs.image_cache(IMAGE_CACHE_BYTES) is shared_image_cache()
    assert _inputs.image_cache(0) is None
    own = _inputs.image_cache(1 << 20)
    assert own is not None
    assert own is not shared_image_cache()
    assert own.max_bytes == 1 << 20
    given_cache = PreparedImageCache(10)
    assert _inputs.image_cache(given_cache) is given_cache
    for bad in (-1, True, 1.5, "big"):
        with pytest.raises(InvalidInput, match="image_cache"):
            _inputs.image_cache(bad)
    with pytest.raises(InvalidInput, match="max_bytes"):
        PreparedImageCache(-1)


_OPS = st.lists(
    st.tuples(st.sampled_from(["put", "get"]), st.integers(0, 7), st.integers(0, 3000)), max_size=60
)


@settings(max_examples=60, deadline=None)
@given(ops=_OPS, max_bytes=st.integers(0, 6000))
def test_the_cache_behaves_as_an_lru_bounded_in_bytes(
    ops: list[tuple[str, int, int]], max_bytes: int
) -> None:
    """Any sequence of puts and gets leaves the entries an LRU model keeps within max_bytes, and
    the counters count every lookup and eviction."""
    cache = PreparedImageCache(max_bytes)
    model: OrderedDict[int, int] = OrderedDict()
    hits = misses = evictions = 0
    for op, key, length in ops:
        if op == "put":
            prepared = PreparedImage("x" * length, 32, 32, 32, 32, str(key))
            size = length + 512
            cache.put(key, prepared)
            if size <= max_bytes:
                model.pop(key, None)
                model[key] = size
                while sum(model.values()) > max_bytes:
                    model.popitem(last=False)
                    evictions += 1
        else:
            found = cache.get(key)
            assert (found is not None) == (key in model)
            if key in model:
                hits += 1
                model.move_to_end(key)
            else:
                misses += 1
    info = cache.info()
    assert (info.hits, info.misses, info.evictions) == (hits, misses, evictions)
    assert (info.entries, info.bytes) == (len(model), sum(model.values()))
    assert info.bytes <= max_bytes
