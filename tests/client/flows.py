"""Driving the client's I/O-free scoring flow by hand: what it would send, with answers computed
from each request, so that where every score lands can be checked without a server."""

from __future__ import annotations

import base64
import hashlib
import io
import random
from collections.abc import Iterator
from typing import Any

import httpx
from PIL import Image as PILImage

from qwen3_vllm_rerank import Image
from qwen3_vllm_rerank._protocol import Call
from qwen3_vllm_rerank.client._budget import LongDocuments
from qwen3_vllm_rerank.client._discovery import ServerProfile
from qwen3_vllm_rerank.client._flow import Flow
from qwen3_vllm_rerank.client._inputs import Input, Prepared, prepare, score_request
from qwen3_vllm_rerank.client._sanitize import Neutraliser
from qwen3_vllm_rerank.client._scoring import Scoring, ScoringOptions, score_flow
from qwen3_vllm_rerank.client._tokens import LazyTokenSource

QUERY = "which page shows the revenue chart?"


def noise(seed: int, width: int = 64, height: int = 64) -> PILImage.Image:
    """An image of its own (seeded noise; 64x64 is aligned and at the minimum pixel count)."""
    return PILImage.frombytes("RGB", (width, height), random.Random(seed).randbytes(width * height * 3))


def png(image: PILImage.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def vl_profile(*, server_templates: bool = False) -> ServerProfile:
    """A Qwen3-VL server as discovery would describe it; no length limit, so no token counting."""
    return ServerProfile(
        "vl-model", None, "vl", server_templates, Neutraliser(()), LazyTokenSource(None, "m", api_key=False)
    )


def prepared(query: Input, documents: list[Input]) -> Prepared:
    """The call's items, its images prepared by the client's own code (no cache)."""
    return prepare(score_request(query, documents, None), None)


def options(
    replicas: tuple[str, ...], batch_size: int = 2, long: LongDocuments = "truncate"
) -> ScoringOptions:
    return ScoringOptions(batch_size, None, long, replicas)


def image_parts(node: Any) -> Iterator[dict[str, Any]]:
    """Every ``image_url`` content part in a request body, in order."""
    if isinstance(node, dict):
        if node.get("type") == "image_url":
            yield node
        for value in node.values():
            yield from image_parts(value)
    elif isinstance(node, list):
        for value in node:
            yield from image_parts(value)


def sent_bytes(part: dict[str, Any]) -> bytes:
    """The image bytes an ``image_url`` part carries (its ``data:`` URL decoded)."""
    return base64.b64decode(part["image_url"]["url"].split(",", 1)[1])


def score_of(document: Any) -> float:
    """A made-up score that only this document gets: a hash of what was sent for it."""
    digest = hashlib.sha256(repr(document).encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32


def drive(flow: Flow[Scoring]) -> tuple[Scoring, list[Call]]:
    """Run ``flow`` to its end, answering each score call with :func:`score_of` each document;
    returns the result and every call it made, in order."""
    calls: list[Call] = []
    try:
        batch = next(flow)
        while True:
            calls.extend(batch)
            responses = []
            for call in batch:
                assert call.json is not None
                documents = call.json.get("text_2", call.json.get("documents"))
                body = {"data": [{"index": i, "score": score_of(d)} for i, d in enumerate(documents)]}
                responses.append(httpx.Response(200, json=body, request=httpx.Request("POST", "http://x")))
            batch = flow.send(responses)
    except StopIteration as stop:
        return stop.value, calls


def run(
    query: Input, documents: list[Input], replicas: tuple[str, ...], *, batch_size: int = 2
) -> tuple[Scoring, list[Call]]:
    """Score ``documents`` through the flow for a VL server with ``replicas``."""
    flow = score_flow(
        vl_profile(),
        prepared(query, documents),
        "Given a search query, retrieve relevant candidates that answer the query.",
        options(replicas, batch_size),
        None,
        strict=True,
    )
    return drive(flow)


def pages(n: int, first_seed: int = 0) -> list[Input]:
    return [Image(noise(first_seed + k)) for k in range(n)]
