"""The start-up self-check: does a freshly started server score like a Qwen3 reranker?

Two different documents must get two different scores, neither exactly 0.5 (the signature of a
classifier head zeroed by the original-model overrides on a converted untied checkpoint). A Qwen3-VL
server is checked with images, sent inline as small generated PNGs exactly as the client sends
prepared images, and must also keep those images as they are: a 64x64 and a 128x128 image must cost 4
and 16 image tokens (the official reranker's resize leaves both alone; a server with the checkpoint's
default processor limits upsizes both to 256x256 and would score other pixels than the reference).
Its requests never go through a proxy from the environment: they carry the API key to the child.
"""

from __future__ import annotations

import base64
import struct
import zlib
from collections.abc import Sequence

import httpx

from .._checkpoints import PROBE_DOCUMENTS, PROBE_QUERY
from .._protocol import ScoreBatch, ScoreParam, auth_headers, parse_prompt_tokens, parse_scores, score_call
from ..errors import Qwen3RerankError, ServerStartError
from ..images._geometry import IMAGE_FACTOR
from ..prompt import format_document, format_query, vl_document_param, vl_query_param

__all__ = ["check_image_scores", "check_text_scores", "png_data_url", "refuse_degenerate"]

IMAGE_QUERY = "a red square"
_RED, _BLUE = (220, 30, 30), (30, 30, 220)
#: Sides of the self-check's images, in units of 32 pixels: (side / 32)^2 image tokens each.
_SMALL, _LARGE = 2, 4
_TIMEOUT = 120.0


def _client(base_url: str, api_key: str | None) -> httpx.Client:
    """The self-check's client: it talks to the server it started, so never through a proxy
    (``trust_env=False`` ignores ``HTTP(S)_PROXY`` / ``ALL_PROXY``, which would get the API key)."""
    return httpx.Client(base_url=base_url, headers=auth_headers(api_key), timeout=_TIMEOUT, trust_env=False)


def _score(
    http: httpx.Client, model: str, batch: ScoreBatch, what: str
) -> tuple[list[float], httpx.Response]:
    """Send one score request the way the client does; its scores (checked) and the answer."""
    call = score_call(model, batch)
    try:
        response = http.request(call.method, call.path, json=call.json)
        return parse_scores(response, len(batch.documents)), response
    except httpx.HTTPError as exc:
        raise ServerStartError(f"vLLM started but the {what} could not reach it: {exc}") from exc
    except Qwen3RerankError as exc:
        raise ServerStartError(f"vLLM started but failed the {what}: {exc}") from exc


def check_text_scores(base_url: str, *, model: str, api_key: str | None, raw: bool = False) -> list[float]:
    """Score the probe pair (:data:`~qwen3_vllm_rerank._checkpoints.PROBE_QUERY`); raise
    :class:`ServerStartError` if the scores are degenerate or scoring fails. ``raw``: the server
    applies the template itself (started with ``--chat-template``), so the bare texts are sent."""
    if raw:
        batch = ScoreBatch(0, PROBE_QUERY, list(PROBE_DOCUMENTS), raw=True)
    else:
        documents: list[ScoreParam] = [format_document(document) for document in PROBE_DOCUMENTS]
        batch = ScoreBatch(0, format_query(PROBE_QUERY), documents)
    with _client(base_url, api_key) as http:
        scores, _ = _score(http, model, batch, "scoring self-check")
    refuse_degenerate(scores, "two different documents")
    return scores


def check_image_scores(base_url: str, *, model: str, api_key: str | None) -> list[float]:
    """Score two image documents on a Qwen3-VL server, and check that it keeps prepared images as
    they are; raise :class:`ServerStartError` otherwise."""
    with _client(base_url, api_key) as http:
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
    batch = ScoreBatch(0, vl_query_param(IMAGE_QUERY), documents)
    scores, response = _score(http, model, batch, "image self-check")
    try:
        tokens = parse_prompt_tokens(response)
    except Qwen3RerankError as exc:
        raise ServerStartError(f"vLLM started but failed the image self-check: {exc}") from exc
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
