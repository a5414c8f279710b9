"""Parsing vLLM's answers: every malformed or failed answer is a typed error."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from qwen3_vllm_rerank import MalformedResponseError, RerankHTTPError
from qwen3_vllm_rerank._protocol import (
    ScoreBatch,
    ServedModel,
    parse_models,
    parse_scores,
    plan_batches,
    score_call,
)

URL = "http://127.0.0.1:1/v1/score"


def _response(status: int = 200, body: Any = None, text: str | None = None) -> httpx.Response:
    request = httpx.Request("POST", URL)
    if text is not None:
        return httpx.Response(status, text=text, request=request)
    return httpx.Response(status, json=body, request=request)


def test_plan_batches_covers_every_document_once_in_order() -> None:
    docs = [f"d{i}" for i in range(10)]
    batches = plan_batches("q", docs, 4)
    assert [b.start for b in batches] == [0, 4, 8]
    assert [d for b in batches for d in b.documents] == docs


def test_score_call_is_one_to_many() -> None:
    call = score_call("m", ScoreBatch(0, "prefix", ["a", "b"]))
    assert call.path == "/v1/score"
    assert call.json == {"model": "m", "text_1": "prefix", "text_2": ["a", "b"]}


def test_scores_are_put_back_in_input_order_by_index() -> None:
    body = {"data": [{"index": 1, "score": 0.2}, {"index": 0, "score": 0.9}]}
    assert parse_scores(_response(body=body), 2) == [0.9, 0.2]


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"data": [{"index": 0, "score": 0.5}]}, "1 scores for 2 documents"),
        ({"nope": []}, "no 'data' list"),
        ({"data": [{"index": 0, "score": "x"}, {"index": 1, "score": 0.1}]}, "not a finite number"),
        ({"data": [{"index": 0, "score": 0.1}, {"index": 0, "score": 0.1}]}, "repeated index"),
        ({"data": [{"index": 5, "score": 0.1}, {"index": 0, "score": 0.1}]}, "bad or repeated index"),
        ([1, 2], "no 'data' list"),
    ],
)
def test_malformed_scores_raise(body: Any, problem: str) -> None:
    with pytest.raises(MalformedResponseError, match=problem):
        parse_scores(_response(body=body), 2)


def test_nan_score_raises() -> None:
    text = '{"data": [{"index": 0, "score": NaN}, {"index": 1, "score": 0.1}]}'
    with pytest.raises(MalformedResponseError, match="not a finite number"):
        parse_scores(_response(text=text), 2)


def test_non_json_body_raises_malformed() -> None:
    with pytest.raises(MalformedResponseError, match="not JSON"):
        parse_scores(_response(text="<html>proxy</html>"), 1)


@pytest.mark.parametrize(
    "body",
    [
        {"error": {"message": "model not found", "type": "NotFoundError", "code": 404}},
        {"object": "error", "message": "model not found"},
        {"detail": "model not found"},
    ],
)
def test_http_errors_carry_status_and_server_message(body: Any) -> None:
    with pytest.raises(RerankHTTPError) as info:
        parse_scores(_response(404, body=body), 1)
    assert info.value.status_code == 404
    assert info.value.server_message == "model not found"
    assert "HTTP 404" in str(info.value)


def test_models_are_listed() -> None:
    request = httpx.Request("GET", "http://x/v1/models")
    body = {"data": [{"id": "a", "max_model_len": 8192}, {"id": "b"}]}
    response = httpx.Response(200, json=body, request=request)
    assert parse_models(response) == [ServedModel("a", 8192), ServedModel("b", None)]
    empty = httpx.Response(200, json={"data": []}, request=request)
    with pytest.raises(MalformedResponseError):
        parse_models(empty)
