"""Qwen's own reference implementation of Qwen3-Reranker scoring (from the model card).

Deliberately independent of ``qwen3_vllm_rerank.prompt``: the template is written out
here again, as the model card writes it, so a mistake in the library's template
shows up as a fidelity failure instead of being copied into the reference.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query "
    'and the Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n'
    "<|im_start|>user\n"
)
SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
MAX_LENGTH = 8192


def format_instruction(instruction: str | None, query: str, doc: str) -> str:
    if instruction is None:
        instruction = DEFAULT_INSTRUCTION
    return f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {doc}"


@cache
def _load(checkpoint: str) -> tuple[Any, Any]:
    tokenizer = AutoTokenizer.from_pretrained(checkpoint, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    return tokenizer, model


def reference_scores(
    checkpoint: Path | str, query: str, documents: list[str], instruction: str | None = None
) -> list[float]:
    """p(yes) per document, computed exactly as the Qwen3-Reranker model card does."""
    tokenizer, model = _load(str(checkpoint))
    prefix_tokens = tokenizer.encode(PREFIX, add_special_tokens=False)
    suffix_tokens = tokenizer.encode(SUFFIX, add_special_tokens=False)
    token_false_id = tokenizer.convert_tokens_to_ids("no")
    token_true_id = tokenizer.convert_tokens_to_ids("yes")
    pairs = [format_instruction(instruction, query, doc) for doc in documents]
    inputs = tokenizer(
        pairs,
        padding=False,
        truncation="longest_first",
        return_attention_mask=False,
        max_length=MAX_LENGTH - len(prefix_tokens) - len(suffix_tokens),
    )
    for i, ids in enumerate(inputs["input_ids"]):
        inputs["input_ids"][i] = prefix_tokens + ids + suffix_tokens
    batch = tokenizer.pad(inputs, padding=True, return_tensors="pt", max_length=MAX_LENGTH)
    with torch.no_grad():
        logits = model(**batch).logits[:, -1, :]
    pair_logits = torch.stack([logits[:, token_false_id], logits[:, token_true_id]], dim=1)
    return torch.nn.functional.log_softmax(pair_logits, dim=1)[:, 1].exp().tolist()  # type: ignore[no-any-return]
