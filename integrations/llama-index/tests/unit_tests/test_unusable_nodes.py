"""Nodes whose image the postprocessor itself cannot use (bad base64, an ``image_url`` that is not a
URL): ``UnusableDocuments`` before any request, or with ``on_error="passthrough"`` returned last with
no score (no server needed: these never reach one)."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest
from llama_index.core.schema import ImageNode, NodeWithScore, TextNode
from PIL import Image as PILImage

from llama_index.postprocessor.qwen3_vllm_rerank import Qwen3VLLMReranker
from qwen3_vllm_rerank import Content, Image, UnusableDocuments
from tests.support.recording import RequestLog, closed_port_url

QUERY = "a photo of a mountain lake"


def _png(path: Path) -> Path:
    buffer = io.BytesIO()
    PILImage.new("RGB", (64, 64), (10, 120, 200)).save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue())
    return path


def _nodes(tmp_path: Path) -> list[NodeWithScore]:
    local = _png(tmp_path / "local.png")
    return [
        NodeWithScore(node=TextNode(text="Mountain lakes are fed by snowmelt.", id_="text"), score=0.9),
        NodeWithScore(node=ImageNode(text="x", image="@@not base64@@", id_="b64"), score=0.8),
        # A local path where a URL belongs: never read as a path (retrieved data chose it).
        NodeWithScore(node=ImageNode(text="y", image_url=str(local), id_="path-as-url"), score=0.7),
    ]


async def test_raise_mode_names_every_unusable_node_before_any_request(tmp_path: Path) -> None:
    log, alog = RequestLog(), RequestLog()
    with log.client() as http:
        async with alog.async_client() as ahttp:
            reranker = Qwen3VLLMReranker(
                base_url=closed_port_url(), model="m", http_client=http, http_async_client=ahttp
            )
            with pytest.raises(UnusableDocuments) as raised:
                reranker.postprocess_nodes(_nodes(tmp_path), query_str=QUERY)
            with pytest.raises(UnusableDocuments) as araised:
                await reranker.apostprocess_nodes(_nodes(tmp_path), query_str=QUERY)
    assert log.paths == alog.paths == [], "refused before any request"
    for error in (raised.value, araised.value):
        assert set(error.reasons) == {1, 2}, "keyed by the node's position"
        assert "node 'b64'" in error.reasons[1]
        assert "not valid base64" in error.reasons[1]
        assert "node 'path-as-url'" in error.reasons[2]
        assert "image_path" in error.reasons[2], "says where a local path belongs"
        assert str(tmp_path) not in str(error), "the path is not echoed"


async def test_passthrough_returns_unusable_nodes_last_without_a_score(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    nodes = _nodes(tmp_path)
    log = RequestLog()
    reranker = Qwen3VLLMReranker(base_url=closed_port_url(), model="m", on_error="passthrough", top_n=None)
    with log.client() as http:
        # Only the unusable ones: nothing is left to send.
        logged = reranker.model_copy(update={"http_client": http})
        with caplog.at_level(logging.WARNING, logger="llama_index.postprocessor.qwen3_vllm_rerank"):
            returned = logged.postprocess_nodes(nodes[1:], query_str=QUERY)
    assert log.paths == []
    assert [n.node.node_id for n in returned] == ["b64", "path-as-url"]
    assert [n.score for n in returned] == [None, None]
    for result, original in zip(returned, nodes[1:], strict=True):
        marker = result.node.metadata.pop("rerank_error")
        assert marker.startswith("UnusableDocuments: ")
        assert result.node.metadata == original.node.metadata
        assert "rerank_error" in result.node.excluded_llm_metadata_keys
    assert "cannot be scored" in caplog.text
    # With a text node whose call fails too: it passes through first (its retrieval score), the
    # unusable ones after it; top_n cuts the whole list.
    for cut, expected in ((None, ["text", "b64", "path-as-url"]), (2, ["text", "b64"])):
        shaped = reranker.model_copy(update={"top_n": cut})
        for result in (
            shaped.postprocess_nodes(nodes, query_str=QUERY),
            await shaped.apostprocess_nodes(nodes, query_str=QUERY),
        ):
            assert [n.node.node_id for n in result] == expected
            assert result[0].score == 0.9
            assert result[0].node.metadata["rerank_error"].startswith("RerankConnectionError: ")
            assert result[1].score is None


def test_image_path_and_image_url_are_marked_retrieved_the_query_image_and_base64_are_not() -> None:
    from llama_index.core.schema import QueryBundle

    from llama_index.postprocessor.qwen3_vllm_rerank.base import _image_of, _query_of

    path = _image_of(ImageNode(text="p", image_path="/srv/pages/1.png"))
    url = _image_of(ImageNode(text="u", image_url="https://cdn.example/2.png"))
    inline = _image_of(ImageNode(text="b", image="iVBORw0KGgo="))
    assert isinstance(path, Image)
    assert path.retrieved
    assert isinstance(url, Image)
    assert url.retrieved
    assert isinstance(inline, Image)
    assert not inline.retrieved, "the image's own bytes are data"
    query = _query_of(QueryBundle(query_str="q", image_path="/app/query.png"))
    assert isinstance(query, Content)
    assert not any(i.retrieved for i in query.images if isinstance(i, Image)), "the application's own"


@pytest.mark.parametrize("field", ["image", "image_path", "image_url"])
def test_an_image_field_that_holds_no_image_is_unusable_never_invalid_input(field: str) -> None:
    # Nodes come back from stores via model_construct / from_dict: a field may hold anything.
    node = ImageNode.model_construct(text="x", id_="odd", **{field: 1.5})
    reranker = Qwen3VLLMReranker(base_url=closed_port_url(), model="m")
    with pytest.raises(UnusableDocuments) as raised:
        reranker.postprocess_nodes([NodeWithScore(node=node, score=0.5)], query_str=QUERY)
    assert "which is no image" in raised.value.reasons[0]


def test_a_cut_emoji_in_a_node_never_raises_a_raw_unicode_error() -> None:
    import json

    from qwen3_vllm_rerank import RetryPolicy

    lone = json.loads('"half an emoji \\ud83d"')
    reranker = Qwen3VLLMReranker(
        base_url=closed_port_url(), model="m", on_error="passthrough", retry=RetryPolicy(max_attempts=1)
    )
    nodes = [
        NodeWithScore(node=TextNode(text=lone), score=0.5),
        NodeWithScore(node=TextNode(text="b"), score=0.4),
    ]
    returned = reranker.postprocess_nodes(nodes, query_str=QUERY)
    # The server is down: both pass through for that, not for the surrogate.
    assert [n.node.metadata["rerank_error"].split(":")[0] for n in returned] == ["RerankConnectionError"] * 2
