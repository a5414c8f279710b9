"""Properties of the parsers of vLLM's answers, for any body a server (or a proxy) may send.

The server is trusted to be the one named, not to be right: whatever bytes come back, a
parser returns its documented type or raises one of our typed errors, never anything else.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st

from qwen3_vllm_rerank import MalformedResponseError, RerankHTTPError
from qwen3_vllm_rerank._protocol import (
    ServedModel,
    parse_classify,
    parse_detokenize,
    parse_models,
    parse_prompt_tokens,
    parse_scores,
    parse_tokenize,
)
from qwen3_vllm_rerank._redaction import redact_url

URL = "http://127.0.0.1:1/v1/score"
TYPED = (MalformedResponseError, RerankHTTPError)
FUZZ = settings(max_examples=100, deadline=None)

#: Any JSON value, including what Python's encoder writes beyond the standard (NaN, Infinity).
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)
#: Values a number field may hold when a server gets it nearly right.
numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=0, max_value=1),
    st.integers(min_value=-3, max_value=10**30),
    st.booleans(),
    st.none(),
    st.text(max_size=5),
)
statuses = st.sampled_from([200, 200, 200, 201, 204, 400, 401, 404, 422, 429, 500, 502, 503, 504])


def _response(status: int, content: bytes) -> httpx.Response:
    return httpx.Response(status, content=content, request=httpx.Request("POST", URL))


def _encoded(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


#: A score as a right server sends it, or as a wrong one does.
score_values = st.floats(min_value=0, max_value=1) | numbers
FAULTS = ("index", "no index", "drop", "repeat", "junk")


@st.composite
def _score_answers(draw: st.DrawFn, expected: int) -> dict[str, Any]:
    """``{"data": [...]}`` shaped like a score answer for ``expected`` documents, in any
    order, with up to two of a wrong server's faults: often valid, often slightly not."""
    order = draw(st.permutations(range(expected)))
    data: list[Any] = [{"index": i, "score": draw(score_values)} for i in order]
    for fault in draw(st.lists(st.sampled_from(FAULTS), max_size=2)):
        position = draw(st.integers(min_value=0, max_value=len(data) - 1)) if data else None
        if position is None or not isinstance(data[position], dict):
            continue
        if fault == "index":
            data[position]["index"] = draw(numbers)
        elif fault == "no index":
            data[position].pop("index", None)  # then the position is the index
        elif fault == "drop":
            del data[position]
        elif fault == "repeat":
            data.append(dict(data[position]))
        else:
            data[position] = draw(json_values)
    return {"data": data, "usage": {"prompt_tokens": draw(numbers)}}


def _outcome(parse: Callable[[httpx.Response], Any], response: httpx.Response) -> Any:
    """The parser's result, or ``None`` when it raised one of our typed errors (any other
    exception fails the property)."""
    try:
        return parse(response)
    except TYPED:
        return None


def _check_scores(result: Any, expected: int) -> None:
    if result is None:
        return
    assert isinstance(result, list)
    assert len(result) == expected
    assert all(type(s) is float and 0.0 <= s <= 1.0 for s in result)


@FUZZ
@given(status=statuses, body=json_values, expected=st.integers(min_value=0, max_value=4))
def test_parse_scores_of_any_json(status: int, body: Any, expected: int) -> None:
    """Any JSON body: ``expected`` floats in [0, 1], or a MalformedResponseError / RerankHTTPError."""
    result = _outcome(lambda r: parse_scores(r, expected), _response(status, _encoded(body)))
    _check_scores(result, expected)


@FUZZ
@given(data=st.data(), expected=st.integers(min_value=1, max_value=4))
def test_parse_scores_of_score_shaped_json(data: st.DataObject, expected: int) -> None:
    """A nearly-right score answer: each document's own score in [0, 1], by index, or a typed error."""
    body = data.draw(_score_answers(expected))
    result = _outcome(lambda r: parse_scores(r, expected), _response(200, _encoded(body)))
    _check_scores(result, expected)
    if result is not None:
        by_index = {item.get("index", i): item["score"] for i, item in enumerate(body["data"])}
        assert result == [float(by_index[i]) for i in range(expected)]


@FUZZ
@given(status=statuses, content=st.binary(max_size=200), expected=st.integers(min_value=0, max_value=4))
def test_parse_scores_of_any_bytes(status: int, content: bytes, expected: int) -> None:
    """Any bytes: ``expected`` floats in [0, 1], or a MalformedResponseError / RerankHTTPError."""
    _check_scores(_outcome(lambda r: parse_scores(r, expected), _response(status, content)), expected)


def _check_models(result: Any) -> None:
    if result is None:
        return
    assert isinstance(result, list)
    assert result
    for model in result:
        assert isinstance(model, ServedModel)
        assert isinstance(model.name, str)
        assert model.max_model_len is None or (type(model.max_model_len) is int and model.max_model_len > 0)
        assert model.root is None or isinstance(model.root, str)


def _check_tokens(result: Any) -> None:
    if result is not None:
        assert isinstance(result, list)
        assert all(type(t) is int and t >= 0 for t in result)


def _check_prompt_tokens(result: Any) -> None:
    if result is not None:
        assert type(result) is int
        assert result >= 0


def _check_probability(result: Any) -> None:
    if result is not None:
        assert type(result) is float
        assert 0.0 <= result <= 1.0


def _check_text(result: Any) -> None:
    if result is not None:
        assert isinstance(result, str)


PARSERS: list[tuple[Callable[[httpx.Response], Any], Callable[[Any], None]]] = [
    (parse_models, _check_models),
    (parse_tokenize, _check_tokens),
    (parse_detokenize, _check_text),
    (parse_prompt_tokens, _check_prompt_tokens),
    (parse_classify, _check_probability),
]
parsers = st.sampled_from(PARSERS)


@FUZZ
@given(parser=parsers, status=statuses, body=json_values)
def test_discovery_parsers_of_any_json(
    parser: tuple[Callable[[httpx.Response], Any], Callable[[Any], None]], status: int, body: Any
) -> None:
    """Any JSON body: the parser's documented type (models, ids >= 0, count >= 0, p in [0, 1]) or a typed error."""
    parse, check = parser
    check(_outcome(parse, _response(status, _encoded(body))))


@FUZZ
@given(parser=parsers, status=statuses, content=st.binary(max_size=200))
def test_discovery_parsers_of_any_bytes(
    parser: tuple[Callable[[httpx.Response], Any], Callable[[Any], None]], status: int, content: bytes
) -> None:
    """Any bytes: the parser's documented type or a MalformedResponseError / RerankHTTPError."""
    parse, check = parser
    check(_outcome(parse, _response(status, content)))


@FUZZ
@given(
    parser=parsers,
    shaped=st.one_of(
        st.fixed_dictionaries(
            {
                "data": st.lists(
                    st.fixed_dictionaries(
                        {"id": json_values}, optional={"max_model_len": numbers, "root": json_values}
                    ),
                    max_size=3,
                )
            }
        ),
        st.fixed_dictionaries({"tokens": st.lists(numbers, max_size=5)}),
        st.fixed_dictionaries({"usage": st.fixed_dictionaries({"prompt_tokens": numbers})}),
        st.fixed_dictionaries(
            {
                "data": st.lists(
                    st.fixed_dictionaries({"probs": numbers | st.lists(numbers, max_size=2)}), max_size=2
                )
            }
        ),
        st.fixed_dictionaries({"prompt": json_values}),
    ),
)
def test_discovery_parsers_of_nearly_right_json(
    parser: tuple[Callable[[httpx.Response], Any], Callable[[Any], None]], shaped: Any
) -> None:
    """A nearly-right answer (right keys, any values): the parser's documented type or a typed error."""
    parse, check = parser
    check(_outcome(parse, _response(200, _encoded(shaped))))


@FUZZ
@given(password=st.text(min_size=1, max_size=30))
def test_redact_url_never_shows_a_password(password: str) -> None:
    """For any password in ``http://u:PASSWORD@example.com/v1`` the shown URL is one of the two redactions."""
    shown = redact_url(f"http://u:{password}@example.com/v1")
    assert shown in {"http://***@example.com/v1", "http://***"}


@FUZZ
@given(url=st.text(max_size=60))
def test_redact_url_of_any_text(url: str) -> None:
    """Any text: a string, in which every ``@`` follows the redaction ``***``."""
    shown = redact_url(url)
    assert isinstance(shown, str)
    assert shown.count("@") == shown.count("***@")
