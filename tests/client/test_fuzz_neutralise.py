"""Fuzzing the prompt's neutralisation: no user string adds a special token to either family's prompt."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from qwen3_vllm_rerank._checkpoints import PAD_TOKEN_ID, QWEN3_ADDED_TOKENS
from qwen3_vllm_rerank.client._sanitize import Neutraliser
from qwen3_vllm_rerank.prompt import PROMPT_FAMILIES
from qwen3_vllm_rerank.testing import write_qwen3_tokenizer

#: Pieces a hostile string is built from: whole added tokens, their halves, their delimiters.
FRAGMENTS = sorted(
    {
        *QWEN3_ADDED_TOKENS,
        *(t[:cut] for t in QWEN3_ADDED_TOKENS for cut in (1, 2, len(t) // 2, len(t) - 1)),
        *(t[cut:] for t in QWEN3_ADDED_TOKENS for cut in (1, 2, len(t) // 2, len(t) - 1)),
        "<|",
        "|>",
        "<",
        ">",
        "|",
        "/",
        "\n",
        "\n\n",
        " ",
        "\u200b",
        "im_start",
        "im_end",
        "assistant",
        "yes",
        "<Document>:",
        "<Query>:",
    }
)
HOSTILE = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=4)), max_size=12).map("".join)


@pytest.fixture(scope="module")
def qwen3_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    directory: Path = tmp_path_factory.mktemp("qwen3-tokenizer")
    write_qwen3_tokenizer(directory)
    return Tokenizer.from_file(str(directory / "tokenizer.json"))


def _added_ids(tokenizer: Tokenizer, text: str) -> list[int]:
    return [i for i in tokenizer.encode(text, add_special_tokens=False).ids if i >= PAD_TOKEN_ID]


@pytest.mark.parametrize("family", sorted(PROMPT_FAMILIES))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=HOSTILE, document=HOSTILE, instruction=HOSTILE)
def test_neutralised_text_adds_no_special_token_to_the_prompt(
    qwen3_tokenizer: Tokenizer, family: str, query: str, document: str, instruction: str
) -> None:
    """The prompt of neutralised user text holds exactly the template's own added tokens, in order."""
    prompt = PROMPT_FAMILIES[family]  # type: ignore[index]
    neutralise = Neutraliser(QWEN3_ADDED_TOKENS)
    template = _added_ids(qwen3_tokenizer, prompt.full_prompt("q", "d", "i"))
    sent = prompt.full_prompt(neutralise(query), neutralise(document), neutralise(instruction))
    assert _added_ids(qwen3_tokenizer, sent) == template
