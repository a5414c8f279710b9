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
from qwen3_vllm_rerank import InvalidInput
from tests.support.fixtures import Served
from tests.support.reference_vl import Side, reference_scores

QUERY = "a photo of a mountain lake"


def _noise(width: int, height: int, seed: int) -> PILImage.Image:
    rng = random.Random(seed)
    return PILImage.frombytes(
        "RGB", (width, height), bytes(rng.randrange(256) for _ in range(width * height * 3))
    )


def _documents(tmp_path: Path) -> tuple[list[Document], list[Side]]:
    pictures = [_noise(64, 64, 1), _noise(120, 90, 2), _noise(200, 333, 3)]
    path = tmp_path / "page.png"
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
    reranker = Qwen3VLLMReranker(base_url=vl_served.base_url, top_n=3)
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
    with pytest.raises(InvalidInput, match=r'documents\[0\]\.metadata\["image"\]'):
        reranker.compress_documents([Document("odd", metadata={"image": 42})], QUERY)
