"""The Qwen3-Reranker and Qwen3-VL-Reranker prompt templates, exactly as their authors write them.

Pure functions, no I/O. Both families answer "yes"/"no" to a system prompt, an
instruction, a query and a document, but their templates differ; which one a call uses
follows from the model the server serves, never from the input. A :class:`PromptFamily`
(``PROMPT_FAMILIES[name]``) turns a query and documents into vLLM score-API parameters for
one family; the ``format_*`` functions below are the templates themselves.

The pair sent to vLLM's score API is split right after the query's newline: vLLM
tokenises ``text_1 + text_2`` as one string (no separator for "LLM as reranker"
checkpoints; measured with vLLM 0.32), so the split point only decides which part is the
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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import InvalidInput

if TYPE_CHECKING:
    from ._checkpoints import Family
    from ._protocol import ScoreParam

__all__ = [
    "DEFAULT_INSTRUCTION",
    "IMAGE_PLACEHOLDER",
    "PREFIX",
    "PROMPT_FAMILIES",
    "SUFFIX",
    "SYSTEM_PROMPT",
    "VL_DEFAULT_INSTRUCTION",
    "VL_EMPTY",
    "VL_SUFFIX",
    "PromptFamily",
    "format_document",
    "format_pair",
    "format_prompt",
    "format_query",
    "format_vl_document",
    "format_vl_prompt",
    "format_vl_query",
    "image_part",
    "raw_param",
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
        raise InvalidInput(f"n_images must be >= 0, got {n_images}")
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


def raw_param(text: str, image_urls: Sequence[str] = ()) -> str | dict[str, Any]:
    """A query or document side as a score-API parameter: ``text`` itself, or
    ``{"content": [...]}`` with the images (data URLs, in order) before the text. Sent as it
    is to a server that applies the template itself; the ``vl_*_param`` functions pass it
    templated text."""
    if not image_urls:
        return text
    return {"content": [*(image_part(url) for url in image_urls), {"type": "text", "text": text}]}


def vl_query_param(
    query: str, image_urls: Sequence[str] = (), instruction: str | None = None
) -> str | dict[str, Any]:
    """``text_1`` for vLLM's ``/v1/score``: a string, or ``{"content": [...]}`` when the
    query has images (``image_urls``: the prepared images' data URLs, in order)."""
    return raw_param(format_vl_query(query, instruction, n_images=len(image_urls)), image_urls)


def vl_document_param(document: str, image_urls: Sequence[str] = ()) -> str | dict[str, Any]:
    """One element of ``text_2`` for vLLM's ``/v1/score``: a string, or
    ``{"content": [...]}`` when the document has images."""
    return raw_param(format_vl_document(document, n_images=len(image_urls)), image_urls)


# --- the two families behind one interface --------------------------------------------


@dataclass(frozen=True, slots=True)
class PromptFamily:
    """How one family's prompt is split into vLLM's ``text_1`` (shared query prefix) and
    ``text_2`` (each document with the assistant suffix), images included.

    Args:
        name: ``"text"`` (Qwen3-Reranker) or ``"vl"`` (Qwen3-VL-Reranker).
        default_instruction: the instruction its authors use when none is given.
    """

    name: Family
    default_instruction: str

    def query_text(self, query: str, instruction: str | None) -> str:
        """The text of ``text_1`` without image markers (what the token budget counts)."""
        if self.name == "vl":
            return format_vl_query(query, instruction)
        return format_query(query, instruction)

    def document_text(self, document: str) -> str:
        """The text of ``text_2`` without image markers (what the token budget counts)."""
        if self.name == "vl":
            return format_vl_document(document)
        return format_document(document)

    def full_prompt(self, query: str, document: str, instruction: str | None) -> str:
        """The whole text-only prompt, as the model reads it."""
        return self.query_text(query, instruction) + self.document_text(document)

    def query_param(self, query: str, image_urls: Sequence[str], instruction: str) -> ScoreParam:
        """``text_1`` for ``/v1/score`` when the client formats the prompt."""
        if self.name == "vl":
            return vl_query_param(query, image_urls, instruction)
        return format_query(query, instruction)

    def document_param(self, document: str, image_urls: Sequence[str]) -> ScoreParam:
        """One element of ``text_2`` for ``/v1/score`` when the client formats the prompt."""
        if self.name == "vl":
            return vl_document_param(document, image_urls)
        return format_document(document)


#: The prompt of each family, by name.
PROMPT_FAMILIES: Mapping[Family, PromptFamily] = {
    "text": PromptFamily("text", DEFAULT_INSTRUCTION),
    "vl": PromptFamily("vl", VL_DEFAULT_INSTRUCTION),
}
