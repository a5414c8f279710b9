"""The LangChain reranker with images: documents carrying an image in ``metadata["image"]``,
mixed with text-only ones, against a real Qwen3-VL-Reranker server, in a real retriever."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest
from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from PIL import Image as PILImage

from langchain_qwen3_vllm_rerank import Qwen3VLLMReranker
from qwen3_vllm_rerank import InvalidInput, UnusableDocuments, UrlFetcher
from tests.support.fixtures import Served
from tests.support.recording import RequestLog
from tests.support.reference_vl import Side, reference_scores

QUERY = "a photo of a mountain lake"


def _noise(width: int, height: int, seed: int) -> PILImage.Image:
    rng = random.Random(seed)
    return PILImage.frombytes(
        "RGB", (width, height), bytes(rng.randrange(256) for _ in range(width * height * 3))
    )


def _local(tmp_path: Path) -> UrlFetcher:
    """The opt-in that lets a retrieved path be read: only inside the pages folder, no URL."""
    return UrlFetcher(allowed_hosts=(), file_roots=(str(tmp_path / "pages"),))


def _documents(tmp_path: Path) -> tuple[list[Document], list[Side]]:
    pictures = [_noise(64, 64, 1), _noise(120, 90, 2), _noise(200, 333, 3)]
    path = tmp_path / "pages" / "page.png"
    path.parent.mkdir(exist_ok=True)
    pictures[2].save(path)
    buffer = io.BytesIO()
    pictures[1].save(buffer, format="PNG")
    documents = [
        Document("Mountain lakes are fed by snowmelt.", id="text", metadata={"source": "a"}),
        Document("A lake at dawn", id="captioned", metadata={"image": pictures[0], "source": "b"}),
        Document("", id="bytes", metadata={"image": buffer.getvalue()}),
        Document("Two scans", id="two", metadata={"image": [str(path), pictures[0]]}),
    ]
    sides = [
        Side("Mountain lakes are fed by snowmelt."),
        Side("A lake at dawn", [pictures[0]]),
        Side(None, [pictures[1]]),
        Side("Two scans", [pictures[2], pictures[0]]),
    ]
    return documents, sides


class FixedRetriever(BaseRetriever):
    """Retrieves the same documents for any query (a first stage that returns image documents)."""

    documents: list[Document]

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        return self.documents


async def test_image_documents_rerank_with_text_documents_sync_and_async(
    vl_served: Served, tmp_path: Path
) -> None:
    documents, sides = _documents(tmp_path)
    expected = dict(
        zip(
            [d.id for d in documents],
            reference_scores(vl_served.served_checkpoint, Side(QUERY), sides),
            strict=True,
        )
    )
    best = sorted(expected, key=lambda i: -expected[i])
    reranker = Qwen3VLLMReranker(base_url=vl_served.base_url, top_n=3, image_fetcher=_local(tmp_path))
    retriever = ContextualCompressionRetriever(
        base_compressor=reranker, base_retriever=FixedRetriever(documents=documents)
    )
    for returned in (retriever.invoke(QUERY), await retriever.ainvoke(QUERY)):
        assert [d.id for d in returned] == best[:3]
        for document in returned:
            assert document.metadata["relevance_score"] == pytest.approx(expected[document.id], abs=1e-4)
            assert "image" in document.metadata or document.id == "text"
    assert "relevance_score" not in documents[1].metadata, "the caller's documents are never modified"


def test_a_bad_image_names_the_document(vl_served: Served) -> None:
    reranker = Qwen3VLLMReranker(base_url=vl_served.base_url)
    documents = [Document("fine"), Document("broken", metadata={"image": b"not an image"})]
    with pytest.raises(InvalidInput, match=r"documents\[1\]"):
        reranker.compress_documents(documents, QUERY)
    with pytest.raises(UnusableDocuments, match=r'documents\[0\]: metadata\["image"\] holds a int'):
        reranker.compress_documents([Document("odd", metadata={"image": 42})], QUERY)


# -- retrieved data that cannot be scored, and local files ---------------------------------------


def _poisoned(tmp_path: Path) -> tuple[list[Document], PILImage.Image]:
    """Two documents no query can use: a corrupt image, and a file: URL of a real image outside
    any opted-in root; returned with the picture that URL names."""
    picture = _noise(96, 64, 4)
    outside = tmp_path / "private"
    outside.mkdir()
    picture.save(outside / "secret.png")
    return [
        Document("broken", id="corrupt", metadata={"image": b"not an image"}),
        Document("a local file", id="file-url", metadata={"image": (outside / "secret.png").as_uri()}),
    ], picture


async def test_passthrough_scores_the_others_and_returns_unusable_documents_last(
    vl_served: Served, tmp_path: Path
) -> None:
    good, sides = _documents(tmp_path)
    (corrupt, file_url), _ = _poisoned(tmp_path)
    mixed = [good[0], corrupt, good[1], file_url, good[3]]
    expected = dict(
        zip(
            [d.id for d in good],
            reference_scores(vl_served.served_checkpoint, Side(QUERY), sides),
            strict=True,
        )
    )
    best = sorted((d.id for d in (good[0], good[1], good[3])), key=lambda i: -expected[i])
    log, alog = RequestLog(), RequestLog()
    with log.client() as http:
        async with alog.async_client() as ahttp:
            reranker = Qwen3VLLMReranker(
                base_url=vl_served.base_url,
                top_n=None,
                on_error="passthrough",
                batch_size=1,
                image_fetcher=_local(tmp_path),
                http_client=http,
                http_async_client=ahttp,
            )
            retriever = ContextualCompressionRetriever(
                base_compressor=reranker, base_retriever=FixedRetriever(documents=mixed)
            )
            reranker.compress_documents(good[:1], QUERY)  # the clients learn the server first
            await reranker.acompress_documents(good[:1], QUERY)
            log.paths.clear()
            alog.paths.clear()
            for returned in (retriever.invoke(QUERY), await retriever.ainvoke(QUERY)):
                assert [d.id for d in returned] == [*best, "corrupt", "file-url"]
                for document in returned[:3]:
                    assert document.metadata["relevance_score"] == pytest.approx(
                        expected[document.id], abs=1e-4
                    )
                    assert "rerank_error" not in document.metadata
                for document, original in zip(returned[3:], (corrupt, file_url), strict=True):
                    assert document is not original
                    assert "relevance_score" not in document.metadata
                    assert document.metadata["rerank_error"].startswith("UnusableDocuments: ")
                    assert {
                        k: v for k, v in document.metadata.items() if k != "rerank_error"
                    } == original.metadata
                # Outside the fetcher's file_roots: refused like any unreadable image.
            sent, asent = list(log.paths), list(alog.paths)
            # top_n cuts the whole list: the scored ones come first.
            cut = reranker.model_copy(update={"top_n": 2}).compress_documents(mixed, QUERY)
            assert [d.id for d in cut] == best[:2]
    # Each batch (one document each here) was sent once: the unusable ones are refused before any.
    assert sent == asent == ["/v1/score"] * 3
    assert "relevance_score" not in corrupt.metadata, "the caller's documents are never modified"


async def test_raise_mode_raises_unusable_documents_with_every_reason(
    vl_served: Served, tmp_path: Path
) -> None:
    good, _ = _documents(tmp_path)
    (corrupt, file_url), _ = _poisoned(tmp_path)
    reranker = Qwen3VLLMReranker(base_url=vl_served.base_url)
    documents = [good[0], corrupt, good[1], file_url]
    with pytest.raises(UnusableDocuments) as raised:
        reranker.compress_documents(documents, QUERY)
    with pytest.raises(UnusableDocuments) as araised:
        await reranker.acompress_documents(documents, QUERY)
    for error in (raised.value, araised.value):
        assert set(error.reasons) == {1, 3}
        assert "file_roots" in error.reasons[3]
    # An image value of a type that is no image is retrieved data: it fails only its document.
    passthrough = reranker.model_copy(update={"on_error": "passthrough"})
    (odd,) = passthrough.compress_documents([Document("odd", metadata={"image": 42})], QUERY)
    assert odd.metadata["rerank_error"].startswith('UnusableDocuments: metadata["image"] holds a int')
    # A document of the wrong type is the caller's bug: raised even with passthrough.
    with pytest.raises(InvalidInput) as wrong:
        passthrough.compress_documents(["not a Document"], QUERY)  # type: ignore[list-item]
    assert not isinstance(wrong.value, UnusableDocuments)


def test_a_file_url_is_read_only_inside_the_fetchers_file_roots(vl_served: Served, tmp_path: Path) -> None:
    (_, file_url), picture = _poisoned(tmp_path)
    text = Document("Mountain lakes are fed by snowmelt.", id="text")
    (expected_file, expected_text) = reference_scores(
        vl_served.served_checkpoint, Side(QUERY), [Side("a local file", [picture]), Side(text.page_content)]
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # Refused by default (saying how to opt in), and unread outside the roots opted in.
    for fetcher, says in ((None, "file_roots"), (UrlFetcher(file_roots=(str(elsewhere),)), "cannot read")):
        with pytest.raises(UnusableDocuments, match=says):
            Qwen3VLLMReranker(base_url=vl_served.base_url, image_fetcher=fetcher).compress_documents(
                [text, file_url], QUERY
            )
    opted_in = Qwen3VLLMReranker(
        base_url=vl_served.base_url,
        top_n=None,
        image_fetcher=UrlFetcher(file_roots=(str(tmp_path / "private"),)),
    )
    returned = {
        d.id: d.metadata["relevance_score"] for d in opted_in.compress_documents([text, file_url], QUERY)
    }
    assert returned == pytest.approx({"file-url": expected_file, "text": expected_text}, abs=1e-4)
