"""Long documents: the template always survives, the server never sees an over-long pair."""

from __future__ import annotations

from pydoc_data.topics import topics

import pytest
from tokenizers import Tokenizer

from qwen3_vllm_rerank import AsyncRerankClient, InvalidInput, RerankClient, UnusableDocuments
from qwen3_vllm_rerank.client._budget import LongDocuments, fit_documents
from qwen3_vllm_rerank.client._flow import Flow
from qwen3_vllm_rerank.client._tokens import LocalTokens, ServerTokens, load_tokenizer
from qwen3_vllm_rerank.prompt import SUFFIX, format_document, format_prompt, format_query
from tests.support.fixtures import Checkpoints, Served
from tests.support.recording import RequestLog
from tests.support.reference import reference_scores

QUERY = "How are exceptions handled?"
CORPUS = "\n\n".join(topics.values())  # ~ 600 kB of real English
MEGABYTE_DOCUMENT = (CORPUS * 2)[:1_000_000]


def _value(flow: Flow[object]) -> object:
    """Run a flow that needs no I/O (a local tokenizer)."""
    try:
        next(flow)
    except StopIteration as stop:
        return stop.value
    raise AssertionError("the flow asked for I/O")


def _fit(
    documents: list[str], max_tokens: int, policy: LongDocuments, tokenizer: Tokenizer
) -> list[list[str]]:
    """What the client sends for each document, with the local tokenizer."""
    flow = fit_documents(
        format_query(QUERY),
        documents,
        max_tokens=max_tokens,
        policy=policy,
        tokens=lambda: LocalTokens(tokenizer),
    )
    return [p.pieces for p in _value(flow)]  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def tokenizer(checkpoints: Checkpoints) -> Tokenizer:
    """The served fixture checkpoint's own tokenizer.json, read without starting a server."""
    return load_tokenizer(checkpoints.get("tied"))


def _prompt_tokens(tokenizer: Tokenizer, document: str) -> int:
    return len(tokenizer.encode(format_prompt(QUERY, document), add_special_tokens=False).ids)


def test_megabyte_document_is_truncated_never_a_400_and_scores_what_was_kept(
    served: Served, tokenizer: Tokenizer
) -> None:
    short = "Exceptions are handled with try and except."
    with RerankClient(served.base_url) as client:
        results = client.rerank(QUERY, [MEGABYTE_DOCUMENT, short])
        max_tokens = client.max_tokens
    assert max_tokens == 8192
    by_index = {r.index: r for r in results}
    assert by_index[0].truncated
    assert not by_index[1].truncated
    assert by_index[0].document is MEGABYTE_DOCUMENT
    # The text the client kept: the longest head that fits, with the template whole.
    ((kept,),) = _fit([MEGABYTE_DOCUMENT], 8192, "truncate", tokenizer)
    assert MEGABYTE_DOCUMENT.startswith(kept)
    assert 8192 - 16 <= _prompt_tokens(tokenizer, kept) <= 8192
    expected = reference_scores(served.original, QUERY, [kept, short])
    assert by_index[0].score == pytest.approx(expected[0], abs=1e-4)
    assert by_index[1].score == pytest.approx(expected[1], abs=1e-4)


def test_max_length_caps_the_budget_and_the_suffix_survives(served: Served, tokenizer: Tokenizer) -> None:
    document = topics["exceptions"]
    with RerankClient(served.base_url, max_length=300) as client:
        (result,) = client.rerank(QUERY, [document])
    assert result.truncated
    ((kept,),) = _fit([document], 300, "truncate", tokenizer)
    assert _prompt_tokens(tokenizer, kept) <= 300
    assert format_prompt(QUERY, kept).endswith(SUFFIX)
    assert result.score == pytest.approx(reference_scores(served.original, QUERY, [kept])[0], abs=1e-4)


async def test_chunk_policy_scores_every_window_and_reports_the_best(
    served: Served, tokenizer: Tokenizer
) -> None:
    relevant = topics["try"][:600]
    document = topics["lambda"] + "\n\n" + topics["assert"] + "\n\n" + relevant
    async with AsyncRerankClient(served.base_url, max_length=256, long_documents="chunk") as client:
        (result,) = await client.rerank(QUERY, [document])
        (score,) = await client.score(QUERY, [document])
    (windows,) = _fit([document], 256, "chunk", tokenizer)
    assert len(windows) > 2
    assert "".join(windows) == document  # the windows tile the whole document
    assert all(_prompt_tokens(tokenizer, w) <= 256 for w in windows)
    expected = reference_scores(served.original, QUERY, windows)
    best = max(range(len(windows)), key=expected.__getitem__)
    assert result.window == best
    assert result.score == pytest.approx(expected[best], abs=1e-4)
    assert score == pytest.approx(expected[best], abs=1e-4)
    assert not result.truncated


def test_error_policy_names_the_numbers(served: Served) -> None:
    with RerankClient(served.base_url, max_length=200, long_documents="error") as client:
        assert len(client.score(QUERY, ["short"])) == 1
        # Retrieved data: that document only (UnusableDocuments, which adapters can pass through).
        with pytest.raises(
            UnusableDocuments, match=r"documents\[1\]: it needs \d+ tokens .* over the server's 200"
        ):
            client.score(QUERY, ["short", topics["exceptions"]])


def test_query_that_cannot_fit_is_invalid_input(served: Served) -> None:
    with RerankClient(served.base_url, max_length=120) as client:
        with pytest.raises(InvalidInput, match=r"the query and instruction take \d+ tokens .* 120-token"):
            client.score(QUERY * 20, ["a document"])


def test_server_tokenizer_cuts_to_fit_too(served: Served, tokenizer: Tokenizer) -> None:
    document = topics["exceptions"]
    with RerankClient(served.base_url, max_length=300, tokenizer="server") as client:
        (result,) = client.rerank(QUERY, [document])
        (prepared,) = client._run(
            fit_documents(
                format_query(QUERY),
                [document],
                max_tokens=300,
                policy="truncate",
                tokens=lambda: ServerTokens(served.model),
            )
        )
    kept = prepared.pieces[0]
    assert result.truncated
    assert document.startswith(kept)
    assert 300 - 32 <= _prompt_tokens(tokenizer, kept) <= 300
    assert result.score == pytest.approx(reference_scores(served.original, QUERY, [kept])[0], abs=1e-4)


def test_documents_that_fit_are_sent_unchanged(tokenizer: Tokenizer) -> None:
    documents = ["short", "", topics["for"]]
    assert _fit(documents, 8192, "truncate", tokenizer) == [[d] for d in documents]
    assert format_document("") == "<Document>: " + SUFFIX


def test_truncating_a_huge_document_with_the_server_tokenizer_cuts_the_head_only(served: Served) -> None:
    # Regression: "truncate" used to compute every window of the document and keep the first:
    # with the server's tokenizer, one /detokenize request per window (hundreds for 1 MB).
    log = RequestLog()
    with log.client() as http, RerankClient(served.base_url, tokenizer="server", http_client=http) as client:
        (result,) = client.rerank(QUERY, [MEGABYTE_DOCUMENT])
    assert result.truncated
    assert log.paths.count("/detokenize") <= 6, "one cut, re-cut a few times at most if a seam grew"
    assert log.paths.count("/detokenize") >= 1
