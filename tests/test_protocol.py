"""Parsing vLLM's answers: every malformed or failed answer is a typed error."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from qwen3_vllm_rerank import MalformedResponseError, RerankHTTPError
from qwen3_vllm_rerank._protocol import (
    ScoreBatch,
    ServedModel,
    parse_classify,
    parse_models,
    parse_prompt_tokens,
    parse_scores,
    parse_tokenize,
    plan_batches,
    score_call,
    with_image_uuids,
)
from qwen3_vllm_rerank._redaction import redact_url

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


def test_a_batch_route_becomes_the_calls_route_and_never_part_of_the_body() -> None:
    (batch,) = plan_batches("prefix", ["a", "b"], 4, route="k")
    call = score_call("m", batch)
    assert call.route == "k"
    assert call.json == {"model": "m", "text_1": "prefix", "text_2": ["a", "b"]}
    assert score_call("m", ScoreBatch(0, "prefix", ["a"])).route is None


def _image(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


def test_with_image_uuids_names_each_image_part_in_order_and_copies() -> None:
    param: dict[str, Any] = {"content": [_image("data:1"), _image("data:2"), {"type": "text", "text": "t"}]}
    tagged = with_image_uuids(param, ["u1", "u2"])
    assert tagged == {
        "content": [
            {**_image("data:1"), "uuid": "u1"},
            {**_image("data:2"), "uuid": "u2"},
            {"type": "text", "text": "t"},
        ]
    }
    assert param["content"][0] == _image("data:1")  # the input is not changed


def test_with_image_uuids_leaves_text_alone_and_refuses_a_count_that_does_not_match() -> None:
    assert with_image_uuids("plain text", []) == "plain text"
    text_only = {"content": [{"type": "text", "text": "t"}]}
    assert with_image_uuids(text_only, []) is text_only
    with pytest.raises(ValueError, match="zip"):
        with_image_uuids({"content": [_image("data:1")]}, ["u1", "u2"])


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


# -- every score is checked (issue 17, item 10) ---------------------------------------------


def _scores_body(*items: Any) -> dict[str, Any]:
    return {"data": list(items)}


@pytest.mark.parametrize("score", [1e300, 7.5, -2.0, 1.0000001, -1e-9, 3])
def test_a_score_outside_0_1_is_refused_naming_it_and_the_likely_cause(score: float) -> None:
    body = _scores_body({"index": 0, "score": score}, {"index": 1, "score": 0.5})
    with pytest.raises(MalformedResponseError) as info:
        parse_scores(_response(body=body), 2)
    message = str(info.value)
    assert f"data[0].score is {score!r}" in message
    assert "use_activation" in message
    assert "logits" in message


@pytest.mark.parametrize("text", ["Infinity", "-Infinity", "NaN", "true", "false", '"0.5"', "null"])
def test_a_score_that_is_not_a_json_number_is_refused(text: str) -> None:
    body = '{"data": [{"index": 0, "score": %s}, {"index": 1, "score": 0.5}]}' % text  # noqa: UP031
    with pytest.raises(MalformedResponseError, match=r"data\[0\]\.score is"):
        parse_scores(_response(text=body), 2)


def test_a_missing_score_is_refused() -> None:
    with pytest.raises(MalformedResponseError, match=r"data\[0\]\.score is None"):
        parse_scores(_response(body=_scores_body({"index": 0})), 1)


def test_the_bounds_0_and_1_are_scores_and_come_back_as_floats() -> None:
    body = _scores_body({"index": 0, "score": 0}, {"index": 1, "score": 1}, {"index": 2, "score": 1.0})
    scores = parse_scores(_response(body=body), 3)
    assert scores == [0.0, 1.0, 1.0]
    assert all(type(s) is float for s in scores)


@pytest.mark.parametrize("index", [True, False, 1.0, "1", -1, None, [0]])
def test_an_index_that_is_not_an_integer_in_range_is_refused(index: Any) -> None:
    """``True`` and ``False`` are ints to Python: before the fix they were read as 1 and 0."""
    body = _scores_body({"index": index, "score": 0.5}, {"index": 0, "score": 0.5})
    if index is False:  # False is index 0 to Python: then index 0 repeats; make it the only one
        body = _scores_body({"index": 1, "score": 0.5}, {"index": index, "score": 0.5})
    with pytest.raises(MalformedResponseError, match=r"index is .*bad or repeated index"):
        parse_scores(_response(body=body), 2)


def test_what_the_server_sent_is_quoted_short() -> None:
    huge = "9" * 10_000
    with pytest.raises(MalformedResponseError) as info:
        parse_scores(_response(body=_scores_body({"index": 0, "score": huge})), 1)
    assert "'999" in str(info.value)
    assert len(str(info.value)) < 1_000


def test_json_nested_beyond_the_decoders_limit_is_malformed_not_a_recursion_error() -> None:
    with pytest.raises(MalformedResponseError, match="not JSON"):
        parse_scores(_response(text="[" * 100_000), 1)


def test_an_error_body_nested_beyond_the_decoders_limit_is_still_an_http_error() -> None:
    with pytest.raises(RerankHTTPError) as info:
        parse_scores(_response(500, text="[" * 100_000), 1)
    assert info.value.status_code == 500


# -- the discovery answers' types are exact -----------------------------------------------------


def test_a_boolean_max_model_len_is_unknown_not_one() -> None:
    request = httpx.Request("GET", "http://x/v1/models")
    response = httpx.Response(200, json={"data": [{"id": "a", "max_model_len": True}]}, request=request)
    assert parse_models(response) == [ServedModel("a", None)]


@pytest.mark.parametrize("tokens", [[True, 5], [1.0], [-1], ["1"], None])
def test_token_ids_are_non_negative_integers(tokens: Any) -> None:
    response = httpx.Response(200, json={"tokens": tokens}, request=httpx.Request("POST", "http://x/t"))
    with pytest.raises(MalformedResponseError, match="no 'tokens' list of ids"):
        parse_tokenize(response)


@pytest.mark.parametrize("count", [True, -1, 1.5, "9", None])
def test_prompt_tokens_are_a_non_negative_integer(count: Any) -> None:
    body = {"data": [], "usage": {"prompt_tokens": count}}
    with pytest.raises(MalformedResponseError, match=r"usage\.prompt_tokens"):
        parse_prompt_tokens(_response(body=body))


@pytest.mark.parametrize("probability", [1.5, -0.1, True, "0.5"])
def test_a_classify_probability_outside_0_1_is_refused(probability: Any) -> None:
    response = _response(body={"data": [{"probs": [probability]}]})
    with pytest.raises(MalformedResponseError, match="probability"):
        parse_classify(response)


# -- URLs shown in errors carry no secret (issue 17, item 13) ---------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("http://svc:pw@host:8000/v1/score", "http://***@host:8000/v1/score"),
        ("https://token@host/", "https://***@host/"),
        ("http://u:p@ss@host/", "http://***@host/"),  # the last @ ends the userinfo, as in httpx
        ("http://[::1]:8000/v1", "http://[::1]:8000/v1"),
        ("http://host/v1?api_key=s3cret&debug", "http://host/v1?api_key=***&***"),
        ("http://host/#s3cret", "http://host/"),
        ("http://u:pa/ss@host/", "http://***"),  # ambiguous: a '/' in the password
        ("http://u:12?ss@host/", "http://***"),  # ambiguous: a '?' in the password
        ("svc:pw@host:8000", "***"),  # no scheme: everything may be the secret
        ("http://[::1", "http://***"),  # not parseable
        ("", ""),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_http_errors_show_the_url_without_its_password() -> None:
    request = httpx.Request("POST", "http://svc:pw-123@127.0.0.1:1/v1/score")
    response = httpx.Response(500, json={"error": {"message": "boom"}}, request=request)
    with pytest.raises(RerankHTTPError) as info:
        parse_scores(response, 1)
    assert info.value.url == "http://***@127.0.0.1:1/v1/score"
    assert "pw-123" not in str(info.value)


def test_malformed_answers_show_the_url_without_its_password() -> None:
    request = httpx.Request("POST", "http://svc:pw-123@127.0.0.1:1/v1/score")
    response = httpx.Response(200, json={"data": []}, request=request)
    with pytest.raises(MalformedResponseError) as info:
        parse_scores(response, 1)
    assert info.value.url == "http://***@127.0.0.1:1/v1/score"
    assert "pw-123" not in str(info.value)
