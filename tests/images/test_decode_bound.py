"""Untrusted pixels are decoded behind a hard bound (no server).

The CPU bomb of issue 23: a progressive JPEG whose one AC-refinement scan is repeated thousands
of times (5000x5000 grey, 3,000 scans in 273 kB: about 90 s to decode, linear in the scans).
The scan count refuses it before anything is decoded; past that check (a raised scan limit), the
sandbox stops it at its time bound, and one call's bombs never hold up another call's image.
Memory: the header estimate covers WebP and MPO as measured, and a worker over its memory bound
is stopped and replaced. Time bounds asserted here are generous "not stalled" bounds only.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import struct
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image as PILImage

from qwen3_vllm_rerank.client import _inputs
from qwen3_vllm_rerank.images import Image, PreparedImage
from qwen3_vllm_rerank.images._calls import DECODE_WORKERS, Outcome, aprepare_each, prepare_each
from qwen3_vllm_rerank.images._decode_budget import MAX_JPEG_SCANS, decode_cost, jpeg_scans
from qwen3_vllm_rerank.images._failures import UnusableImage
from qwen3_vllm_rerank.images._preparing import Settings, open_checked
from qwen3_vllm_rerank.images._sandbox import (
    DECODE_SECONDS,
    Job,
    Sandbox,
    _Process,
    shutdown_sandbox,
)

#: Where the bomb took 90 s: any bound here only proves "not stalled".
_NOT_STALLED = 20.0


def _scans(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each scan of a JPEG: its SOS segment and the entropy-coded data after it."""
    found, position = [], 2
    while data[position + 1] != 0xD9:
        (length,) = struct.unpack(">H", data[position + 2 : position + 4])
        end = position + 2 + length
        if data[position + 1] == 0xDA:
            while True:
                end = data.index(b"\xff", end)
                if data[end + 1] == 0 or 0xD0 <= data[end + 1] <= 0xD7:  # stuffing, restart
                    end += 2
                    continue
                break
            found.append((position, end))
        position = end
    return found


def progressive_bomb(scans: int, size: tuple[int, int] = (5000, 5000)) -> bytes:
    """A valid progressive JPEG of ``size`` (black, grey) whose last scan (an AC refinement) is
    repeated until the file holds ``scans`` scans: Pillow writes it, byte surgery repeats it."""
    buffer = io.BytesIO()
    PILImage.new("L", size).save(buffer, format="JPEG", progressive=True)
    data = buffer.getvalue()
    written = _scans(data)
    start, end = written[-1]
    return data[:start] + data[start:end] * (scans - len(written) + 1) + data[end:]


def _png(size: tuple[int, int] = (64, 64), seed: int = 0) -> bytes:
    buffer = io.BytesIO()
    PILImage.effect_noise(size, 40 + seed).convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def _spy(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str, seen: list[object]) -> None:
    real = getattr(owner, name)

    def spied(self: object, *args: Any, **kwargs: Any) -> Any:
        seen.append(args[-1])
        return real(self, *args, **kwargs)

    monkeypatch.setattr(owner, name, spied)


@pytest.fixture(scope="module")
def bomb() -> bytes:
    data = progressive_bomb(3000)
    assert jpeg_scans(data) == 3000
    assert len(data) < 300_000
    return data


@pytest.mark.parametrize("spelling", ["bytes", "data URL"])
def test_the_3000_scan_jpeg_is_refused_before_decoding_and_never_scored(
    spelling: str, bomb: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[object] = []
    _spy(monkeypatch, Sandbox, "submit", sent)
    spelled = bomb if spelling == "bytes" else "data:image/jpeg;base64," + base64.b64encode(bomb).decode()
    source = Image(spelled)
    request = _inputs.score_request("q", [source, _png()], None)
    started = time.monotonic()
    prepared = _inputs.prepare(request, None)
    assert time.monotonic() - started < _NOT_STALLED
    assert list(prepared.documents) == [1]  # the bomb is not scored
    reason = prepared.unusable[0]
    assert "3000 scans, over the limit of 100" in reason
    assert "re-encode it" in reason
    assert all(isinstance(job, Job) and job.size == (64, 64) for job in sent), sent  # only the PNG


def test_a_normal_progressive_jpeg_passes_the_scan_check() -> None:
    buffer = io.BytesIO()
    PILImage.effect_noise((300, 200), 50).convert("RGB").save(buffer, format="JPEG", progressive=True)
    assert 1 < jpeg_scans(buffer.getvalue()) <= 12 < MAX_JPEG_SCANS
    (outcome,) = prepare_each([("documents[0]", Image(buffer.getvalue()))], None)
    assert isinstance(outcome, PreparedImage)


def test_a_slow_image_past_the_scan_check_is_stopped_at_its_bound_and_its_worker_replaced(
    bomb: bytes,
) -> None:
    lowered = Settings(max_jpeg_scans=10_000, decode_seconds=1.0)
    started = time.monotonic()
    (outcome,) = prepare_each([("documents[0]", Image(bomb))], None, lowered)
    assert time.monotonic() - started < _NOT_STALLED
    assert isinstance(outcome, UnusableImage)
    assert str(outcome).startswith("documents[0]: image <")
    assert "took longer than 1 s to decode and prepare and was stopped" in outcome.reason
    (after,) = prepare_each([("documents[0]", Image(_png()))], None, lowered)
    assert isinstance(after, PreparedImage)
    assert after.width == 64


def test_a_bomb_in_one_call_does_not_delay_an_image_in_another_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """Call A sends more bombs than there are workers (the old pool: every other call waited for
    them, 97 s); call B's PNG is prepared while A's bombs are still running."""
    shutdown_sandbox()  # a fresh sandbox, so that A's bombs can be stopped at the end
    handed: list[object] = []
    _spy(monkeypatch, _Process, "ask", handed)
    slow = Settings(max_jpeg_scans=10_000, decode_seconds=300.0)
    # Small enough that the call's budget lets DECODE_WORKERS of them run together (~22 s each).
    small = progressive_bomb(3000, (2500, 2500))
    bombs = [(f"documents[{i}]", Image(small)) for i in range(DECODE_WORKERS + 1)]
    outcomes: list[Outcome] = []
    call_a = threading.Thread(target=lambda: outcomes.extend(prepare_each(bombs, None, slow)))
    call_a.start()
    try:
        for _ in range(int(_NOT_STALLED * 100)):  # bounded: until A's bombs reached their workers
            if len(handed) >= DECODE_WORKERS:
                break
            time.sleep(0.01)
        assert len(handed) == DECODE_WORKERS  # A holds as many workers as a call may
        started = time.monotonic()
        (other,) = asyncio.run(aprepare_each([("documents[0]", Image(_png()))], None))
        waited = time.monotonic() - started
        assert isinstance(other, PreparedImage)
        assert other.width == 64
        assert call_a.is_alive()  # B is done, A's bombs still run
        assert waited < _NOT_STALLED
    finally:
        shutdown_sandbox()  # stops A's bombs
        call_a.join(_NOT_STALLED)
    assert not call_a.is_alive()
    assert [type(o) for o in outcomes] == [UnusableImage] * len(bombs)


@pytest.mark.heavy  # decodes a large image to its memory bound in a worker process
@pytest.mark.skipif(
    sys.platform != "linux", reason="RLIMIT_AS is enforced by Linux (elsewhere: the time bound)"
)
def test_a_worker_over_its_memory_bound_is_stopped_and_replaced_and_the_next_image_works() -> None:
    pool = Sandbox(workers=1, processes=1)
    try:
        page = _png((2000, 2000))
        job = Job(page, (1344, 1344), 256 << 20, DECODE_SECONDS, "documents[0]", "<page>")
        first = pool.submit("a call", job).result(_NOT_STALLED)
        starved = Job(page, (1344, 1344), 1 << 20, DECODE_SECONDS, "documents[1]", "<page>")
        with pytest.raises(UnusableImage, match=r"^documents\[1\]: image <page> took more memory") as info:
            pool.submit("a call", starved).result(_NOT_STALLED)
        assert "and was stopped" in info.value.reason
        assert first.pid not in pool.pids()
        again = pool.submit("a call", job).result(_NOT_STALLED)
        assert again.pid != first.pid
        assert again.png == first.png
    finally:
        pool.close()


# Peak memory of decoding one file in a fresh interpreter, as a sandbox worker does (the RSS
# high-water mark of /proc/self/status over the RSS before: Pillow allocates outside Python's
# allocator), plus the file's bytes twice (the caller's and the worker's copy, which the estimate
# counts), against the header estimate.
_PEAK = textwrap.dedent(
    """
    import json, sys
    from qwen3_vllm_rerank.images._preparing import Settings, open_checked, render
    def status(field):
        with open("/proc/self/status") as lines:
            return int([line.split()[1] for line in lines if line.startswith(field + ":")][0]) * 1024
    data = sys.stdin.buffer.read()
    opened = open_checked(data, "x", "x", Settings(decode_budget=1 << 40))
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")
    before = status("VmRSS")
    render(data, opened.size, "x", "x")
    peak = status("VmHWM") - before + 2 * len(data)
    print(json.dumps({"format": opened.image.format, "cost": opened.cost, "peak": peak}))
    """
)


def _photo(size: tuple[int, int], mode: str) -> PILImage.Image:
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (size[1] // 8, size[0] // 8, 4), dtype=np.uint8)
    return PILImage.fromarray(small, "RGBA").resize(size, PILImage.Resampling.BILINEAR).convert(mode)


@pytest.mark.parametrize(
    ("kind", "mode", "options"),
    [
        ("WEBP", "RGB", {}),
        ("WEBP", "RGBA", {}),
        ("WEBP", "RGB", {"lossless": True, "method": 0}),
        ("MPO", "RGB", {"save_all": True}),
    ],
)
@pytest.mark.heavy  # decodes 16-megapixel images in fresh processes
@pytest.mark.skipif(sys.platform != "linux", reason="reads the RSS high-water mark in /proc")
def test_webp_and_mpo_estimates_cover_what_decoding_takes(
    kind: str, mode: str, options: dict[str, Any]
) -> None:
    image = _photo((2400, 2400), mode)
    buffer = io.BytesIO()
    if kind == "MPO":
        options = {**options, "append_images": [image]}
    image.save(buffer, format=kind, **options)
    done = subprocess.run(
        [sys.executable, "-c", _PEAK], input=buffer.getvalue(), capture_output=True, timeout=120, check=True
    )
    measured = json.loads(done.stdout.decode().strip().splitlines()[-1])
    assert measured["format"] == kind  # a JPEG with a second image opens as MPO
    assert measured["peak"] > 2400 * 2400 * 4  # it did decode
    assert measured["cost"] >= measured["peak"], measured


def test_webp_and_mpo_estimates_per_pixel() -> None:
    """WebP decodes through a buffer of ~16 B/px (measured 16.2 lossy, 17.5 lossless); MPO's first
    frame is a JPEG and costs what the JPEG does."""
    webp, png = (decode_cost(1000, 1000, "RGB", kind, 32, 32, 0) for kind in ("WEBP", "PNG"))
    assert webp - png >= 16 * 1000 * 1000 - 4 * 1000 * 1000  # 16 B/px decoding, not the 4 stored
    assert decode_cost(1000, 1000, "RGB", "MPO", 32, 32, 0) == decode_cost(
        1000, 1000, "RGB", "JPEG", 32, 32, 0
    )


def _seed_files() -> list[bytes]:
    seeds = []
    for kind, mode, options in [
        ("PNG", "RGBA", {}),
        ("PNG", "P", {}),
        ("JPEG", "RGB", {"progressive": True}),
        ("JPEG", "L", {}),
        ("GIF", "P", {}),
        ("WEBP", "RGB", {}),
        ("TIFF", "RGB", {}),
        ("BMP", "RGB", {}),
    ]:
        buffer = io.BytesIO()
        _photo((48, 40), mode).save(buffer, format=kind, **options)
        seeds.append(buffer.getvalue())
    return seeds


_SEEDS = _seed_files()
_BOUND = 5.0  # seconds: the lowered sandbox bound of the property below


@st.composite
def _hostile(draw: st.DrawFn) -> bytes:
    """A small image file, maybe with a scan repeated (up to 5x the limit), maybe mutated."""
    if draw(st.booleans()):
        scans = draw(st.integers(2, 5 * MAX_JPEG_SCANS))
        side = draw(st.integers(8, 400))
        data = bytearray(progressive_bomb(scans, (side, draw(st.integers(8, 400)))))
    else:
        data = bytearray(draw(st.sampled_from(_SEEDS)))
    for _ in range(draw(st.integers(0, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=_hostile())
def test_no_generated_image_costs_more_than_the_bound(data: bytes) -> None:
    """Any generated file is prepared or a typed UnusableImage, within the sandbox's time bound,
    and never over the call's budget by its estimate."""
    chosen = Settings(decode_seconds=_BOUND)
    started = time.monotonic()
    (outcome,) = prepare_each([("documents[0]", Image(data))], None, chosen)
    assert time.monotonic() - started < _BOUND + _NOT_STALLED
    if isinstance(outcome, UnusableImage):
        assert str(outcome).startswith("documents[0]: ")
        return
    assert outcome.url.startswith("data:image/png;base64,")
    opened = open_checked(data, "x", "x", chosen)
    assert opened.cost <= chosen.decode_budget
    assert jpeg_scans(data) <= MAX_JPEG_SCANS or opened.image.format not in ("JPEG", "MPO")
