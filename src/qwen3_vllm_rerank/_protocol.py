"""vLLM's HTTP protocol for scoring, without any I/O.

Everything here builds or parses plain data: what to send (:class:`Call`) and what
the server's answers mean. The sync and async clients only differ in how they send
the calls; see ``client.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeGuard

import httpx

from ._redaction import redact_url
from .errors import MalformedResponseError, RerankHTTPError

__all__ = [
    "Call",
    "ScoreBatch",
    "ScoreParam",
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
    "retry_after",
    "score_call",
    "status_error",
    "tokenize_call",
    "with_image_uuids",
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
    #: The key whose rendezvous order picks the replica (``client/_routing.py``); ``None``:
    #: any replica (round-robin).
    route: str | None = None


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
    #: The route key of its documents' replica (see :attr:`Call.route`).
    route: str | None = None


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
    route: str | None = None,
) -> list[ScoreBatch]:
    """Split the pairs of one query into requests of at most ``batch_size`` pairs."""
    return [
        ScoreBatch(start, query, list(documents[start : start + batch_size]), raw, instruction, route)
        for start in range(0, len(documents), batch_size)
    ]


def with_image_uuids(param: ScoreParam, uuids: Sequence[str]) -> ScoreParam:
    """``param`` (a query or document side) with vLLM's per-item ``uuid`` on each of its
    ``image_url`` parts, in order: ``uuids[k]`` names the k-th image.

    vLLM reads it (``_parse_chat_message_content_part``: ``entrypoints/chat_utils.py`` in 0.27,
    ``renderers/chat_utils.py`` in 0.32; the score path passes it on as ``multi_modal_uuids``) and
    keys its processor and encoder caches by that id instead of hashing the decoded pixels,
    so the id must stand for exactly the bytes sent: the client passes the SHA-256 of each image's
    PNG (:attr:`~qwen3_vllm_rerank.images.PreparedImage.sha256`, the bytes of its ``data:`` URL).
    A text side, or one without images, is returned as it is; a count that does not match the
    image parts is a ``ValueError`` (a bug, never a request)."""
    if isinstance(param, str) or not uuids:
        return param
    content = list(param["content"])
    images = [k for k, part in enumerate(content) if part.get("type") == "image_url"]
    for k, uuid in zip(images, uuids, strict=True):
        content[k] = {**content[k], "uuid": uuid}
    return {**param, "content": content}


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
    return Call("POST", SCORE_PATH, body, tolerate, batch.route)


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


#: How much of a value the server sent an error message quotes.
_SHOWN_CHARS = 80


def _shown(value: Any) -> str:
    """``repr(value)``, cut to a length fit for an error message."""
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."


def _url(response: httpx.Response) -> str:
    """The URL an answer came from, as it may be shown (:func:`redact_url`)."""
    return redact_url(str(response.request.url))


def _decoded(response: httpx.Response) -> Any:
    """The JSON body; ``ValueError`` when it is not JSON (cut short, an HTML page, nested
    beyond the decoder's recursion limit)."""
    try:
        return response.json()
    except RecursionError as exc:
        raise ValueError("JSON nested too deeply") from exc


def _server_message(response: httpx.Response) -> str:
    """The human part of a vLLM error body (both its old and its OpenAI-style shapes)."""
    try:
        body = _decoded(response)
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
    return RerankHTTPError(
        _url(response), response.status_code, _server_message(response), retry_after(response)
    )


def retry_after(response: httpx.Response) -> float | None:
    """The seconds a ``Retry-After: <seconds>`` header asks for; ``None`` when there is none or it is
    not a finite, non-negative number (an HTTP date is not read: vLLM and its proxies send seconds)."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def check_status(response: httpx.Response) -> None:
    """Raise :class:`RerankHTTPError` for any non-2xx answer."""
    error = status_error(response)
    if error is not None:
        raise error


def _json_body(response: httpx.Response) -> Any:
    check_status(response)
    try:
        return _decoded(response)
    except ValueError as exc:
        start = f"it starts {_shown(response.content[:40])}" if response.content else "it is empty"
        raise MalformedResponseError(
            _url(response),
            f"the body is not JSON ({start}): a proxy's page, or an answer cut short. The request "
            "reached the server and was not sent again",
        ) from exc


def _is_int(value: object) -> TypeGuard[int]:
    """A JSON integer (``True`` is an ``int`` to Python, not to JSON)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_probability(value: object) -> TypeGuard[float]:
    """A JSON number in [0, 1]. Python's JSON reads NaN and infinities too: both fail the
    comparison, as does an integer too large for a float."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1


#: Why a server answers numbers that are not probabilities.
_NOT_PROBABILITIES = (
    "a reranker's score is a probability in [0, 1]; a server answering other numbers returns raw "
    'logits or another model\'s output (a request or server with "use_activation": false, a '
    "pooler other than Qwen3-Reranker's, or a proxy rewriting answers)"
)


def parse_models(response: httpx.Response) -> list[ServedModel]:
    """Served models (name, ``max_model_len``, ``root``) from ``GET /v1/models``.

    A ``max_model_len`` or ``root`` of the wrong type is read as unknown (``None``).
    """
    url = _url(response)
    body = _json_body(response)
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list) or not data:
        raise MalformedResponseError(url, f"no models listed under 'data' (got {_shown(body)})")
    models = []
    for item in data:
        name = item.get("id") if isinstance(item, dict) else None
        if not isinstance(name, str):
            raise MalformedResponseError(url, f"a model entry without a string 'id': {_shown(item)}")
        length = item.get("max_model_len")
        root = item.get("root")
        models.append(
            ServedModel(
                name,
                length if _is_int(length) and length > 0 else None,
                root if isinstance(root, str) else None,
            )
        )
    return models


def parse_tokenize(response: httpx.Response) -> list[int]:
    """Token ids from ``POST /tokenize``: non-negative integers."""
    body = _json_body(response)
    tokens = body.get("tokens") if isinstance(body, dict) else None
    if not isinstance(tokens, list) or not all(_is_int(t) and t >= 0 for t in tokens):
        raise MalformedResponseError(_url(response), f"no 'tokens' list of ids (got {_shown(body)})")
    return tokens


def parse_detokenize(response: httpx.Response) -> str:
    """The text of ``POST /detokenize``."""
    body = _json_body(response)
    prompt = body.get("prompt") if isinstance(body, dict) else None
    if not isinstance(prompt, str):
        raise MalformedResponseError(_url(response), f"no 'prompt' string (got {_shown(body)})")
    return prompt


def parse_prompt_tokens(response: httpx.Response) -> int:
    """``usage.prompt_tokens`` of a score answer (a non-negative integer): how long the
    server's prompt was."""
    body = _json_body(response)
    usage = body.get("usage") if isinstance(body, dict) else None
    tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    if not _is_int(tokens) or tokens < 0:
        raise MalformedResponseError(_url(response), f"no 'usage.prompt_tokens' count (got {_shown(usage)})")
    return int(tokens)


def parse_classify(response: httpx.Response) -> float:
    """The one probability (in [0, 1]) of a one-label ``/classify`` answer."""
    url = _url(response)
    body = _json_body(response)
    try:
        probs = body["data"][0]["probs"]
        value = probs[0] if isinstance(probs, list) else probs
    except (KeyError, IndexError, TypeError) as exc:
        raise MalformedResponseError(url, f"no 'data[0].probs' (got {_shown(body)})") from exc
    if not _is_probability(value):
        raise MalformedResponseError(url, f"probability {_shown(value)}: {_NOT_PROBABILITIES}")
    return float(value)


def parse_scores(response: httpx.Response, expected: int) -> list[float]:
    """Scores from a ``/v1/score`` answer, in input order.

    Checked: ``data`` lists exactly ``expected`` objects; each ``index`` (the position when
    absent) is an integer in ``range(expected)`` named once; each ``score`` is a finite number
    in [0, 1]. Anything else is a :class:`MalformedResponseError` quoting what was sent.
    """
    url = _url(response)
    body = _json_body(response)
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        raise MalformedResponseError(url, f"no 'data' list (got {_shown(body)})")
    if len(data) != expected:
        raise MalformedResponseError(url, f"{len(data)} scores for {expected} documents")
    scores: list[float | None] = [None] * expected
    for position, item in enumerate(data):
        if not isinstance(item, dict):
            raise MalformedResponseError(url, f"data[{position}] is not an object: {_shown(item)}")
        index = item.get("index", position)
        if not _is_int(index) or not 0 <= index < expected or scores[index] is not None:
            raise MalformedResponseError(
                url,
                f"data[{position}].index is {_shown(index)}: not an unused integer "
                f"in 0..{expected - 1} (bad or repeated index)",
            )
        score = item.get("score")
        if not _is_probability(score):
            raise MalformedResponseError(
                url,
                f"data[{position}].score is {_shown(score)}, not a finite number in [0, 1]: "
                f"{_NOT_PROBABILITIES}",
            )
        scores[index] = float(score)
    return [s for s in scores if s is not None]
