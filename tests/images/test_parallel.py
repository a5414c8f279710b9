"""A call's images are prepared in parallel (no server): image files in the sandbox's worker
processes, PIL images in the process's bounded thread pool, within the call's decoding budget, and
on the async path without blocking the event loop.

Pillow's resize (for PIL images, in this process) and the sandbox's hand-over of a job to its
worker process (for files) are wrapped (the real ones still run) to see where and how many at
once: a barrier that only opens when two run together proves parallelism without timing
anything; its timeout only bounds how long a failing run waits.
"""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import pytest
from PIL import Image as PILImage

from qwen3_vllm_rerank.client import _inputs
from qwen3_vllm_rerank.images import Image
from qwen3_vllm_rerank.images._calls import DECODE_WORKERS, prepare_each
from qwen3_vllm_rerank.images._decode_budget import ThreadDecodeBudget
from qwen3_vllm_rerank.images._preparing import PreparedImage, Settings, open_checked
from qwen3_vllm_rerank.images._sandbox import _Process

_WAIT = 30.0  # seconds a failing run waits before the barrier breaks


def _pil(seed: int) -> PILImage.Image:
    return PILImage.effect_noise((320, 240), 40 + seed).convert("RGB")


def _png(seed: int) -> bytes:
    buffer = io.BytesIO()
    _pil(seed).save(buffer, format="PNG")
    return buffer.getvalue()


def _spy(monkeypatch: pytest.MonkeyPatch, kind: str, before: Callable[[], None]) -> list[str]:
    """Runs ``before()`` where an image of ``kind`` is worked on (a PIL image's resize here, a
    file's hand-over to its worker process), then the real call; returns the threads they ran in."""
    owner: Any = PILImage.Image if kind == "pil" else _Process
    name = "resize" if kind == "pil" else "ask"
    real = getattr(owner, name)
    threads: list[str] = []

    def spied(self: object, *args: Any, **kwargs: Any) -> Any:
        threads.append(threading.current_thread().name)
        before()
        return real(self, *args, **kwargs)

    monkeypatch.setattr(owner, name, spied)
    return threads


def _sources(kind: str) -> list[object]:
    return [_pil(i) if kind == "pil" else _png(i) for i in range(4)]


def _documents(prepared: _inputs.Prepared) -> list[_inputs.Item]:
    return [prepared.documents[i] for i in sorted(prepared.documents)]


@pytest.mark.parametrize("path", ["sync", "async"])
@pytest.mark.parametrize("kind", ["pil", "file"])
def test_a_calls_images_are_prepared_several_at_once(
    path: str, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    together = threading.Barrier(min(2, DECODE_WORKERS), timeout=_WAIT)

    def before() -> None:
        together.wait()

    threads = _spy(monkeypatch, kind, before)
    request = _inputs.score_request("q", _sources(kind), None)
    if path == "sync":
        prepared = _inputs.prepare(request, None)
    else:
        prepared = asyncio.run(_inputs.aprepare(request, None))
    assert [d.images[0].width for d in _documents(prepared)] == [320] * 4
    assert len(threads) == 4
    prefix = "qwen3-image-decode" if kind == "pil" else "qwen3-image-sandbox"
    assert all(name.startswith(prefix) for name in threads), threads


def test_image_files_are_never_decoded_in_this_process(monkeypatch: pytest.MonkeyPatch) -> None:
    resized = _spy(monkeypatch, "pil", lambda: None)
    handed = _spy(monkeypatch, "file", lambda: None)
    outcomes = prepare_each([(f"documents[{i}]", Image(_png(i))) for i in range(3)], None)
    assert all(isinstance(o, PreparedImage) and o.width == 320 for o in outcomes)
    assert resized == []
    assert len(handed) == 3


@pytest.mark.parametrize("kind", ["pil", "file"])
async def test_the_async_path_never_blocks_the_loop_while_it_prepares(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    working, loop_ran = threading.Event(), threading.Event()

    def before() -> None:
        working.set()
        if not loop_ran.wait(_WAIT):  # only the event loop, running meanwhile, sets it
            raise RuntimeError("the event loop did not run while an image was prepared")

    _spy(monkeypatch, kind, before)

    async def ticker() -> None:
        for _ in range(int(_WAIT * 100)):  # bounded
            if working.is_set():
                loop_ran.set()
                return
            await asyncio.sleep(0.01)

    request = _inputs.score_request("q", _sources(kind)[:1], None)
    prepared, _ = await asyncio.gather(_inputs.aprepare(request, None), ticker())
    assert _documents(prepared)[0].images[0].width == 320
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
    with ThreadPoolExecutor(4) as pool:
        futures = [budget.submit(cost, partial(pool.submit, work, cost)) for cost in costs]
        results = [future.result(timeout=_WAIT) for future in futures]
    assert results == costs
    assert 0 < running[1] <= 100
