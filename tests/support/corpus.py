"""A real corpus for pipeline tests: the paragraphs of Python's own help topics.

``pydoc_data.topics`` ships with CPython (the text behind ``help("with")``), so the
tests retrieve and rerank real English prose with no download.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pydoc_data.topics import topics

__all__ = ["Paragraph", "pydoc_paragraphs"]


@dataclass(frozen=True, slots=True)
class Paragraph:
    id: str
    topic: str
    text: str


@cache
def pydoc_paragraphs(min_chars: int = 200, max_chars: int = 1000) -> tuple[Paragraph, ...]:
    """Whitespace-normalised paragraphs of every help topic, ``min_chars..max_chars`` long."""
    found: list[Paragraph] = []
    for topic in sorted(topics):
        for i, block in enumerate(re.split(r"\n\s*\n", topics[topic])):
            text = " ".join(block.split())
            if min_chars <= len(text) <= max_chars:
                found.append(Paragraph(f"{topic}-{i}", topic, text))
    return tuple(found)
