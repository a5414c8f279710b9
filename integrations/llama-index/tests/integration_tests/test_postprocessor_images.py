"""The LlamaIndex postprocessor with images: ``ImageNode`` s (image / image_path / image_url) and text nodes,
mixed, sync and async, with events, in a real retrieval pipeline that returns image nodes,
against a real Qwen3-VL-Reranker server."""

from __future__ import annotations

import base64
import io
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from llama_index.core import VectorStoreIndex
from llama_index.core.bridge.pydantic import Field
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.llms import MockLLM
from llama_index.core.schema import ImageNode, NodeWithScore, QueryBundle, TextNode
from llama_index_instrumentation import get_dispatcher
from PIL import Image as PILImage

from llama_index.postprocessor.qwen3_vllm_rerank import Qwen3VLLMReranker
from qwen3_vllm_rerank import InvalidInput, UnusableDocuments, UrlFetcher
from tests.support.fixtures import Served
from tests.support.recording import ImageSite, RequestLog
from tests.support.reference_vl import Side, reference_scores

QUERY = "a photo of a mountain lake"


def _noise(width: int, height: int, seed: int) -> PILImage.Image:
    rng = random.Random(seed)
    return PILImage.frombytes(
        "RGB", (width, height), bytes(rng.randrange(256) for _ in range(width * height * 3))
    )


class RerankEvents(BaseEventHandler):
    events: list[BaseEvent] = Field(default_factory=list)

    @classmethod
    def class_name(cls) -> str:
        return "RerankImageEvents"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        if isinstance(event, ReRankStartEvent | ReRankEndEvent):
            self.events.append(event)


@pytest.fixture
def rerank_events() -> Iterator[RerankEvents]:
    handler = RerankEvents()
    root = get_dispatcher()
    root.add_event_handler(handler)
    yield handler
    root.event_handlers.remove(handler)


def _local(tmp_path: Path) -> UrlFetcher:
    """The opt-in that lets a retrieved image_path be read: only inside the pages folder, no URL."""
    return UrlFetcher(allowed_hosts=(), file_roots=(str(tmp_path / "pages"),))


def _nodes(tmp_path: Path, *, indexed: bool = False) -> tuple[list[TextNode], dict[str, Side]]:
    """Text and image nodes, and what the reference scores each as. ``VectorStoreIndex`` skips nodes
    whose embed-mode content is empty, so for an index the file's node carries the metadata a
    directory reader gives it (and is scored with it: ``metadata_mode`` defaults to EMBED)."""
    pictures = [_noise(64, 64, 11), _noise(90, 140, 12)]
    path = tmp_path / "pages" / "lake.png"
    path.parent.mkdir(exist_ok=True)
    pictures[1].save(path)
    buffer = io.BytesIO()
    pictures[0].save(buffer, format="PNG")
    nodes: list[TextNode] = [
        TextNode(text="Mountain lakes are fed by snowmelt.", id_="text"),
        ImageNode(text="A lake at dawn", image=base64.b64encode(buffer.getvalue()).decode(), id_="b64"),
        ImageNode(
            text="", image_path=str(path), metadata={"file_name": path.name} if indexed else {}, id_="path"
        ),
        TextNode(text="Deserts get little rain.", id_="desert"),
    ]
    sides = {
        "text": Side("Mountain lakes are fed by snowmelt."),
        "b64": Side("A lake at dawn", [pictures[0]]),
        "path": Side(f"file_name: {path.name}" if indexed else None, [pictures[1]]),
        "desert": Side("Deserts get little rain."),
    }
    return nodes, sides


async def test_image_nodes_in_a_query_engine_sync_and_async_with_events(
    vl_served: Served, tmp_path: Path, rerank_events: RerankEvents
) -> None:
    nodes, sides = _nodes(tmp_path, indexed=True)
    ids = list(sides)
    scores = reference_scores(vl_served.served_checkpoint, Side(QUERY), [sides[i] for i in ids])
    expected = dict(zip(ids, scores, strict=True))
    best = sorted(ids, key=lambda i: -expected[i])[:2]
    index = VectorStoreIndex(nodes, embed_model=MockEmbedding(embed_dim=8))
    assert len(index.docstore.docs) == len(nodes), "the index keeps every node"
    reranker = Qwen3VLLMReranker(base_url=vl_served.base_url, top_n=2, image_fetcher=_local(tmp_path))
    engine = index.as_query_engine(llm=MockLLM(), similarity_top_k=4, node_postprocessors=[reranker])
    for response in (engine.query(QUERY), await engine.aquery(QUERY)):
        returned = response.source_nodes
        assert [n.node.node_id for n in returned] == best
        for n in returned:
            assert n.score == pytest.approx(expected[n.node.node_id], abs=1e-4)
        assert any(isinstance(n.node, ImageNode) for n in returned) == any(i in ("b64", "path") for i in best)
    starts = [e for e in rerank_events.events if isinstance(e, ReRankStartEvent)]
    ends = [e for e in rerank_events.events if isinstance(e, ReRankEndEvent)]
    assert len(starts) == len(ends) == 2


async def test_postprocess_nodes_directly_keeps_image_nodes_image_nodes(
    vl_served: Served, tmp_path: Path
) -> None:
    nodes, sides = _nodes(tmp_path)
    inputs = [NodeWithScore(node=n, score=1.0) for n in nodes]
    reranker = Qwen3VLLMReranker(base_url=vl_served.base_url, top_n=None, image_fetcher=_local(tmp_path))
    returned = await reranker.apostprocess_nodes(inputs, query_str=QUERY)
    assert {n.node.node_id for n in returned} == set(sides)
    assert all(isinstance(n.node, ImageNode) for n in returned if n.node.node_id in ("b64", "path"))


def test_an_image_node_with_bad_base64_names_the_node(vl_served: Served) -> None:
    reranker = Qwen3VLLMReranker(base_url=vl_served.base_url)
    broken = NodeWithScore(node=ImageNode(text="x", image="@@not base64@@", id_="bad"), score=1.0)
    with pytest.raises(UnusableDocuments, match=r"node 'bad' is not valid base64") as raised:
        reranker.postprocess_nodes([broken], query_str=QUERY)
    assert set(raised.value.reasons) == {0}, "keyed by the node's position"


def test_image_url_nodes_need_a_fetcher_and_an_image_query_bundle_queries_with_its_image(
    vl_served: Served, tmp_path: Path
) -> None:
    page, query_picture = _noise(100, 70, 21), _noise(64, 96, 22)
    buffer = io.BytesIO()
    page.save(buffer, format="PNG")
    query_path = tmp_path / "query.png"
    query_picture.save(query_path)
    site = ImageSite(buffer.getvalue())
    try:
        nodes = [
            NodeWithScore(node=ImageNode(text="a scanned page", image_url=site.url, id_="url"), score=0.5),
            NodeWithScore(node=TextNode(text="Mountain lakes are fed by snowmelt.", id_="text"), score=0.4),
        ]
        bundle = QueryBundle(query_str=QUERY, image_path=str(query_path))
        with pytest.raises(InvalidInput, match=r"documents\[0\]: image URL .* not fetched by default"):
            Qwen3VLLMReranker(base_url=vl_served.base_url).postprocess_nodes(nodes, query_bundle=bundle)
        assert site.hits == 0
        reranker = Qwen3VLLMReranker(
            base_url=vl_served.base_url,
            top_n=None,
            image_fetcher=UrlFetcher(timeout=5, allowed_hosts=("127.0.0.1",)),  # the site is on loopback
        )
        returned = reranker.postprocess_nodes(nodes, query_bundle=bundle)
        assert site.hits == 1, "fetched once, by the client"
    finally:
        site.close()
    expected = dict(
        zip(
            ["url", "text"],
            reference_scores(
                vl_served.served_checkpoint,
                Side(QUERY, [query_picture]),
                [Side("a scanned page", [page]), Side("Mountain lakes are fed by snowmelt.")],
            ),
            strict=True,
        )
    )
    assert {n.node.node_id: n.score for n in returned} == pytest.approx(expected, abs=1e-4)


# -- retrieved data that cannot be scored, and local files ---------------------------------------


def _unusable(tmp_path: Path) -> tuple[list[TextNode], PILImage.Image]:
    """Image nodes no query can use (the first two found by the postprocessor, the others by the
    client), and the picture their local file holds."""
    picture = _noise(96, 64, 13)
    private = tmp_path / "private"
    private.mkdir()
    picture.save(private / "secret.png")
    nodes: list[TextNode] = [
        ImageNode(text="a", image="@@not base64@@", id_="bad-b64"),
        ImageNode(text="b", image_url=str(private / "secret.png"), id_="path-as-url"),
        ImageNode(text="c", image_url=(private / "secret.png").as_uri(), id_="file-url"),
        ImageNode(text="d", image=base64.b64encode(b"not an image").decode(), id_="not-an-image"),
    ]
    return nodes, picture


async def test_passthrough_in_a_query_engine_scores_the_others_and_returns_unusable_nodes_last(
    vl_served: Served, tmp_path: Path, rerank_events: RerankEvents
) -> None:
    good, sides = _nodes(tmp_path, indexed=True)
    bad, _ = _unusable(tmp_path)
    ids = list(sides)
    scores = reference_scores(vl_served.served_checkpoint, Side(QUERY), [sides[i] for i in ids])
    expected = dict(zip(ids, scores, strict=True))
    best = sorted(ids, key=lambda i: -expected[i])
    index = VectorStoreIndex([*good, *bad], embed_model=MockEmbedding(embed_dim=8))
    assert len(index.docstore.docs) == len(good) + len(bad), "the index keeps every node"
    reranker = Qwen3VLLMReranker(
        base_url=vl_served.base_url, top_n=None, on_error="passthrough", image_fetcher=_local(tmp_path)
    )
    retrieve_all = len(good) + len(bad)
    engine = index.as_query_engine(
        llm=MockLLM(), similarity_top_k=retrieve_all, node_postprocessors=[reranker]
    )
    for response in (engine.query(QUERY), await engine.aquery(QUERY)):
        returned = response.source_nodes
        assert [n.node.node_id for n in returned[:4]] == best
        for n in returned[:4]:
            assert n.score == pytest.approx(expected[n.node.node_id], abs=1e-4)
        unusable = returned[4:]
        assert {n.node.node_id for n in unusable} == {b.node_id for b in bad}
        for n in unusable:
            assert n.score is None
            assert isinstance(n.node, ImageNode)
            assert n.node.metadata["rerank_error"].startswith("UnusableDocuments: ")
            assert "rerank_error" in n.node.excluded_llm_metadata_keys
        reasons = {n.node.node_id: n.node.metadata["rerank_error"] for n in unusable}
        assert "not valid base64" in reasons["bad-b64"]
        assert "image_path" in reasons["path-as-url"], "a local path is never read from image_url"
        # Outside the fetcher's file_roots: the one message for any file that cannot be read.
        assert "cannot read image file" in reasons["file-url"]
    assert [type(e) for e in rerank_events.events] == [ReRankStartEvent, ReRankEndEvent] * 2


async def test_unusable_nodes_cost_no_second_call_and_no_batch_twice(
    vl_served: Served, tmp_path: Path
) -> None:
    good, _ = _nodes(tmp_path)
    bad, _ = _unusable(tmp_path)
    # Two the client finds (file: URL, not an image) among three good ones.
    inputs = [NodeWithScore(node=n, score=0.5) for n in (good[0], bad[2], good[1], bad[3], good[3])]
    log, alog = RequestLog(), RequestLog()
    with log.client() as http:
        async with alog.async_client() as ahttp:
            reranker = Qwen3VLLMReranker(
                base_url=vl_served.base_url,
                top_n=None,
                on_error="passthrough",
                batch_size=1,
                http_client=http,
                http_async_client=ahttp,
            )
            reranker.postprocess_nodes(inputs[:1], query_str=QUERY)  # the clients learn the server first
            await reranker.apostprocess_nodes(inputs[:1], query_str=QUERY)
            log.paths.clear()
            alog.paths.clear()
            for returned in (
                reranker.postprocess_nodes(inputs, query_str=QUERY),
                await reranker.apostprocess_nodes(inputs, query_str=QUERY),
            ):
                assert [n.node.node_id for n in returned[3:]] == ["file-url", "not-an-image"]
                assert [n.score for n in returned[3:]] == [None, None]
            assert log.paths == alog.paths == ["/v1/score"] * 3, "each batch sent once"
            with pytest.raises(UnusableDocuments) as raised:  # while the injected clients are open
                reranker.model_copy(update={"on_error": "raise"}).postprocess_nodes(inputs, query_str=QUERY)
    assert set(raised.value.reasons) == {1, 3}


def test_a_file_url_in_image_url_is_read_only_inside_the_fetchers_file_roots(
    vl_served: Served, tmp_path: Path
) -> None:
    bad, picture = _unusable(tmp_path)
    node = NodeWithScore(node=bad[2], score=0.5)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # Refused by default (saying how to opt in), and unread outside the roots opted in.
    for fetcher, says in ((None, "file_roots"), (UrlFetcher(file_roots=(str(elsewhere),)), "cannot read")):
        with pytest.raises(UnusableDocuments, match=says):
            Qwen3VLLMReranker(base_url=vl_served.base_url, image_fetcher=fetcher).postprocess_nodes(
                [node], query_str=QUERY
            )
    (expected,) = reference_scores(vl_served.served_checkpoint, Side(QUERY), [Side("c", [picture])])
    opted_in = Qwen3VLLMReranker(
        base_url=vl_served.base_url, image_fetcher=UrlFetcher(file_roots=(str(tmp_path / "private"),))
    )
    (returned,) = opted_in.postprocess_nodes([node], query_str=QUERY)
    assert returned.score == pytest.approx(expected, abs=1e-4)
