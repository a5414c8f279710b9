"""The template is character-for-character the model card's, and splitting it is free."""

from __future__ import annotations

from pathlib import Path

import pytest
from tokenizers import Tokenizer

from qwen3_vllm_rerank.prompt import (
    DEFAULT_INSTRUCTION,
    format_document,
    format_pair,
    format_prompt,
    format_query,
)
from tests.support.fixtures import Checkpoints
from tests.support.pairs import FIDELITY_CASES

GOLDEN_DEFAULT = (
    "<|im_start|>system\n"
    "Judge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".<|im_end|>\n'
    "<|im_start|>user\n"
    "<Instruct>: Given a web search query, retrieve relevant passages that answer the query\n"
    "<Query>: What is the capital of China?\n"
    "<Document>: The capital of China is Beijing."
    "<|im_end|>\n"
    "<|im_start|>assistant\n"
    "<think>\n\n</think>\n\n"
)


def test_full_prompt_is_the_model_cards_template() -> None:
    prompt = format_prompt("What is the capital of China?", "The capital of China is Beijing.")
    assert prompt == GOLDEN_DEFAULT
    assert prompt.endswith("</think>\n\n")


def test_custom_instruction_replaces_only_the_instruction() -> None:
    prompt = format_prompt("q", "d", instruction="Find code")
    assert "<Instruct>: Find code\n<Query>: q\n<Document>: d<|im_end|>" in prompt
    assert DEFAULT_INSTRUCTION not in prompt


def test_pair_splits_right_after_the_query_newline() -> None:
    text_1, text_2 = format_pair("What is the capital of China?", "The capital of China is Beijing.")
    assert text_1 + text_2 == GOLDEN_DEFAULT
    assert text_1.endswith("<Query>: What is the capital of China?\n")
    assert text_2.startswith("<Document>: The capital of China is Beijing.")
    assert text_1 == format_query("What is the capital of China?")
    assert text_2 == format_document("The capital of China is Beijing.")


def test_none_instruction_means_default() -> None:
    assert format_query("q", None) == format_query("q", DEFAULT_INSTRUCTION)


@pytest.fixture(scope="module")
def tokenizer(checkpoints: Checkpoints) -> Tokenizer:
    return Tokenizer.from_file(str(Path(checkpoints.get("tied")) / "tokenizer.json"))


def _queries_and_documents() -> list[tuple[str, str, str | None]]:
    items = [(c.query, d, c.instruction) for c in FIDELITY_CASES for d in c.documents]
    # Split-point stress: queries ending in punctuation, whitespace and newlines.
    items += [(q, "<x>", None) for q in ("why?\n", "trailing space ", "\n", "a\r", "", "!!!")]
    return items


def test_tokenising_halves_equals_tokenising_the_whole(tokenizer: Tokenizer) -> None:
    for query, document, instruction in _queries_and_documents():
        text_1, text_2 = format_pair(query, document, instruction)
        whole = tokenizer.encode(text_1 + text_2, add_special_tokens=False).ids
        halves = (
            tokenizer.encode(text_1, add_special_tokens=False).ids
            + tokenizer.encode(text_2, add_special_tokens=False).ids
        )
        assert whole == halves, (query, document)


# --- the Qwen3-VL score template the tests serve (tests/data/qwen3_vl_reranker.jinja) ----------

VL_TEMPLATE = Path(__file__).parent / "data" / "qwen3_vl_reranker.jinja"


@pytest.mark.parametrize(
    ("query", "query_images", "document", "document_images", "instruction"),
    [
        ("what is shown?", 0, "a caption", 0, None),
        ("find this", 1, "", 2, None),
        ("", 0, "", 0, "Retrieve images or text that match the query."),
        ("q\nwith a newline", 0, "d", 1, "custom"),
    ],
)
def test_the_vl_server_template_renders_the_clients_prompt_exactly(
    query: str, query_images: int, document: str, document_images: int, instruction: str | None
) -> None:
    """Rendered as vLLM renders a score template (transformers' chat-template renderer, the
    sides as vLLM's parser writes them: each image's placeholder, then the text), it is the
    client's VL prompt character for character, final newline included."""
    from transformers.utils.chat_template_utils import render_jinja_template

    from qwen3_vllm_rerank.prompt import IMAGE_PLACEHOLDER, format_vl_prompt

    messages = [
        {"role": "query", "content": IMAGE_PLACEHOLDER * query_images + query},
        {"role": "document", "content": IMAGE_PLACEHOLDER * document_images + document},
    ]
    kwargs = {} if instruction is None else {"instruction": instruction}
    output = render_jinja_template([messages], chat_template=VL_TEMPLATE.read_text(), **kwargs)
    (rendered,) = output[0] if isinstance(output, tuple) else output  # (prompts, masks) in some versions
    expected = format_vl_prompt(
        query, document, instruction, query_images=query_images, document_images=document_images
    )
    assert rendered == expected
