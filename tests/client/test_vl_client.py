"""The clients against a real Qwen3-VL-Reranker server: every kind of input scores like the
official reference, the family is known for every call, and images are handled before any
request (hostile ones refused, URLs fetched only on opt-in, by the client)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image as PILImage

from qwen3_vllm_rerank import (
    AsyncRerankClient,
    Content,
    FamilyMismatchError,
    Image,
    InvalidInput,
    RerankClient,
    TemplateMismatchError,
    UnusableDocuments,
    UrlFetcher,
)
from qwen3_vllm_rerank.prompt import VL_DEFAULT_INSTRUCTION
from tests.support.fixtures import Served, ServerPool
from tests.support.recording import ImageSite, RequestLog
from tests.support.reference_vl import Side, reference_scores
from tests.support.serving import vl_converted_original

TOLERANCE = 1e-4
QUERY = "a chart of quarterly revenue"


def _noise(width: int, height: int, seed: int) -> PILImage.Image:
    import random

    rng = random.Random(seed)
    return PILImage.frombytes(
        "RGB", (width, height), bytes(rng.randrange(256) for _ in range(width * height * 3))
    )


def _png(image: PILImage.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, PILImage.Image]:
    return {
        "aligned": _noise(64, 96, 1),
        "small": _noise(20, 30, 2),  # upscaled to the 4096-pixel minimum
        "odd": _noise(333, 517, 3),  # not a multiple of 32
        "large": _noise(1600, 1200, 4),  # downscaled under 1,843,200 pixels
    }


def _documents(images: dict[str, PILImage.Image], tmp: Path) -> tuple[list[object], list[Side]]:
    """Mixed documents as a caller passes them, and the same as the reference takes them."""
    path = tmp / "odd.png"
    path.write_bytes(_png(images["odd"]))
    documents: list[object] = [
        "Revenue grew in every region in the third quarter.",
        Image(images["aligned"]),
        Content("Quarterly revenue, by region", images=[images["small"]]),
        Content("two pages", images=[Image(path), Image(_png(images["large"]))]),
        path,  # a bare path is an image
        "",
    ]
    sides = [
        Side("Revenue grew in every region in the third quarter."),
        Side(None, [images["aligned"]]),
        Side("Quarterly revenue, by region", [images["small"]]),
        Side("two pages", [images["odd"], images["large"]]),
        Side(None, [images["odd"]]),
        Side(None),
    ]
    return documents, sides


def test_every_kind_of_document_scores_like_the_reference(
    vl_served: Served, images: dict[str, PILImage.Image], tmp_path: Path
) -> None:
    documents, sides = _documents(images, tmp_path)
    expected = reference_scores(vl_served.served_checkpoint, Side(QUERY), sides)
    with RerankClient(vl_served.base_url) as client:
        scores = client.score(QUERY, documents)
        ranked = client.rerank(QUERY, documents, top_n=3)
    assert scores == pytest.approx(expected, abs=TOLERANCE)
    assert [r.index for r in ranked] == sorted(range(len(expected)), key=lambda i: -expected[i])[:3]
    assert ranked[0].document is documents[ranked[0].index]


async def _check_an_image_query_with_an_instruction(
    base_url: str, reference: Path, picture: PILImage.Image, documents: list[object], sides: list[Side]
) -> None:
    """The async client, batches of 2, a text+image query and a custom instruction: the reference's
    scores."""
    instruction = "Find the slide that answers the question."
    query = Content("which region grew most?", images=[picture])
    expected = reference_scores(reference, Side("which region grew most?", [picture]), sides, instruction)
    async with AsyncRerankClient(base_url, instruction=instruction, batch_size=2) as client:
        assert await client.score(query, documents) == pytest.approx(expected, abs=TOLERANCE)


async def test_async_client_scores_image_queries_and_custom_instructions(
    vl_served: Served, images: dict[str, PILImage.Image], tmp_path: Path
) -> None:
    documents, sides = _documents(images, tmp_path)
    await _check_an_image_query_with_an_instruction(
        vl_served.base_url, vl_served.served_checkpoint, images["aligned"], documents, sides
    )
    image_query = Image(images["small"])
    expected_default = reference_scores(vl_served.served_checkpoint, Side(None, [images["small"]]), sides[:2])
    async with AsyncRerankClient(vl_served.base_url) as client:
        assert await client.score(image_query, documents[:2]) == pytest.approx(
            expected_default, abs=TOLERANCE
        )


def test_the_family_comes_from_the_server_and_a_wrong_one_is_refused(
    vl_served: Served, served: Served, images: dict[str, PILImage.Image]
) -> None:
    text_only = ["a text document"]
    with RerankClient(vl_served.base_url, model_family="vl") as client:
        (vl_score,) = client.score(QUERY, text_only)
    assert vl_score == pytest.approx(
        reference_scores(vl_served.served_checkpoint, Side(QUERY), [Side("a text document")])[0],
        abs=TOLERANCE,
    )
    with RerankClient(vl_served.base_url, model_family="text") as client, pytest.raises(FamilyMismatchError):
        client.score(QUERY, text_only)
    with RerankClient(served.base_url, model_family="vl") as client, pytest.raises(FamilyMismatchError):
        client.score(QUERY, text_only)
    with (
        RerankClient(served.base_url) as client,
        pytest.raises(InvalidInput, match=r"documents\[1\] has images"),
    ):
        client.score(QUERY, ["text", Image(images["aligned"])])
    assert VL_DEFAULT_INSTRUCTION.endswith(".")


def test_hostile_images_are_refused_before_any_score_request(vl_served: Served, tmp_path: Path) -> None:
    log = RequestLog()
    hostile: list[object] = [
        Image(b"not an image at all"),
        Image(tmp_path / "missing.png"),
        Image("data:image/png;base64,@@@"),
        Image(_png(_noise(8000, 8000, 5))[:1000]),  # truncated: corrupt
    ]
    with log.client() as http, RerankClient(vl_served.base_url, http_client=http) as client:
        client.score(QUERY, ["fine"])  # images wait for the server's family: learn it first
        log.paths.clear()
        for document in hostile:
            with pytest.raises(InvalidInput, match=r"documents\[1\]"):
                client.score(QUERY, ["fine", document])
    assert log.paths == []


@pytest.fixture
def image_site(images: dict[str, PILImage.Image]) -> Iterator[ImageSite]:
    site = ImageSite(_png(images["odd"]))
    yield site
    site.close()


def test_image_urls_are_fetched_only_on_opt_in_and_only_by_the_client(
    vl_served: Served, images: dict[str, PILImage.Image], image_site: ImageSite
) -> None:
    log = RequestLog()
    with log.client() as http, RerankClient(vl_served.base_url, http_client=http) as client:
        client.score(QUERY, ["learn the server first"])
        log.paths.clear()
        with pytest.raises(InvalidInput, match=r"documents\[0\].*not fetched by default.*UrlFetcher"):
            client.score(QUERY, [Image(image_site.url)])
    assert log.paths == []
    assert image_site.hits == 0
    expected = reference_scores(vl_served.served_checkpoint, Side(QUERY), [Side(None, [images["odd"]])])
    with RerankClient(
        vl_served.base_url,
        image_fetcher=UrlFetcher(timeout=5, max_bytes=10_000_000, allowed_hosts=("127.0.0.1",)),
    ) as client:
        assert client.score(QUERY, [Image(image_site.url)]) == pytest.approx(expected, abs=TOLERANCE)
    assert image_site.hits == 1, "fetched once, by the client; the server got the pixels inline"
    fetcher = UrlFetcher(max_bytes=100, allowed_hosts=("127.0.0.1",))
    with RerankClient(vl_served.base_url, image_fetcher=fetcher) as client:
        with pytest.raises(UnusableDocuments, match=r"documents\[0\]: the image URL could not be fetched"):
            client.score(QUERY, [Image(image_site.url)])


def test_the_token_budget_counts_image_tokens(vl_served: Served, images: dict[str, PILImage.Image]) -> None:
    # The large image takes 1,800 image tokens: with max_length 1,900 only ~40 tokens are
    # left for the document's text, which is cut to fit (never a 400 from the server).
    long_text = "Revenue by region and quarter. " * 200
    document = Content(long_text, images=[images["large"]])
    with RerankClient(vl_served.base_url, max_length=1900) as client:
        (result,) = client.rerank(QUERY, [document])
        assert result.truncated
        with pytest.raises(InvalidInput, match="no room"):
            client.score(Content(QUERY, images=[images["large"]]), [document])


# --- a converted (untied) Qwen3-VL reranker behind vLLM's --chat-template --------------------


@pytest.fixture(scope="module")
def templated(server_pool: ServerPool) -> Served:
    """The converted untied VL fixture, served (``--runner pooling``, no overrides) with
    ``tests/data/qwen3_vl_reranker.jinja``: vLLM applies the VL prompt itself."""
    return server_pool.get("vl-converted-server-template")


def test_a_converted_checkpoint_behind_the_vl_server_template_scores_like_the_original(
    templated: Served, images: dict[str, PILImage.Image], tmp_path: Path
) -> None:
    documents, sides = _documents(images, tmp_path)
    expected = reference_scores(vl_converted_original(templated.served_checkpoint), Side(QUERY), sides)
    assert all(0 < score < 1 and score != 0.5 for score in expected)
    for template in ("auto", "server"):  # the bare query and documents go to the server's template
        with RerankClient(templated.base_url, template=template) as client:
            assert client.score(QUERY, documents) == pytest.approx(expected, abs=TOLERANCE), template
    # Formatting on the client too would double the template: refused, never a wrong score.
    with (
        RerankClient(templated.base_url, template="client") as client,
        pytest.raises(TemplateMismatchError, match="applies a score template itself"),
    ):
        client.score(QUERY, documents)


async def test_async_through_the_vl_server_template_with_an_image_query_and_an_instruction(
    templated: Served, images: dict[str, PILImage.Image], tmp_path: Path
) -> None:
    documents, sides = _documents(images, tmp_path)
    reference = vl_converted_original(templated.served_checkpoint)
    await _check_an_image_query_with_an_instruction(
        templated.base_url, reference, images["odd"], documents, sides
    )
