"""The Haystack ranker with images against a real Qwen3-VL-Reranker server: an image ``blob`` and an
image file from ``ImageFileToDocument`` (read inside the fetcher's ``file_roots``), beside a text
Document, score as the core client and the official reference score them."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest
from haystack import Document, Pipeline
from haystack.components.converters.image import ImageFileToDocument
from haystack.dataclasses import ByteStream
from PIL import Image as PILImage

from haystack_integrations.components.rankers.qwen3_vllm_rerank import Qwen3VLLMRanker
from qwen3_vllm_rerank import Content, Image, RerankClient, UrlFetcher
from tests.support.fixtures import Served
from tests.support.reference_vl import Side, reference_scores

QUERY = "a photo of a mountain lake"
TEXT = "Mountain lakes are fed by snowmelt."


def _noise(width: int, height: int, seed: int) -> PILImage.Image:
    rng = random.Random(seed)
    return PILImage.frombytes(
        "RGB", (width, height), bytes(rng.randrange(256) for _ in range(width * height * 3))
    )


async def test_image_blobs_and_image_files_score_as_the_client_and_the_reference_do(
    vl_served: Served, tmp_path: Path
) -> None:
    blob_picture, file_picture = _noise(64, 64, 31), _noise(90, 140, 32)
    buffer = io.BytesIO()
    blob_picture.save(buffer, format="PNG")
    file_picture.save(tmp_path / "lake.png")
    fetcher = UrlFetcher(allowed_hosts=(), file_roots=(str(tmp_path),))
    ranker = Qwen3VLLMRanker(base_url=vl_served.base_url, root_path=str(tmp_path), image_fetcher=fetcher)

    # ImageFileToDocument -> the ranker: a content-less Document naming "lake.png" (a base name).
    pipeline = Pipeline()
    pipeline.add_component("images", ImageFileToDocument())
    pipeline.add_component("ranker", ranker)
    pipeline.connect("images.documents", "ranker.documents")
    from_files = pipeline.run({"images": {"sources": [tmp_path / "lake.png"]}, "ranker": {"query": QUERY}})
    (file_document,) = from_files["ranker"]["documents"]
    assert file_document.meta["file_path"] == "lake.png"

    documents = [
        Document(
            content="A lake at dawn", id="blob", blob=ByteStream(buffer.getvalue(), mime_type="image/png")
        ),
        Document(content=None, id="file", meta={"file_path": "lake.png"}),
        Document(content=TEXT, id="text"),
    ]
    with RerankClient(vl_served.base_url, image_fetcher=fetcher) as client:
        by_client = client.score(
            QUERY,
            [
                Content("A lake at dawn", images=[Image(buffer.getvalue())]),
                Content("", images=[Image(tmp_path / "lake.png")]),
                TEXT,
            ],
        )
    expected = dict(zip(["blob", "file", "text"], by_client, strict=True))
    reference = reference_scores(
        vl_served.served_checkpoint,
        Side(QUERY),
        [Side("A lake at dawn", [blob_picture]), Side(None, [file_picture]), Side(TEXT)],
    )
    assert by_client == pytest.approx(reference, abs=1e-4)
    assert file_document.score == pytest.approx(expected["file"], abs=1e-4)
    for output in (
        ranker.run(query=QUERY, documents=documents),
        await ranker.run_async(query=QUERY, documents=documents),
    ):
        ranked = output["documents"]
        assert [d.id for d in ranked] == sorted(expected, key=lambda i: -expected[i])
        assert {d.id: d.score for d in ranked} == pytest.approx(expected, abs=1e-4)
        assert ranked[[d.id for d in ranked].index("blob")].blob == documents[0].blob
    assert documents[0].score is None, "the caller's Documents are untouched"
