"""The start-up self-check: does a freshly started server score like a Qwen3 reranker?

Two different documents must get two different scores, neither exactly 0.5 (the signature of a
classifier head zeroed by the original-model overrides on a converted untied checkpoint). A Qwen3-VL
server is checked with images, sent inline as small generated PNGs exactly as the client sends
prepared images, and must also keep those images as they are: a 64x64 and a 128x128 image must cost 4
and 16 image tokens (the official reranker's resize leaves both alone; a server with the checkpoint's
default processor limits upsizes both to 256x256 and would score other pixels than the reference).
"""

from __future__ import annotations

import base64
import logging
import struct
import zlib
from collections.abc import Sequence
from typing import Any

import httpx

from ..errors import Qwen3RerankError, ServerStartError
from ..images._geometry import IMAGE_FACTOR
from ..prompt import vl_document_param, vl_query_param

__all__ = ["check_image_scores", "check_text_scores"]

logger = logging.getLogger("qwen3_vllm_rerank.server")

QUERY = "What is the capital of France?"
DOCUMENTS = ("Paris is the capital and largest city of France.", "Bananas are rich in potassium.")
IMAGE_QUERY = "a red square"
_RED, _BLUE = (220, 30, 30), (30, 30, 220)
#: Sides of the self-check's images, in units of 32 pixels: (side / 32)^2 image tokens each.
_SMALL, _LARGE = 2, 4


def check_text_scores(base_url: str, *, model: str, api_key: str | None) -> list[float]:
    """Score two known text pairs through the client; raise :class:`ServerStartError` if they are
    degenerate or scoring fails."""
    from ..client._clients import RerankClient

    try:
        with RerankClient(base_url, model=model, api_key=api_key, timeout=120.0) as client:
            scores = client.score(QUERY, list(DOCUMENTS))
    except Qwen3RerankError as exc:
        raise ServerStartError(f"vLLM started but failed the scoring self-check: {exc}") from exc
    refuse_degenerate(scores, "two different documents")
    return scores


def check_image_scores(base_url: str, *, model: str, api_key: str | None) -> list[float]:
    """Score two image documents on a Qwen3-VL server, and check that it keeps prepared images as
    they are; raise :class:`ServerStartError` otherwise."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with httpx.Client(base_url=base_url, headers=headers, timeout=120.0) as http:
        small_scores, small_tokens = _score_images(http, model, red_side=_SMALL * IMAGE_FACTOR)
        _, large_tokens = _score_images(http, model, red_side=_LARGE * IMAGE_FACTOR)
    refuse_degenerate(small_scores, "two different image documents")
    expected = _LARGE**2 - _SMALL**2
    if large_tokens - small_tokens != expected:
        small, large = (f"{n * IMAGE_FACTOR}x{n * IMAGE_FACTOR}" for n in (_SMALL, _LARGE))
        raise ServerStartError(
            f"the server resizes images differently from the official Qwen3-VL reranker: a {large} image "
            f"cost {large_tokens - small_tokens} prompt tokens more than a {small} one, not {expected}, so "
            "it scores other pixels than the model's reference. Serve it with the official limits: "
            '--mm-processor-kwargs \'{"min_pixels":4096,"max_pixels":1843200}\' (VLLMServer adds them).'
        )
    return small_scores


def _score_images(http: httpx.Client, model: str, *, red_side: int) -> tuple[list[float], int]:
    """Scores of (red square, blue square) documents for :data:`IMAGE_QUERY`, and the prompt tokens."""
    side = _SMALL * IMAGE_FACTOR
    documents = [
        vl_document_param("A red square.", [png_data_url(red_side, red_side, _RED)]),
        vl_document_param("A blue square.", [png_data_url(side, side, _BLUE)]),
    ]
    body = {"model": model, "text_1": vl_query_param(IMAGE_QUERY), "text_2": documents}
    try:
        response = http.post("/v1/score", json=body)
    except httpx.HTTPError as exc:
        raise ServerStartError(f"vLLM started but the image self-check could not reach it: {exc}") from exc
    if response.status_code != 200:
        status, text = response.status_code, response.text[:500]
        raise ServerStartError(f"vLLM started but failed the image self-check: HTTP {status}: {text}")
    return _parse_scores(response.json(), len(documents))


def _parse_scores(payload: Any, count: int) -> tuple[list[float], int]:
    try:
        items = sorted(payload["data"], key=lambda item: int(item["index"]))
        scores = [float(item["score"]) for item in items]
        tokens = int(payload["usage"]["prompt_tokens"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ServerStartError(
            f"the image self-check got an answer it cannot read: {payload!r:.500}"
        ) from exc
    if len(scores) != count:
        raise ServerStartError(f"the image self-check sent {count} documents and got {len(scores)} scores")
    return scores, tokens


def refuse_degenerate(scores: Sequence[float], what: str) -> None:
    """Raise :class:`ServerStartError` when scores are equal or exactly 0.5."""
    if len(set(scores)) < len(scores) or any(s == 0.5 for s in scores):
        raise ServerStartError(
            f"the server gives degenerate scores {list(scores)} for {what}: "
            "the classifier head is broken (a converted checkpoint served with the "
            "original-model --hf-overrides?). Check the checkpoint and the flags."
        )


def png_data_url(width: int, height: int, rgb: tuple[int, int, int]) -> str:
    """A one-colour RGB PNG as a ``data:`` URL, written with the standard library only."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))  # filter 0, then pixels
    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
