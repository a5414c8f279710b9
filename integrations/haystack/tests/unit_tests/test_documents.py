"""How the ranker reads Haystack Documents (text, meta fields, image blobs, image files) and what it
returns for them without a server: copies, early returns, and the documents it cannot score."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from haystack import Document
from haystack.components.converters.image import ImageFileToDocument
from haystack.dataclasses import ByteStream

from haystack_integrations.components.rankers.qwen3_vllm_rerank import Qwen3VLLMRanker
from qwen3_vllm_rerank import Content, Image, InvalidInput, RetryPolicy, UnusableDocuments
from tests.support.recording import closed_port_url

PNG = b"\x89PNG\r\n\x1a\n-not-decoded-here"


def _offline(**options: object) -> Qwen3VLLMRanker:
    """A ranker whose server does not exist: any request fails at once."""
    return Qwen3VLLMRanker(
        base_url=closed_port_url(),
        model="m",
        retry=RetryPolicy(max_attempts=1),
        api_key=None,
        **options,  # type: ignore[arg-type]
    )


def test_text_is_the_meta_fields_then_the_content_as_haystacks_rankers_join_them() -> None:
    ranker = _offline(meta_fields_to_embed=["title", "missing", "none"], meta_data_separator=" | ")
    documents = [
        Document(content="body", meta={"title": "Title", "none": None}),
        Document(content="", meta={"title": 7}),
        Document(content="plain"),
    ]
    assert ranker._inputs(documents) == ["Title | body", "7 | ", "plain"]


def test_an_image_blob_is_scored_as_its_bytes_with_the_content() -> None:
    documents = [
        Document(content="a chart", blob=ByteStream(PNG, mime_type="image/png")),
        Document(blob=ByteStream(PNG, mime_type="IMAGE/JPEG")),
        # Not an image: scored as its text, the blob left alone.
        Document(content="minutes", blob=ByteStream(b"%PDF-1.7", mime_type="application/pdf")),
    ]
    first, second, third = _offline()._inputs(documents)
    assert isinstance(first, Content)
    assert first.text == "a chart"
    assert [i.source for i in first.images] == [PNG]
    assert isinstance(second, Content)
    assert second.text == ""
    assert [i.source for i in second.images] == [PNG]
    assert third == "minutes"


def test_an_image_file_from_image_file_to_document_is_a_retrieved_reference(tmp_path: Path) -> None:
    (tmp_path / "lake.png").write_bytes(PNG)
    (documents_out,) = ImageFileToDocument().run(sources=[tmp_path / "lake.png"]).values()
    assert documents_out[0].meta["file_path"] == "lake.png", "a base name, by default"
    (scored,) = _offline(root_path=str(tmp_path))._inputs(documents_out)
    assert isinstance(scored, Content)
    (image,) = scored.images
    assert isinstance(image, Image)
    assert image.source == tmp_path / "lake.png"
    assert image.retrieved, "read only as the source policy allows (image_fetcher's file_roots)"
    # meta["mime_type"] decides before the file name; another field can name the file.
    ranker = _offline(file_path_meta_field="page_image")
    (by_type,) = ranker._inputs([Document(meta={"page_image": "scan.bin", "mime_type": "image/tiff"})])
    assert isinstance(by_type, Content)
    assert by_type.images[0].source == Path("scan.bin")


def test_text_documents_from_files_stay_text() -> None:
    documents = [
        Document(content="page 3 text", meta={"file_path": "report.pdf", "page_number": 3}),
        Document(content="notes", meta={"file_path": 42}),
        Document(content="a caption", meta={"file_path": "photo.jpg"}),
    ]
    first, second, third = _offline()._inputs(documents)
    assert (first, second) == ("page 3 text", "notes")
    assert isinstance(third, Content), "an image file with its text"
    assert third.text == "a caption"


def test_documents_without_anything_to_score_are_unusable_and_raise_before_any_request() -> None:
    documents = [
        Document(content="fine", id="ok"),
        Document(meta={"file_path": "report.pdf", "page_number": 2}, id="pdf-page"),
        Document(meta={"file_path": ["a.png"]}, id="list"),
        Document(id="empty"),
        Document(meta={"file_path": "notes.txt"}, id="txt"),
    ]
    with pytest.raises(UnusableDocuments) as raised:
        _offline().run(query="q", documents=documents)  # would fail to connect if it sent anything
    reasons = raised.value.reasons
    assert set(reasons) == {1, 2, 3, 4}, "keyed by the document's position"
    assert "'pdf-page'" in reasons[1]
    assert "application/pdf, not an image" in reasons[1]
    assert "page image is the Document's blob" in reasons[1]
    assert "is list, not a path" in reasons[2]
    assert "no content and no image" in reasons[3]
    assert "text/plain, not an image" in reasons[4]


async def test_passthrough_returns_copies_unusable_last_and_leaves_the_callers_documents_alone() -> None:
    documents = [
        Document(content="one", id="1", score=3.0, meta={"tags": ["a"]}),
        Document(id="empty", score=2.0),
        Document(content="two", id="2", score=1.0, meta={"tags": ["b"]}),
    ]
    before = copy.deepcopy(documents)
    ranker = _offline(on_error="passthrough")
    for output in (
        ranker.run(query="q", documents=documents),
        await ranker.run_async(query="q", documents=documents),
    ):
        returned = output["documents"]
        assert [d.id for d in returned] == ["1", "2", "empty"], "retrieval order, the unusable last"
        assert [d.score for d in returned] == [3.0, 1.0, None], "the retrieval score when not reranked"
        assert returned[0].meta["rerank_error"].startswith("RerankConnectionError: ")
        assert returned[2].meta["rerank_error"].startswith("UnusableDocuments: ")
        assert all(r is not d for r in returned for d in documents)
        returned[0].meta["tags"].append("changed")
        assert output["meta"] == {"model": "m"}
    assert documents == before, "the caller's documents, their meta included, are untouched"
    cut = ranker.run(query="q", documents=documents, top_k=1)["documents"]
    assert [d.id for d in cut] == ["1"]


async def test_empty_input_returns_at_once_without_a_request() -> None:
    ranker = _offline()  # on_error="raise": a request would raise RerankConnectionError
    assert ranker.run(query="q", documents=[]) == {"documents": [], "meta": {"model": "m"}}
    assert await ranker.run_async(query="q", documents=[]) == {"documents": [], "meta": {"model": "m"}}


def test_programmer_errors_are_invalid_input() -> None:
    ranker = _offline(on_error="passthrough")
    with pytest.raises(InvalidInput, match=r"documents\[1\] must be a haystack Document, got str"):
        ranker.run(query="q", documents=[Document(content="a"), "b"])  # type: ignore[list-item]
    changed = Document(content="a", id="x")  # Document refuses such content when made, not later
    object.__setattr__(changed, "content", 5)  # past Haystack's warning on mutation
    with pytest.raises(
        InvalidInput, match=r"documents\[0\] \(id 'x'\)\.content must be a str or None, got int"
    ):
        ranker.run(query="q", documents=[changed])
    with pytest.raises(InvalidInput, match="query must be a str, got NoneType"):
        ranker.run(query=None, documents=[Document(content="a")])  # type: ignore[arg-type]
    for top_k in (0, -1, True, 1.5):
        with pytest.raises(InvalidInput, match="top_k must be a positive int or None"):
            ranker.run(query="q", documents=[Document(content="a")], top_k=top_k)  # type: ignore[arg-type]
        with pytest.raises(InvalidInput, match="top_k must be a positive int or None"):
            _offline(top_k=top_k)
