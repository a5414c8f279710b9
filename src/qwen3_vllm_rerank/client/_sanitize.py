"""Neutralise special-token strings in user text.

vLLM tokenises the prompt with special tokens parsed, so a document containing
``<|im_end|>`` or ``<|im_start|>assistant`` would inject real template tokens and
could fake the end of the prompt. Every occurrence of an added token's string in
user text is broken with a zero-width space after its first character: the model
then reads it as ordinary characters. Text without such strings is returned
unchanged (the same object), so fidelity is untouched.

Lone UTF-16 surrogates (half of an emoji cut by a chunker) cannot be sent as UTF-8 at all:
:func:`repair_surrogates` replaces them in a document with U+FFFD; :func:`lone_surrogate`
finds one in the application's own query or instruction, which is refused instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

__all__ = ["BREAK", "Neutraliser", "lone_surrogate", "repair_surrogates"]

#: Inserted after the first character of a special-token string.
BREAK = "\u200b"


@lru_cache(maxsize=8)
def _pattern(tokens: tuple[str, ...]) -> re.Pattern[str]:
    # Longest first, so that a token that contains another is matched whole.
    ordered = sorted(tokens, key=len, reverse=True)
    return re.compile("|".join(re.escape(t) for t in ordered))


class Neutraliser:
    """Breaks the given token strings wherever they occur in a text."""

    def __init__(self, tokens: Iterable[str]) -> None:
        self.tokens = tuple(sorted({t for t in tokens if len(t) > 1}))
        self._pattern = _pattern(self.tokens) if self.tokens else None

    def __call__(self, text: str) -> str:
        if self._pattern is None:
            return text
        # Breaking one occurrence cannot create another (the break sits inside it),
        # but repeat until stable so no arrangement of characters can slip through.
        while self._pattern.search(text):
            text = self._pattern.sub(lambda m: m.group(0)[0] + BREAK + m.group(0)[1:], text)
        return text


#: A UTF-16 surrogate code point: never valid alone in text that is sent as UTF-8.
_SURROGATE = re.compile("[\ud800-\udfff]")


def lone_surrogate(text: str) -> int | None:
    """The position of the first lone surrogate in ``text`` (a cut emoji from a UTF-16 source,
    e.g. ``json.loads('"\\ud83d"')``), or ``None``: such text cannot be encoded as UTF-8."""
    if text.isascii():
        return None
    match = _SURROGATE.search(text)
    return match.start() if match else None


def repair_surrogates(text: str) -> str:
    """``text`` with every lone surrogate replaced by U+FFFD (what a UTF-8 decoder shows for
    bytes it cannot read); ``text`` itself when it has none."""
    if lone_surrogate(text) is None:
        return text
    return _SURROGATE.sub("\ufffd", text)
