"""The engine mode's two row steps around Ray's vLLM stage: render each row's prompt before it
(:func:`prompt_batch`), read each row's score after it (:func:`score_batch`).

A row that cannot be scored still goes through the stage, with a one-token stand-in prompt (Ray's
stage needs a prompt in every row, and splitting the dataset would read it twice); its reason is kept
beside it and its stand-in score dropped. The stage's own failure of a row (``__inference_error__``)
becomes that row's error; the stage's other columns are dropped.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

from .._checkpoints import Family
from ..client._budget import LongDocuments
from ._columns import ERROR, SCORE, is_missing
from ._prepare import Prompt, PromptBuilder
from ._rows import by_query, documents_of, text_rows

__all__ = ["PROMPT", "STAGE_COLUMNS", "PromptSettings", "prompt_batch", "score_batch"]

#: The column Ray's vLLM stage reads the prompt from.
PROMPT = "prompt"
_REASON = "__qwen3_rerank_reason__"
_STAND_IN = "no"
#: The columns Ray 2.60's vLLM stage adds (every one is dropped from the output).
STAGE_COLUMNS = (
    PROMPT,
    "prompt_token_ids",
    "num_input_tokens",
    "generated_tokens",
    "generated_text",
    "num_generated_tokens",
    "embeddings",
    "metrics",
    "logprobs",
    "prompt_logprobs",
    "request_id",
    "batch_uuid",
    "time_taken_llm",
    "params",
    "__inference_error__",
)


@dataclass(frozen=True, slots=True)
class PromptSettings:
    """What rendering depends on (the same on every worker)."""

    model: str
    family: Family
    max_tokens: int | None
    long_documents: LongDocuments
    instruction: str | None
    tokenizer: str | None
    query: str
    document: str


@functools.lru_cache(maxsize=4)
def _builder(settings: PromptSettings) -> PromptBuilder:
    """One builder per worker process and settings (its tokenizer loaded once)."""
    return PromptBuilder(
        settings.model,
        family=settings.family,
        max_tokens=settings.max_tokens,
        long_documents=settings.long_documents,
        instruction=settings.instruction,
        tokenizer=settings.tokenizer,
    )


def prompt_batch(batch: Any, *, settings: PromptSettings) -> Any:
    """A pandas batch with each row's prompt (or stand-in) and the reason it cannot be scored."""
    builder = _builder(settings)
    pairs, outcomes = text_rows(
        list(batch[settings.query]),
        list(batch[settings.document]),
        query_column=settings.query,
        document_column=settings.document,
    )
    prompts: list[Prompt] = [Prompt(None, error) for _, error in outcomes]
    for query, rows in by_query(pairs).items():
        for position, prompt in zip(rows, builder.build(query, documents_of(pairs, rows)), strict=True):
            prompts[position] = prompt
    batch = batch.copy()
    batch[PROMPT] = [p.text if p.text is not None else _STAND_IN for p in prompts]
    batch[_REASON] = [p.error for p in prompts]
    return batch


def _score_of(embedding: Any) -> tuple[float | None, str | None]:
    values = [] if embedding is None else list(embedding)
    if len(values) != 1:
        return None, f"the engine returned {len(values)} values for this row instead of one score"
    score = float(values[0])
    if not (math.isfinite(score) and 0.0 <= score <= 1.0):
        return None, f"the engine returned {score!r}, not a probability: is this a Qwen3 reranker?"
    return score, None


def score_batch(batch: Any) -> Any:
    """A pandas batch with :data:`SCORE` and :data:`ERROR`, and none of the stage's columns."""
    scores: list[float | None] = []
    errors: list[str | None] = []
    failures = batch["__inference_error__"] if "__inference_error__" in batch else [None] * len(batch)
    for reason, failure, embedding in zip(batch[_REASON], failures, batch["embeddings"], strict=True):
        if not is_missing(reason):
            scores.append(None)
            errors.append(str(reason))
        elif isinstance(failure, str) and failure:
            scores.append(None)
            errors.append(f"the vLLM engine failed this row: {failure}")
        else:
            score, error = _score_of(embedding)
            scores.append(score)
            errors.append(error)
    batch = batch.drop(columns=[c for c in (*STAGE_COLUMNS, _REASON) if c in batch.columns])
    batch[SCORE] = scores
    batch[ERROR] = errors
    return batch
