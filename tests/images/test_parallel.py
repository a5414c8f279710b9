"""A call's images are prepared in parallel (no server): in the process's bounded pool, within the
call's decoding budget, and on the async path without blocking the event loop.

Pillow's resize is wrapped (the real one still runs) to see where and how many at once: a
barrier that only opens when two resizes run together proves parallelism without timing
anything; its timeout only bounds how long a failing run waits.
"""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from PIL import Image as PILImage

from qwen3_vllm_rerank.client import _inputs
from qwen3_vllm_rerank.images import Image
from qwen3_vllm_rerank.images._calls import DECODE_WORKERS, prepare_each
from qwen3_vllm_rerank.images._memory import ThreadDecodeBudget
from qwen3_vllm_rerank.images._preparing import PreparedImage, Settings, open_checked

_WAIT = 30.0  # seconds a failing run waits before the barrier breaks


def _png(seed: int) -> bytes:
    buffer = io.BytesIO()
    PILImage.effect_noise((320, 240), 40 + seed).convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def _spy_resize(monkeypatch: pytest.MonkeyPatch, before: Callable[[], None]) -> list[str]:
    """Runs ``before()`` at each resize, then the real resize; returns the threads they ran in."""
    real = PILImage.Image.resize
    threads: list[str] = []

    def resize(self: PILImage.Image, *args: Any, **kwargs: Any) -> PILImage.Image:
        threads.append(threading.current_thread().name)
        before()
        return real(self, *args, **kwargs)

    monkeypatch.setattr(PILImage.Image, "resize", resize)
    return threads


@pytest.mark.parametrize("path", ["sync", "async"])
def test_a_calls_images_are_resized_in_the_pool_several_at_once(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    together = threading.Barrier(min(2, DECODE_WORKERS), timeout=_WAIT)

    def before() -> None:
        together.wait()

    threads = _spy_resize(monkeypatch, before)
    request = _inputs.score_request("q", [_png(i) for i in range(4)], None)
    if path == "sync":
        _, documents = _inputs.prepare(request, None)
    else:
        _, documents = asyncio.run(_inputs.aprepare(request, None))
    assert [d.images[0].width for d in documents] == [320] * 4
    assert len(threads) == 4
    assert all(name.startswith("qwen3-image-decode") for name in threads), threads


async def test_the_async_path_never_blocks_the_loop_while_it_resizes(monkeypatch: pytest.MonkeyPatch) -> None:
    resizing, loop_ran = threading.Event(), threading.Event()

    def before() -> None:
        resizing.set()
        if not loop_ran.wait(_WAIT):  # only the event loop, running meanwhile, sets it
            raise RuntimeError("the event loop did not run while an image was resized")

    _spy_resize(monkeypatch, before)

    async def ticker() -> None:
        for _ in range(int(_WAIT * 100)):  # bounded
            if resizing.is_set():
                loop_ran.set()
                return
            await asyncio.sleep(0.01)

    request = _inputs.score_request("q", [_png(0)], None)
    (_, documents), _ = await asyncio.gather(_inputs.aprepare(request, None), ticker())
    assert documents[0].images[0].width == 320
    assert loop_ran.is_set()


def test_a_budget_smaller_than_the_call_still_prepares_every_image() -> None:
    pages = [_png(i) for i in range(5)]
    cost = open_checked(pages[0], "x", "x", Settings()).cost
    # Room for one image at a time: the sync path waits for the budget, never deadlocks.
    outcomes = prepare_each(
        [(f"documents[{i}]", Image(p)) for i, p in enumerate(pages)],
        None,
        Settings(decode_budget=cost + cost // 2),
    )
    assert all(isinstance(o, PreparedImage) and o.width == 320 for o in outcomes)


def test_the_sync_budget_never_holds_more_than_its_limit_at_once() -> None:
    """ThreadDecodeBudget: the costs of the work running at any moment sum to at most the limit."""
    budget = ThreadDecodeBudget(limit=100)
    lock = threading.Lock()
    running = [0, 0]  # now, most

    def work(cost: int) -> int:
        with lock:
            running[0] += cost
            running[1] = max(running[1], running[0])
        time.sleep(0.02)
        with lock:
            running[0] -= cost
        return cost

    costs = [60, 30, 50, 100, 10, 40, 70, 20, 90, 5]
    futures = [budget.submit(cost, work, cost) for cost in costs]
    assert [future.result(timeout=_WAIT) for future in futures] == costs
    assert 0 < running[1] <= 100
