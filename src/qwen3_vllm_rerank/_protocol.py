"""vLLM's HTTP protocol for scoring, without any I/O.

Everything here builds or parses plain data: what to send (:class:`Call`) and what
the server's answers mean. The sync and async clients only differ in how they send
the calls; see ``client.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from .errors import MalformedResponseError, RerankHTTPError

__all__ = [
    "Call",
    "ScoreBatch",
    "ServedModel",
    "auth_headers",
    "check_status",
    "classify_call",
    "detokenize_call",
    "models_call",
    "parse_classify",
    "parse_detokenize",
    "parse_models",
    "parse_prompt_tokens",
    "parse_scores",
    "parse_tokenize",
    "plan_batches",
    "score_call",
    "status_error",
    "tokenize_call",
]

SCORE_PATH = "/v1/score"
MODELS_PATH = "/v1/models"
# vLLM serves these outside /v1, where --api-key does not reach: never used with a key.
TOKENIZE_PATH = "/tokenize"
DETOKENIZE_PATH = "/detokenize"
CLASSIFY_PATH = "/classify"


@dataclass(frozen=True, slots=True)
class Call:
    """One HTTP request to make, relative to the client's base URL."""

    method: str
    path: str
    json: dict[str, Any] | None = field(default=None)
    #: Error statuses handed back to the flow as answers instead of raised (never retried).
    tolerate: tuple[int, ...] = ()


#: One side of a pair as vLLM's score API takes it: a string, or (for multimodal models)
#: ``{"content": [{"type": "image_url", ...}, {"type": "text", ...}]}``.
ScoreParam = str | dict[str, Any]


@dataclass(frozen=True, slots=True)
class ScoreBatch:
    """Pairs ``start .. start + len(documents)`` of one ``score`` call, sent together.

    ``query`` is the shared prefix (vLLM's ``text_1``), ``documents`` the rest of each pair
    (``text_2``). With ``raw=True`` they are the bare query and documents, sent as vLLM's
    ``queries`` / ``documents`` to a server that applies the template itself
    (started with ``--chat-template``).
    """

    start: int
    query: ScoreParam
    documents: list[ScoreParam]
    raw: bool = False
    instruction: str | None = None


@dataclass(frozen=True, slots=True)
class ServedModel:
    """An entry of ``GET /v1/models``."""

    name: str
    max_model_len: int | None
    #: What the server loaded (``--model``): a local directory or a hub id.
    root: str | None = None


def plan_batches(
    query: ScoreParam,
    documents: Sequence[ScoreParam],
    batch_size: int,
    *,
    raw: bool = False,
    instruction: str | None = None,
) -> list[ScoreBatch]:
    """Split the pairs of one query into requests of at most ``batch_size`` pairs."""
    return [
        ScoreBatch(start, query, list(documents[start : start + batch_size]), raw, instruction)
        for start in range(0, len(documents), batch_size)
    ]


def score_call(model: str | None, batch: ScoreBatch, *, tolerate: tuple[int, ...] = ()) -> Call:
    """A 1:N ``/v1/score`` request: the shared query prefix against each document.

    Without ``model`` the server scores with the one model it serves.
    """
    body: dict[str, Any] = {"model": model} if model is not None else {}
    if batch.raw:
        body.update(queries=batch.query, documents=batch.documents)
        if batch.instruction is not None:
            body["instruction"] = batch.instruction
    else:
        body.update(text_1=batch.query, text_2=batch.documents)
    return Call("POST", SCORE_PATH, body, tolerate)


def auth_headers(api_key: str | None) -> dict[str, str]:
    """The headers that carry ``api_key`` (vLLM's ``--api-key``): none without one."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def models_call() -> Call:
    return Call("GET", MODELS_PATH)


def tokenize_call(model: str, text: str) -> Call:
    return Call("POST", TOKENIZE_PATH, {"model": model, "prompt": text, "add_special_tokens": False})


def detokenize_call(model: str, tokens: Sequence[int]) -> Call:
    return Call("POST", DETOKENIZE_PATH, {"model": model, "tokens": list(tokens)})


def classify_call(model: str, prompt: str) -> Call:
    """Score one already-templated prompt with no server-side template."""
    return Call("POST", CLASSIFY_PATH, {"model": model, "input": [prompt]})


def _server_message(response: httpx.Response) -> str:
    """The human part of a vLLM error body (both its old and its OpenAI-style shapes)."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason_phrase
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(body.get("message"), str):
            return str(body["message"])
        if isinstance(body.get("detail"), str):
            return str(body["detail"])
    return str(body)[:500]


def status_error(response: httpx.Response) -> RerankHTTPError | None:
    """The error a non-2xx answer stands for, or ``None`` for a success."""
    if response.is_success:
        return None
    return RerankHTTPError(str(response.request.url), response.status_code, _server_message(response))


def check_status(response: httpx.Response) -> None:
    """Raise :class:`RerankHTTPError` for any non-2xx answer."""
    error = status_error(response)
    if error is not None:
        raise error


def _json_body(response: httpx.Response) -> Any:
    check_status(response)
    try:
        return response.json()
    except ValueError as exc:
        raise MalformedResponseError(str(response.request.url), "body is not JSON") from exc


def parse_models(response: httpx.Response) -> list[ServedModel]:
    """Served models (name and ``max_model_len``) from ``GET /v1/models``."""
    url = str(response.request.url)
    body = _json_body(response)
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list) or not data:
        raise MalformedResponseError(url, "no models listed under 'data'")
    models = []
    for item in data:
        name = item.get("id") if isinstance(item, dict) else None
        if not isinstance(name, str):
            raise MalformedResponseError(url, "model entries without a string 'id'")
        length = item.get("max_model_len")
        root = item.get("root")
        models.append(
            ServedModel(
                name,
                length if isinstance(length, int) and length > 0 else None,
                root if isinstance(root, str) else None,
            )
        )
    return models


def parse_tokenize(response: httpx.Response) -> list[int]:
    """Token ids from ``POST /tokenize``."""
    body = _json_body(response)
    tokens = body.get("tokens") if isinstance(body, dict) else None
    if not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens):
        raise MalformedResponseError(str(response.request.url), "no 'tokens' list of ids")
    return tokens


def parse_detokenize(response: httpx.Response) -> str:
    body = _json_body(response)
    prompt = body.get("prompt") if isinstance(body, dict) else None
    if not isinstance(prompt, str):
        raise MalformedResponseError(str(response.request.url), "no 'prompt' string")
    return prompt


def parse_prompt_tokens(response: httpx.Response) -> int:
    """``usage.prompt_tokens`` of a score answer: how long the server's prompt was."""
    body = _json_body(response)
    usage = body.get("usage") if isinstance(body, dict) else None
    tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    if not isinstance(tokens, int):
        raise MalformedResponseError(str(response.request.url), "no 'usage.prompt_tokens'")
    return tokens


def parse_classify(response: httpx.Response) -> float:
    """The one probability of a one-label ``/classify`` answer."""
    body = _json_body(response)
    try:
        probs = body["data"][0]["probs"]
        value = probs[0] if isinstance(probs, list) else probs
    except (KeyError, IndexError, TypeError) as exc:
        raise MalformedResponseError(str(response.request.url), "no 'data[0].probs'") from exc
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MalformedResponseError(str(response.request.url), f"probability {value!r} is not a number")
    return float(value)


def parse_scores(response: httpx.Response, expected: int) -> list[float]:
    """Scores from a ``/v1/score`` answer, in input order, checked for count and range."""
    url = str(response.request.url)
    body = _json_body(response)
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        raise MalformedResponseError(url, "no 'data' list")
    if len(data) != expected:
        raise MalformedResponseError(url, f"{len(data)} scores for {expected} documents")
    scores: list[float | None] = [None] * expected
    for position, item in enumerate(data):
        if not isinstance(item, dict):
            raise MalformedResponseError(url, f"data[{position}] is not an object")
        index = item.get("index", position)
        score = item.get("score")
        if not isinstance(index, int) or not 0 <= index < expected or scores[index] is not None:
            raise MalformedResponseError(url, f"bad or repeated index {index!r}")
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            raise MalformedResponseError(url, f"score {score!r} is not a finite number")
        scores[index] = float(score)
    return [s for s in scores if s is not None]
