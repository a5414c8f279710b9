"""The columns a reranked dataset gains, the row key a resumed run matches rows by, and the checks of the
input's columns.

Every output row is its input row plus :data:`SCORE` (p(yes), a float, or None) and :data:`ERROR` (why the
row was not scored, or None); a run that writes to a directory adds :data:`KEY`.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Collection, Iterable
from typing import Any

from ..errors import InvalidInput
from ..images import Content, Image

__all__ = [
    "ERROR",
    "KEY",
    "SCORE",
    "check_columns",
    "document_input",
    "is_missing",
    "row_key",
    "text_or_reason",
]

SCORE = "score"
ERROR = "rerank_error"
KEY = "rerank_key"


def check_columns(
    columns: Iterable[str], *, needed: Iterable[str], reserved: Collection[str], where: str
) -> None:
    """Refuse a dataset that lacks a ``needed`` column or already has one the output adds (``reserved``)."""
    present = list(columns)
    missing = [name for name in needed if name not in present]
    if missing:
        raise InvalidInput(
            f"{where} has no column {missing[0]!r} (its columns: {present}); name the query and document "
            "columns with query= / document= (--query-column / --document-column)"
        )
    taken = [name for name in present if name in reserved]
    if taken:
        raise InvalidInput(
            f"{where} already has a column {taken[0]!r}, which the reranked rows add; rename it first "
            f"(the added columns: {sorted(reserved)})"
        )


def row_key(instruction: str | None, query: Any, document: Any, row_id: Any = None, image: Any = None) -> str:
    """The stable identity of one row: a hash of what is scored (instruction, query, document, and the
    image cell when there is an image column) and the row's id when the caller names an id column. Two
    runs over the same input give every row the same key, whatever the partitioning, so a resumed run can
    tell which rows are already scored."""
    parts = [instruction, _plain(query), _plain(document), _plain(row_id)]
    if not is_missing(image):
        parts.append(_plain(image))
    payload = json.dumps(parts, ensure_ascii=True)
    return hashlib.sha256(payload.encode("ascii")).hexdigest()[:32]


def _plain(value: Any) -> Any:
    """A JSON-serialisable form of a cell (bytes and numpy scalars included), stable across runs."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (bytes, bytearray)):
        return {"bytes": hashlib.sha256(value).hexdigest()}
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        return _plain(item())
    return repr(value)


def is_missing(value: Any) -> bool:
    """Whether a cell is null: ``None``, or the NaN / ``NA`` pandas puts in a missing cell."""
    if value is None:
        return True
    if isinstance(value, float):  # numpy's float64 too
        return math.isnan(value)
    return type(value).__name__ == "NAType"


def text_or_reason(value: Any, column: str) -> tuple[str | None, str | None]:
    """``(text, None)`` when a cell holds text, else ``(None, why it cannot be scored)``."""
    if isinstance(value, str):
        return value, None
    kind = "null" if is_missing(value) else type(value).__name__
    return None, f"the {column!r} column holds {kind} in this row, not text"


def document_input(text: str, image: Any, column: str) -> tuple[str | Content | None, str | None]:
    """The document a row sends: its text alone, or with the image cell as its page (``bytes``: the
    encoded image; text: a path or URL, read under the client's source policy as a reference a retrieved
    document names, ``Image(..., retrieved=True)``). ``(None, why)`` for a cell of another kind."""
    if is_missing(image):
        return text, None
    if isinstance(image, (bytes, bytearray)):
        return Content(text, images=[Image(bytes(image))]), None
    if isinstance(image, str):
        return Content(text, images=[Image(image, retrieved=True)]), None
    return None, f"the {column!r} column holds {type(image).__name__} in this row, not image bytes or a path"
