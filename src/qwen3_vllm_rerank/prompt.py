"""The Qwen3-Reranker prompt template, exactly as the model card writes it.

Pure functions, no I/O. The pair sent to vLLM's score API is split right after the
query's newline: vLLM tokenises ``text_1 + text_2`` as one string (no separator for
"LLM as reranker" checkpoints), so the split point only decides which part is the
shared per-query prefix.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_INSTRUCTION",
    "PREFIX",
    "SUFFIX",
    "SYSTEM_PROMPT",
    "format_document",
    "format_pair",
    "format_prompt",
    "format_query",
]

SYSTEM_PROMPT = (
    "Judge whether the Document meets the requirements based on the Query and the "
    'Instruct provided. Note that the answer can only be "yes" or "no".'
)
DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
PREFIX = f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n"
SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"


def format_query(query: str, instruction: str | None = None) -> str:
    """The shared first half of every pair for ``query``: prefix, instruction, query."""
    if instruction is None:
        instruction = DEFAULT_INSTRUCTION
    return f"{PREFIX}<Instruct>: {instruction}\n<Query>: {query}\n"


def format_document(document: str) -> str:
    """The second half of a pair: the document and the assistant suffix."""
    return f"<Document>: {document}{SUFFIX}"


def format_pair(query: str, document: str, instruction: str | None = None) -> tuple[str, str]:
    """``(text_1, text_2)`` for vLLM's ``/score``; their concatenation is the full prompt."""
    return format_query(query, instruction), format_document(document)


def format_prompt(query: str, document: str, instruction: str | None = None) -> str:
    """The whole prompt as one string (what the model reads)."""
    text_1, text_2 = format_pair(query, document, instruction)
    return text_1 + text_2
