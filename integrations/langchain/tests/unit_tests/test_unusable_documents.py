"""Documents whose own content the compressor cannot score fail only themselves: an image value
of a type that is no image is ``UnusableDocuments`` for that document (never ``InvalidInput`` for
the query), a cut emoji never raises a raw ``UnicodeEncodeError``, and image references taken
from metadata are marked retrieved. No server needed: these never reach one, or reach a closed
port."""

from __future__ import annotations

import json

import pytest
from langchain_core.documents import Document

from langchain_qwen3_vllm_rerank import Qwen3VLLMReranker
from langchain_qwen3_vllm_rerank.rerank import _inputs
from qwen3_vllm_rerank import Content, Image, InvalidInput, RetryPolicy, UnusableDocuments
from tests.support.recording import RequestLog, closed_port_url

QUERY = "a photo of a mountain lake"
NOT_IMAGES = [0, True, {}, [None], 1.5]


def _documents() -> list[Document]:
    return [
        Document(page_content=f"doc {i}", metadata={"image": value}) for i, value in enumerate(NOT_IMAGES)
    ]


async def test_an_image_value_that_is_no_image_is_unusable_never_invalid_input_for_the_query() -> None:
    log, alog = RequestLog(), RequestLog()
    with log.client() as http:
        async with alog.async_client() as ahttp:
            reranker = Qwen3VLLMReranker(
                base_url=closed_port_url(), model="m", http_client=http, http_async_client=ahttp
            )
            with pytest.raises(UnusableDocuments) as raised:
                reranker.compress_documents(_documents(), QUERY)
            with pytest.raises(UnusableDocuments) as araised:
                await reranker.acompress_documents(_documents(), QUERY)
            passthrough = reranker.model_copy(update={"on_error": "passthrough", "top_n": None})
            returned = passthrough.compress_documents(_documents(), QUERY)
    assert log.paths == alog.paths == [], "refused before any request"
    for error in (raised.value, araised.value):
        assert set(error.reasons) == set(range(len(NOT_IMAGES))), "every one at once"
        assert "which is no image" in error.reasons[4]
    assert [d.page_content for d in returned] == [f"doc {i}" for i in range(len(NOT_IMAGES))]
    assert all(d.metadata["rerank_error"].startswith("UnusableDocuments: ") for d in returned)


def test_a_document_of_the_wrong_type_is_still_invalid_input() -> None:
    reranker = Qwen3VLLMReranker(base_url=closed_port_url(), model="m", on_error="passthrough")
    with pytest.raises(InvalidInput) as raised:
        reranker.compress_documents([Document(page_content="fine"), "not a Document"], QUERY)  # type: ignore[list-item]
    assert not isinstance(raised.value, UnusableDocuments)


def test_a_cut_emoji_never_raises_a_raw_unicode_error() -> None:
    lone = json.loads('"half an emoji \\ud83d"')
    reranker = Qwen3VLLMReranker(
        base_url=closed_port_url(), model="m", on_error="passthrough", retry=RetryPolicy(max_attempts=1)
    )
    returned = reranker.compress_documents([Document(page_content=lone), Document(page_content="b")], QUERY)
    # The server is down: both pass through for that, not for the surrogate.
    assert [d.metadata["rerank_error"].split(":")[0] for d in returned] == ["RerankConnectionError"] * 2


def test_paths_and_urls_from_metadata_are_marked_retrieved() -> None:
    inputs = _inputs(
        [
            Document(page_content="a", metadata={"image": "/srv/pages/1.png"}),
            Document(page_content="b", metadata={"image": ["https://cdn.example/2.png", b"\x89PNG"]}),
            Document(page_content="c", metadata={"image": Image("file:///srv/3.png")}),
            Document(page_content="d", metadata={"image": "data:image/png;base64,iVBORw0KGgo="}),
        ]
    )
    images = [image for content in inputs if isinstance(content, Content) for image in content.images]
    assert [i.retrieved for i in images if isinstance(i, Image)] == [True, True, False, True, False]
