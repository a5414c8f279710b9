"""The two prompt families: Qwen3-Reranker (text) and Qwen3-VL-Reranker.

Both answer "yes"/"no" to a system prompt, an instruction, a query and a document,
but their templates differ (see ``prompt.py``); which one a call uses follows from the
model the server serves, never from the input. A :class:`PromptFamily` turns a query
and documents into vLLM score-API parameters for one family.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from . import prompt
from ._protocol import ScoreParam

__all__ = ["Family", "PromptFamily", "family_prompt", "raw_param"]

Family = Literal["text", "vl"]


@dataclass(frozen=True, slots=True)
class PromptFamily:
    """How one family's prompt is split into vLLM's ``text_1`` (shared query prefix) and
    ``text_2`` (each document with the assistant suffix), images included."""

    name: Family
    default_instruction: str

    def query_text(self, query: str, instruction: str | None) -> str:
        """The text of ``text_1`` without image markers (what the token budget counts)."""
        if self.name == "vl":
            return prompt.format_vl_query(query, instruction)
        return prompt.format_query(query, instruction)

    def document_text(self, document: str) -> str:
        """The text of ``text_2`` without image markers (what the token budget counts)."""
        if self.name == "vl":
            return prompt.format_vl_document(document)
        return prompt.format_document(document)

    def full_prompt(self, query: str, document: str, instruction: str | None) -> str:
        """The whole text-only prompt, as the model reads it."""
        return self.query_text(query, instruction) + self.document_text(document)

    def query_param(self, query: str, image_urls: Sequence[str], instruction: str) -> ScoreParam:
        """``text_1`` for ``/v1/score`` when this client formats the prompt."""
        if self.name == "vl":
            return prompt.vl_query_param(query, image_urls, instruction)
        return prompt.format_query(query, instruction)

    def document_param(self, document: str, image_urls: Sequence[str]) -> ScoreParam:
        """One element of ``text_2`` for ``/v1/score`` when this client formats the prompt."""
        if self.name == "vl":
            return prompt.vl_document_param(document, image_urls)
        return prompt.format_document(document)


def raw_param(text: str, image_urls: Sequence[str]) -> ScoreParam:
    """A query or document as it is, for a server that applies the template itself."""
    if not image_urls:
        return text
    return {"content": [*(prompt.image_part(url) for url in image_urls), {"type": "text", "text": text}]}


_FAMILIES = {
    "text": PromptFamily("text", prompt.DEFAULT_INSTRUCTION),
    "vl": PromptFamily("vl", prompt.VL_DEFAULT_INSTRUCTION),
}


def family_prompt(name: Family) -> PromptFamily:
    return _FAMILIES[name]
