"""The Qwen3-Reranker and Qwen3-VL-Reranker prompt templates, exactly as their authors write them.

Pure functions, no I/O. The pair sent to vLLM's score API is split right after the
query's newline: vLLM tokenises ``text_1 + text_2`` as one string (no separator for
"LLM as reranker" checkpoints), so the split point only decides which part is the
shared per-query prefix.

Qwen3-VL-Reranker's prompt is a different one (the official ``Qwen3VLReranker`` in
QwenLM/Qwen3-VL-Embedding renders it through the chat template)::

    <|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n
    <Instruct>: {instruction}<Query>:{query images}{query}\n<Document>:{document images}{document}
    <|im_end|>\n<|im_start|>assistant\n

(one line in reality): no newline before ``<Query>:``, no space after ``<Query>:`` and
``<Document>:``, no think block, its own default instruction, each image as
``<|vision_start|><|image_pad|><|vision_end|>`` right before the text of its side, and the
text ``NULL`` for a side with neither text nor image. :func:`vl_query_param` and
:func:`vl_document_param` build vLLM ``/v1/score`` parameters that give exactly this prompt
(served with no ``--chat-template``): the placeholders are written into the text where the
official prompt has them, so vLLM, which counts them, adds none of its own; the images ride
along as ``image_url`` parts, in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = [
    "DEFAULT_INSTRUCTION",
    "IMAGE_PLACEHOLDER",
    "PREFIX",
    "SUFFIX",
    "SYSTEM_PROMPT",
    "VL_DEFAULT_INSTRUCTION",
    "VL_EMPTY",
    "VL_SUFFIX",
    "format_document",
    "format_pair",
    "format_prompt",
    "format_query",
    "format_vl_document",
    "format_vl_prompt",
    "format_vl_query",
    "image_part",
    "vl_document_param",
    "vl_query_param",
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


# --- Qwen3-VL-Reranker ----------------------------------------------------------------

VL_DEFAULT_INSTRUCTION = "Given a search query, retrieve relevant candidates that answer the query."
VL_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n"
#: One image in the prompt, before vLLM expands ``<|image_pad|>`` to the image's tokens.
IMAGE_PLACEHOLDER = "<|vision_start|><|image_pad|><|vision_end|>"
#: What the official reranker writes for a query or document with neither text nor image.
VL_EMPTY = "NULL"


def _vl_side(text: str, n_images: int) -> str:
    if n_images < 0:
        raise ValueError(f"n_images must be >= 0, got {n_images}")
    if not text and n_images == 0:
        return VL_EMPTY
    return IMAGE_PLACEHOLDER * n_images + text


def format_vl_query(query: str, instruction: str | None = None, *, n_images: int = 0) -> str:
    """The shared first half of every VL pair: prefix, instruction, the query's image
    placeholders and text, and the ``<Document>:`` tag the document follows."""
    if instruction is None:
        instruction = VL_DEFAULT_INSTRUCTION
    return f"{PREFIX}<Instruct>: {instruction}<Query>:{_vl_side(query, n_images)}\n<Document>:"


def format_vl_document(document: str, *, n_images: int = 0) -> str:
    """The second half of a VL pair: the document's image placeholders and text, and the
    assistant suffix."""
    return f"{_vl_side(document, n_images)}{VL_SUFFIX}"


def format_vl_prompt(
    query: str,
    document: str,
    instruction: str | None = None,
    *,
    query_images: int = 0,
    document_images: int = 0,
) -> str:
    """The whole VL prompt as one string, image placeholders not yet expanded."""
    return format_vl_query(query, instruction, n_images=query_images) + format_vl_document(
        document, n_images=document_images
    )


def image_part(url: str) -> dict[str, Any]:
    """One image as a score-API content part (``url``: a ``data:`` URL, see ``images.py``)."""
    return {"type": "image_url", "image_url": {"url": url}}


def _param(text: str, image_urls: Sequence[str]) -> str | dict[str, Any]:
    if not image_urls:
        return text
    return {"content": [*(image_part(url) for url in image_urls), {"type": "text", "text": text}]}


def vl_query_param(
    query: str, image_urls: Sequence[str] = (), instruction: str | None = None
) -> str | dict[str, Any]:
    """``text_1`` for vLLM's ``/v1/score``: a string, or ``{"content": [...]}`` when the
    query has images (``image_urls``: the prepared images' data URLs, in order)."""
    return _param(format_vl_query(query, instruction, n_images=len(image_urls)), image_urls)


def vl_document_param(document: str, image_urls: Sequence[str] = ()) -> str | dict[str, Any]:
    """One element of ``text_2`` for vLLM's ``/v1/score``: a string, or
    ``{"content": [...]}`` when the document has images."""
    return _param(format_vl_document(document, n_images=len(image_urls)), image_urls)
