"""Resumable output: the rows a directory already holds, by key, and the rows still to score.

A run writes Parquet files into the directory as it goes (one file per block, named by the run and the
block, so a retried block replaces its own file and never adds a second one). A later run with the same
directory reads the :data:`~._columns.KEY` column of every file and scores only the rows whose key is
not there. A file that cannot be read (cut short when the driver was killed mid-write: its footer is
missing) is renamed ``*.parquet.incomplete`` and its rows are scored again.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ._columns import KEY, row_key

__all__ = ["KeyRows", "MissingRows", "done_keys"]

logger = logging.getLogger("qwen3_vllm_rerank.batch")


def done_keys(directory: Path) -> frozenset[str]:
    """The keys of the rows already written under ``directory`` (empty when it does not exist)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    keys: set[str] = set()
    if not directory.is_dir():
        return frozenset()
    for path in sorted(directory.glob("*.parquet")):
        try:
            table = pq.read_table(path, columns=[KEY])
        except (OSError, pa.ArrowException) as exc:
            aside = path.with_name(path.name + ".incomplete")
            path.rename(aside)
            logger.warning(
                "%s cannot be read (%s): renamed to %s; its rows are scored again", path, exc, aside
            )
            continue
        keys.update(str(k) for k in table.column(KEY).to_pylist())
    return frozenset(keys)


class KeyRows:
    """``map_batches`` function object: adds each row's key (see :func:`~._columns.row_key`)."""

    def __init__(
        self,
        *,
        query: str,
        document: str,
        id_column: str | None,
        instruction: str | None,
        image: str | None = None,
    ) -> None:
        self.query = query
        self.document = document
        self.id_column = id_column
        self.instruction = instruction
        self.image = image

    def __call__(self, batch: Any) -> Any:
        ids = list(batch[self.id_column]) if self.id_column else [None] * len(batch)
        images = list(batch[self.image]) if self.image else [None] * len(batch)
        batch = batch.copy()
        batch[KEY] = [
            row_key(self.instruction, q, d, i, image)
            for q, d, i, image in zip(batch[self.query], batch[self.document], ids, images, strict=True)
        ]
        return batch


class MissingRows:
    """``map_batches`` function object: keeps the rows whose key is not in ``done``."""

    def __init__(self, done: frozenset[str]) -> None:
        self.done = done

    def __call__(self, batch: Any) -> Any:
        return batch[[key not in self.done for key in batch[KEY]]]
