"""Varied (query, documents, instruction) cases for fidelity tests."""

from __future__ import annotations

from dataclasses import dataclass
from pydoc_data.topics import topics


@dataclass(frozen=True)
class Case:
    query: str
    documents: list[str]
    instruction: str | None = None


def _paragraph(topic: str, n: int = 1) -> str:
    return "\n\n".join(topics[topic].split("\n\n")[:n])


FIDELITY_CASES: list[Case] = [
    Case(
        "How does a for loop work in Python?",
        [
            _paragraph("for"),
            _paragraph("while"),
            _paragraph("for", 4),  # multi-paragraph
            "yes",  # one word
            "loop",
            "",  # empty document
        ],
    ),
    Case(
        "什么是Python中的异常处理？",  # noqa: RUF001 - Chinese query
        [
            "Python 使用 try/except 语句处理异常。",
            "北京是中华人民共和国的首都。",
            _paragraph("try"),
            "异常",
        ],
    ),
    Case(
        "function that reverses a list",
        [
            "def reverse(xs):\n    return xs[::-1]\n",
            "fn reverse<T: Clone>(xs: &[T]) -> Vec<T> { xs.iter().rev().cloned().collect() }",
            "SELECT * FROM users WHERE id = 1;",
            "   leading and trailing whitespace   \n\n",
            "Tabs\tand\r\nCRLF line endings\u00a0and a non-breaking space",
        ],
    ),
    Case(
        "Find code about context managers",
        [_paragraph("with"), _paragraph("lambda"), "émigré café naïve — “quotes” ✓ 🚀"],
        instruction="Given a code search query, retrieve documentation that explains the feature",
    ),
    Case(
        "?",
        ["Ends with a question mark?", "Emoji only 🤖🤖", "1234567890 3.14159"],
        instruction="判断文档是否与查询相关",  # Chinese instruction
    ),
]

N_PAIRS = sum(len(case.documents) for case in FIDELITY_CASES)
