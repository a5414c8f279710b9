"""The plan's encoder cache on a real server: vLLM builds the plan's manager with the plan's size, and a
page that comes back under a new query skips the vision encoder.

vLLM exposes no encoder-cache counter (``vllm:mm_cache_*`` count the processor cache), so the hit is
seen by its time: the session's Qwen3-VL server (started with the plan's defaults; no extra server)
scores a few full-size pages under one query, then the same pages under other queries. With vLLM's
own sizing (one page on its CPU build) the repeat costs what the first pass did, processor cache
hits included (``benchmarks/results/vl_encoder_cache.md``: 0.93-1.07x); with the plan's 32 pages it
is several times cheaper there (3.0x on this server, 4 pages: 7.8 s, then 2.6 and 1.7 s). The bound here is
generous: 1.5x.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import time
from pathlib import Path

import pytest
from PIL import Image as PILImage

from qwen3_vllm_rerank import Image, RerankClient
from qwen3_vllm_rerank.serve._plan import (
    DEFAULT_IMAGE_CACHE_PAGES,
    ENCODER_CACHE_MANAGER,
    ENCODER_CACHE_PATH,
    ENCODER_CACHE_TOKENS_ENV,
    PAGE_EMBEDDINGS,
)
from tests.support.fixtures import Served, oldest_python

pytestmark = pytest.mark.vllm

#: A full-size page (32-aligned, within the official max_pixels: 32 x 56 = 1,792 embeddings, no resize).
_PAGE = (1024, 1792)
_PAGES = 4


def _page(seed: int) -> PILImage.Image:
    """A page no other test sends (its own seed): the server has not seen it."""
    rng = random.Random(seed)
    width, height = _PAGE
    return PILImage.frombytes("RGB", _PAGE, rng.randbytes(width * height * 3))


_BUILD = """
import json, sys
from vllm.utils.import_utils import resolve_obj_by_qualname
cls = resolve_obj_by_qualname(sys.argv[1])
build = getattr(cls, "create_manager", None)
manager = build(cache_size=2048, vllm_config=None) if build else cls(cache_size=2048)
print(json.dumps([cls.__mro__[1].__module__ + "." + cls.__mro__[1].__name__, manager.cache_size]))
"""


@pytest.mark.parametrize("version", ["newest", "oldest"])
def test_vllm_builds_the_plans_manager_with_the_plans_size(server_python: str, version: str) -> None:
    """What vLLM's scheduler does with ``--ec-manager-config`` (0.32: ``create_manager``; 0.27: the
    constructor), in the server's interpreter with the directory and variable ``VLLMServer`` sets."""
    python = server_python if version == "newest" else oldest_python()
    tokens = DEFAULT_IMAGE_CACHE_PAGES * PAGE_EMBEDDINGS
    env = {**os.environ, "PYTHONPATH": str(ENCODER_CACHE_PATH), ENCODER_CACHE_TOKENS_ENV: str(tokens)}
    out = subprocess.run(
        [python, "-c", _BUILD, ENCODER_CACHE_MANAGER],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        cwd=Path(ENCODER_CACHE_PATH).parent,
    )
    base, size = json.loads(out.stdout.strip().splitlines()[-1])
    assert base == "vllm.v1.core.encoder_cache_manager.EncoderCacheManager"
    assert size == tokens


def test_a_repeat_pass_skips_the_vision_encoder(vl_served: Served) -> None:
    plan = vl_served.server.plan
    assert plan is not None
    assert ENCODER_CACHE_MANAGER in " ".join(plan.args)
    assert ENCODER_CACHE_TOKENS_ENV in plan.env
    pages = [Image(_page(seed)) for seed in range(24_000, 24_000 + _PAGES)]
    seconds, scores = [], []
    with RerankClient(vl_served.base_url, timeout=600.0) as client:
        for query in ("a page of a quarterly report", "which page has a chart", "the revenue table"):
            start = time.perf_counter()
            scores.append(client.score(query, pages))
            seconds.append(time.perf_counter() - start)
        # The first query again: a repeat scores what the first pass scored, to float32 rounding (the
        # text side runs in differently composed steps when no image waits for the encoder).
        again = client.score("a page of a quarterly report", pages)
    assert again == pytest.approx(scores[0], abs=1e-5)
    repeat = max(seconds[1:])
    assert seconds[0] >= 1.5 * repeat, f"first pass {seconds[0]:.1f} s, repeats {seconds[1:]}"
