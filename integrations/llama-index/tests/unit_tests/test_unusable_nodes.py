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
from qwen3_vllm_rerank import UnusableDocuments
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
