"""One adapter call: whatever one document's content does, it fails only that document.

A counting stand-in for a Qwen3-VL-Reranker vLLM server (``httpx.MockTransport``: these are
faults a real server is not needed for, and the image limit it enforces is vLLM 0.32's own
message) and a loopback image site whose URLs fail on their first fetch ("flapping"). Every
check of a document's content happens before the first score batch: with
``on_error="passthrough"`` the others are scored in the same client call, no batch is sent
twice, no image fetched twice; with ``"raise"`` one ``UnusableDocuments`` names them all.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from langchain_core.documents import Document
from PIL import Image as PILImage
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace

from langchain_qwen3_vllm_rerank import Qwen3VLLMReranker
from qwen3_vllm_rerank import (
    AsyncRerankClient,
    Content,
    Image,
    InvalidInput,
    RerankClient,
    UnusableDocuments,
    UrlFetcher,
)
from tests.support.recording import ImageSite

QUERY = "a chart of quarterly revenue"
LIMIT = 2  # the stand-in server's --limit-mm-per-prompt


def _png(color: tuple[int, int, int] = (10, 120, 200)) -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", (64, 64), color).save(buffer, format="PNG")
    return buffer.getvalue()


class FakeVL:
    """A Qwen3-VL-Reranker server in a ``MockTransport``: counts every request and every score
    batch by its documents, refuses a prompt with more than :data:`LIMIT` images as vLLM does."""

    def __init__(self, max_model_len: int = 8192, model: str = "m") -> None:
        self.max_model_len = max_model_len
        self.model = model
        self.paths: list[str] = []
        self.batches: Counter[str] = Counter()

    def reset(self) -> None:
        """Forget the requests so far (the client's one-off discovery probes)."""
        self.paths.clear()
        self.batches.clear()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        if request.url.path == "/v1/models":
            return httpx.Response(
                200, json={"data": [{"id": self.model, "max_model_len": self.max_model_len}]}
            )
        body = json.loads(request.content)
        documents = body["text_2"]
        self.batches[json.dumps(documents, sort_keys=True)] += 1
        for document in documents:
            parts = document.get("content", []) if isinstance(document, dict) else []
            if sum(p.get("type") == "image_url" for p in parts) > LIMIT:
                message = f"At most {LIMIT} image(s) may be provided in one prompt."
                return httpx.Response(400, json={"error": {"message": message}})
        data = [{"index": i, "score": 0.9 - 0.01 * i} for i in range(len(documents))]
        return httpx.Response(200, json={"data": data, "usage": {"prompt_tokens": 2}})

    @property
    def scores(self) -> int:
        return self.paths.count("/v1/score")

    def assert_no_batch_sent_twice(self) -> None:
        assert all(n == 1 for n in self.batches.values()), "a batch was sent twice"


@pytest.fixture
def site() -> Iterator[ImageSite]:
    """``/ok-N.png`` always answers; ``/flap-N.png`` fails its first fetch and answers later ones."""
    served = ImageSite(_png(), flapping="/flap")
    yield served
    served.close()


def _fetcher() -> UrlFetcher:
    return UrlFetcher(timeout=5, allowed_hosts=("127.0.0.1",))


def _reranker(fake: FakeVL, **settings: object) -> Qwen3VLLMReranker:
    """An adapter on ``fake`` that has learnt about the server already (its probes forgotten)."""
    reranker = Qwen3VLLMReranker(
        base_url="http://vllm",
        model="m",
        model_family="vl",
        template="client",
        top_n=None,
        image_cache=0,
        http_client=httpx.Client(transport=httpx.MockTransport(fake)),
        http_async_client=httpx.AsyncClient(transport=httpx.MockTransport(fake)),
        **settings,
    )
    reranker.compress_documents([Document(page_content="warm up")], QUERY)
    fake.reset()
    return reranker


def test_two_flapping_urls_fail_only_their_documents_and_nothing_is_fetched_or_sent_twice(
    site: ImageSite,
) -> None:
    fake = FakeVL()
    reranker = _reranker(fake, on_error="passthrough", image_fetcher=_fetcher())
    documents = [
        Document(page_content="revenue", metadata={"image": f"{site.base}/ok-0.png"}),
        Document(page_content="flap one", metadata={"image": f"{site.base}/flap-1.png"}),
        Document(page_content="plain text"),
        Document(page_content="flap two", metadata={"image": f"{site.base}/flap-2.png"}),
    ]
    returned = reranker.compress_documents(documents, QUERY)
    scored = [d.page_content for d in returned if "relevance_score" in d.metadata]
    unusable = [d.page_content for d in returned if "rerank_error" in d.metadata]
    assert sorted(scored) == ["plain text", "revenue"]
    assert unusable == ["flap one", "flap two"], "last, in retrieval order"
    assert all(d.metadata["rerank_error"].startswith("UnusableDocuments: ") for d in returned[2:])
    assert set(site.by_path.values()) == {1}, "every image fetched once"
    assert fake.scores == 1, "one score batch (batch_size holds them all)"
    fake.assert_no_batch_sent_twice()


def test_raise_mode_names_every_unusable_document_before_any_score_batch(site: ImageSite) -> None:
    fake = FakeVL()
    reranker = _reranker(fake, image_fetcher=_fetcher())
    documents = [
        Document(page_content="flap", metadata={"image": f"{site.base}/flap-0.png"}),
        Document(page_content="fine"),
        Document(page_content="flap", metadata={"image": f"{site.base}/flap-1.png"}),
        Document(page_content="not an image", metadata={"image": 1.5}),
    ]
    with pytest.raises(UnusableDocuments) as raised:
        reranker.compress_documents(documents, QUERY)
    assert set(raised.value.reasons) == {3}, "the adapter's own finding, before the client is called"
    assert "float, which is no image" in raised.value.reasons[3]
    with pytest.raises(UnusableDocuments) as raised:
        reranker.compress_documents(documents[:3], QUERY)
    assert set(raised.value.reasons) == {0, 2}, "every bad document at once"
    assert fake.scores == 0, "before any score batch"
    # A limit the server states only when refusing: its refusal of the first batch, sent alone,
    # is the only batch sent.
    with pytest.raises(UnusableDocuments) as raised:
        reranker.compress_documents([Document(page_content="many", metadata={"image": [_png()] * 3})], QUERY)
    assert "limit of 2 per prompt" in raised.value.reasons[0]
    assert fake.scores == 1


@pytest.mark.parametrize("asynchronous", [False, True])
async def test_more_images_than_the_server_takes_fail_only_that_document(asynchronous: bool) -> None:
    fake = FakeVL()
    reranker = _reranker(fake, on_error="passthrough", batch_size=1)
    documents = [
        Document(page_content="one page", metadata={"image": _png()}),
        Document(page_content="five pages", metadata={"image": [_png((i, 0, 0)) for i in range(5)]}),
        Document(page_content="text"),
    ]
    if asynchronous:
        await reranker.acompress_documents([Document(page_content="warm up")], QUERY)
        fake.reset()  # the async client's own discovery probes
        returned = await reranker.acompress_documents(documents, QUERY)
    else:
        returned = reranker.compress_documents(documents, QUERY)
    assert [d.page_content for d in returned if "relevance_score" in d.metadata] == ["one page", "text"]
    assert "over the server's limit of 2 per prompt" in returned[-1].metadata["rerank_error"]
    # The five-page batch went alone first and was refused; the others were each sent once.
    assert fake.scores == 3
    assert all("five" not in batch for batch in list(fake.batches)[1:])
    fake.assert_no_batch_sent_twice()
    # Known to this client from now on: refused before anything is sent.
    before = fake.scores
    if asynchronous:
        again = await reranker.acompress_documents(documents[1:2], QUERY)
    else:
        again = reranker.compress_documents(documents[1:2], QUERY)
    assert "rerank_error" in again[0].metadata
    assert fake.scores == before


LONE = json.loads('"cut emoji \\ud83d here"')


@pytest.mark.parametrize("asynchronous", [False, True])
async def test_a_lone_surrogate_in_a_document_is_replaced_and_scored(asynchronous: bool) -> None:
    fake = FakeVL()
    reranker = _reranker(fake)
    documents = [Document(page_content=LONE), Document(page_content="fine")]
    if asynchronous:
        await reranker.acompress_documents([Document(page_content="warm up")], QUERY)
        fake.reset()  # the async client's own discovery probes
        returned = await reranker.acompress_documents(documents, QUERY)
    else:
        returned = reranker.compress_documents(documents, QUERY)
    assert {d.page_content for d in returned} == {LONE, "fine"}, "the caller's documents, unchanged"
    assert all("relevance_score" in d.metadata for d in returned)
    (sent,) = fake.batches  # one batch: the repaired document and the other
    assert "cut emoji \ufffd here" in "".join(json.loads(sent)), "repaired with U+FFFD when sent"


def test_a_lone_surrogate_in_the_query_is_the_callers_invalid_input() -> None:
    fake = FakeVL()
    reranker = _reranker(fake, on_error="passthrough")
    with pytest.raises(InvalidInput, match="lone surrogate") as raised:
        reranker.compress_documents([Document(page_content="fine")], LONE)
    assert not isinstance(raised.value, UnusableDocuments)
    assert fake.scores == 0


def test_without_a_tokenizer_only_documents_that_may_not_fit_are_unusable() -> None:
    fake = FakeVL(max_model_len=400, model="Qwen/not-a-local-directory")
    # A hub id with an api_key: no tokenizer can be had (none downloaded, /tokenize not used).
    client = RerankClient(
        "http://vllm",
        model="Qwen/not-a-local-directory",
        model_family="vl",
        template="client",
        api_key="sk-test",
        http_client=httpx.Client(transport=httpx.MockTransport(fake)),
    )
    long, short = "word " * 500, "a short one"  # the short one fits by its UTF-8 bytes alone
    client.score(QUERY, [short])
    fake.reset()
    ranking = client.rerank_usable(QUERY, [long, short, long])
    assert [r.index for r in ranking.results] == [1]
    assert set(ranking.unusable) == {0, 2}
    assert "pass tokenizer=" in ranking.unusable[0]
    with pytest.raises(UnusableDocuments) as raised:
        client.rerank(QUERY, [long, short])
    assert set(raised.value.reasons) == {0}
    assert fake.scores == 1, "the strict call sent nothing"


def _word_tokenizer() -> Tokenizer:
    """A stand-in tokenizer (one token per word): the budget's arithmetic, not Qwen3's vocabulary."""
    tokenizer = Tokenizer(WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = Whitespace()
    return tokenizer


async def test_page_images_that_leave_no_room_fail_only_their_document() -> None:
    fake = FakeVL(max_model_len=400)  # a 64x64 page takes 4 + 2 tokens: 80 pages leave no room
    async with AsyncRerankClient(
        "http://vllm",
        model="m",
        model_family="vl",
        template="client",
        tokenizer=_word_tokenizer(),
        image_cache=0,
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(fake)),
    ) as client:
        pages = Content("slides", images=[_png((i, i, 0)) for i in range(80)])
        await client.score(QUERY, ["warm up"])
        fake.reset()
        ranking = await client.rerank_usable(QUERY, ["fine", pages])
        with pytest.raises(UnusableDocuments) as raised:
            await client.rerank(QUERY, ["fine", pages])
    assert [r.index for r in ranking.results] == [0]
    assert "leaves no room" in ranking.unusable[1]
    assert set(raised.value.reasons) == {1}
    assert fake.scores == 1
    fake.assert_no_batch_sent_twice()


def test_retrieved_paths_and_urls_are_marked_retrieved_data_is_not() -> None:
    from langchain_qwen3_vllm_rerank.rerank import _inputs

    inputs = _inputs(
        [
            Document(page_content="a", metadata={"image": "/srv/pages/1.png"}),
            Document(page_content="b", metadata={"image": ["https://cdn.example/2.png", _png()]}),
            Document(page_content="c", metadata={"image": Image("file:///srv/3.png")}),
        ]
    )
    images = [image for content in inputs if isinstance(content, Content) for image in content.images]
    assert [isinstance(i, Image) and i.retrieved for i in images] == [True, True, False, True]
