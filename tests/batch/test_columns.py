"""The row key and the column checks of qwen3_vllm_rerank.batch (no Ray, no server)."""

from __future__ import annotations

import argparse
import math

import pytest

from qwen3_vllm_rerank.batch._columns import check_columns, is_missing, row_key, text_or_reason
from qwen3_vllm_rerank.batch._command import add_parser
from qwen3_vllm_rerank.errors import InvalidInput


def test_the_row_key_is_stable_and_tells_rows_apart() -> None:
    assert row_key(None, "q", "d") == row_key(None, "q", "d")
    assert (
        len(
            {
                row_key(None, "q", "d"),
                row_key(None, "q", "e"),
                row_key("i", "q", "d"),
                row_key(None, "q", "d", 7),
            }
        )
        == 4
    )


def test_a_cell_that_is_not_text_is_a_reason_not_an_exception() -> None:
    assert text_or_reason("x", "document") == ("x", None)
    assert text_or_reason(None, "document") == (
        None,
        "the 'document' column holds null in this row, not text",
    )
    assert text_or_reason(math.nan, "document")[1] == "the 'document' column holds null in this row, not text"
    assert text_or_reason(3, "query")[1] == "the 'query' column holds int in this row, not text"
    assert is_missing(None)
    assert is_missing(math.nan)
    assert not is_missing("")


def test_columns_the_output_adds_are_refused_in_the_input() -> None:
    with pytest.raises(InvalidInput, match="already has a column 'score'"):
        check_columns(
            ["query", "document", "score"],
            needed=["query", "document"],
            reserved={"score"},
            where="the dataset",
        )
    with pytest.raises(InvalidInput, match="has no column 'document'"):
        check_columns(
            ["query", "text"], needed=["query", "document"], reserved={"score"}, where="the dataset"
        )


def test_the_command_needs_exactly_one_engine() -> None:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["batch", "in.parquet", "out", "--base-url", "http://127.0.0.1:1", "--query-column", "q"]
    )
    assert (args.base_url, args.model, args.query_column, args.document_column) == (
        "http://127.0.0.1:1",
        None,
        "q",
        "document",
    )
    with pytest.raises(SystemExit):
        parser.parse_args(["batch", "in.parquet", "out", "--base-url", "u", "--model", "m"])
