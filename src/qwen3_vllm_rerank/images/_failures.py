"""How an image that cannot be used is reported: one labelled error, its reason safe to show."""

from __future__ import annotations

import logging

from ..errors import InvalidInput

__all__ = ["UnusableImage", "logger"]

#: Details of refused and failed images (addresses, HTTP statuses, OS errors) go here at
#: debug level only: shown to a caller, they would map an internal network or a disk.
logger = logging.getLogger("qwen3_vllm_rerank.images")


class UnusableImage(InvalidInput):
    """An image that cannot be scored: ``label`` names its input (e.g. ``"documents[3]"``),
    ``reason`` says what is wrong in words safe to show (no URL query string, no address, no
    file contents); the message is ``"{label}: {reason}"``."""

    def __init__(self, label: str, reason: str) -> None:
        self.label = label
        self.reason = reason
        super().__init__(f"{label}: {reason}")
