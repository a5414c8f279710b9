"""Memory per call: decoding is estimated from the header and bounded by the call's budget.

The peaks are measured in a fresh process (the RSS high-water mark of ``/proc/PID/status``:
Pillow allocates outside Python's allocator, so tracemalloc does not see it; ``ru_maxrss`` would
carry over the test runner's own peak across ``exec``), each against a bound, not a benchmark:
what the process added, plus the peaks of its decoding workers (image files are decoded in the
sandbox's processes), their interpreters included.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import pytest

from qwen3_vllm_rerank.images._decode_budget import DECODE_BUDGET_BYTES, DecodeBudget

# Writes a flat-colour PNG of any size without holding its pixels (a few hundred kB for
# 64 megapixels): the shape of a decompression bomb.
_FLAT_PNG = """
import struct, zlib

def flat_png(width, height, rgba):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    colour_type, pixel = (6, bytes(rgba)) if len(rgba) == 4 else (2, bytes(rgba))
    packer = zlib.compressobj(9)
    row = b"\\0" + pixel * width
    compressed = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return b"\\x89PNG\\r\\n\\x1a\\n" + chunk(b"IHDR", header) + chunk(b"IDAT", compressed) + chunk(b"IEND", b"")
"""


def _measure(body: str) -> dict[str, object]:
    """Runs ``body`` (which sets ``outcome``) in a fresh interpreter; the peak RSS it added
    (``own``), its decoding workers' (``worker``), and their sum (``peak``)."""
    script = (
        _FLAT_PNG
        + textwrap.dedent(
            """
            import asyncio, json
            import PIL.Image, PIL.PngImagePlugin
            from qwen3_vllm_rerank.errors import InvalidInput
            from qwen3_vllm_rerank.images import prepare_image
            from qwen3_vllm_rerank.client import _inputs
            from qwen3_vllm_rerank.images._sandbox import sandbox, shutdown_sandbox
            """
        )
        + textwrap.dedent(body)
        + textwrap.dedent(
            """
            def status(field, pid="self"):
                with open(f"/proc/{pid}/status") as lines:
                    found = [line.split()[1] for line in lines if line.startswith(field + ":")]
                return int(found[0]) * 1024

            with open("/proc/self/clear_refs", "w") as clear:
                clear.write("5")  # the high-water mark starts again from the RSS now
            base = status("VmRSS")
            try:
                outcome = run()
            except InvalidInput as error:
                outcome = "refused: " + str(error)
            own = status("VmHWM") - base
            worker = sum(status("VmHWM", pid) for pid in sandbox().pids())
            shutdown_sandbox()
            print(json.dumps({"outcome": outcome, "peak": own + worker, "own": own, "worker": worker}))
            """
        )
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_the_264_kb_rgba_png_that_took_736_mb_stays_within_the_budget() -> None:
    measured = _measure(
        """
        data = flat_png(8000, 8000, (30, 120, 200, 128))
        assert len(data) < 400_000, len(data)
        def run():
            prepare_image(data, label="documents[0]")
            return "prepared"
        """
    )
    assert measured["peak"] < DECODE_BUDGET_BYTES, measured  # type: ignore[operator]
    assert str(measured["outcome"]).startswith("refused: documents[0]: "), measured
    assert "MiB per call" in str(measured["outcome"])


def test_an_image_under_the_budget_is_decoded_within_it() -> None:
    measured = _measure(
        """
        data = flat_png(4000, 4000, (30, 120, 200, 128))
        def run():
            return prepare_image(data).width
        """
    )
    assert measured["outcome"] == 1344
    assert measured["peak"] < DECODE_BUDGET_BYTES, measured  # type: ignore[operator]
    assert measured["worker"] > measured["own"], measured  # type: ignore[operator]  # decoded there


@pytest.mark.heavy  # decodes four 25-megapixel images (about 9 s here)
def test_the_async_path_decodes_a_calls_images_within_the_budget_together() -> None:
    # Four images of ~180 MB each: all at once (as before) is ~1 GB; within 512 MiB, two.
    measured = _measure(
        """
        data = flat_png(5000, 5000, (30, 120, 200))
        def run():
            request = _inputs.score_request("q", [data] * 4, None)
            prepared = asyncio.run(_inputs.aprepare(request, None))
            return [prepared.documents[i].images[0].width for i in sorted(prepared.documents)]
        """
    )
    assert measured["outcome"] == [1344] * 4
    assert measured["peak"] < DECODE_BUDGET_BYTES, measured  # type: ignore[operator]


async def test_the_budget_never_holds_more_than_its_limit_at_once() -> None:
    """DecodeBudget: the costs of the work running at any moment sum to at most the limit."""
    budget = DecodeBudget(limit=100)
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
        done = await asyncio.gather(*(budget.run(cost, partial(pool.submit, work, cost)) for cost in costs))
    assert done == costs
    assert 0 < running[1] <= 100
