"""The converter's two entry points: :func:`convert_checkpoint` (inspect, plan, write into a staging
directory, verify, rename into place) and :func:`verify_conversion`."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from ..errors import ConversionError
from ._conversion_plan import inspect, plan, resolve_source
from ._verify import VERIFY_PAIRS, VerificationResult, verify_files, verify_model
from ._writing import write

logger = logging.getLogger("qwen3_vllm_rerank.convert")


def verify_conversion(
    original: str | Path,
    converted: str | Path,
    *,
    yes_token: str = "yes",  # noqa: S107 - a token, not a secret
    no_token: str = "no",  # noqa: S107
    model: bool = False,
    pairs: Sequence[tuple[str, str, str | None]] = VERIFY_PAIRS,
) -> VerificationResult:
    """Check that ``converted`` is exactly the conversion of ``original``; raise ConversionError if not.

    Streaming, in bounded memory: every tensor but ``score.weight`` identical to the source's, that one
    equal to ``W[yes] - W[no]`` of the source rows, no ``lm_head.weight``, config.json right, tokenizer and
    other files identical. ``model=True`` also compares the logits with ``logit(yes) - logit(no)`` on
    ``pairs`` with transformers in float32 (text rerankers): that needs torch and about 4 bytes per
    parameter (one model at a time: ~3 GB for the 0.6B, ~33 GB for the 8B).
    """
    source = inspect(resolve_source(original), yes_token, no_token)
    result = verify_files(source, Path(converted))
    return verify_model(source, Path(converted), pairs, result) if model else result


def convert_checkpoint(
    src: str | Path,
    dst: str | Path,
    *,
    yes_token: str = "yes",  # noqa: S107 - a token, not a secret
    no_token: str = "no",  # noqa: S107
    verify: bool | Literal["model"] = True,
    link: bool = False,
    progress: bool | None = None,
) -> Path:
    """Convert an original Qwen3-Reranker checkpoint into a one-logit seq-cls checkpoint at ``dst``.

    Args:
        src: the original ``Qwen3ForCausalLM`` in safetensors: a directory or a Hugging Face hub id.
        dst: a new or empty directory. The result is written next to it and renamed into place.
        yes_token: the token whose logit counts for relevance; ``no_token``: against it.
        verify: ``True`` reads the result back against the source (:func:`verify_conversion`);
            ``"model"`` also runs both models (about 4 bytes per parameter); ``False``: no check.
        link: hard-link the shards that need no change (same filesystem only, else they are
            copied); the files are then shared: modify neither in place.
        progress: show a progress bar; ``None``: only when stderr is a terminal.

    Returns ``dst``: ``score.weight = W[yes] - W[no]`` (float32, stored in the head's dtype), no
    ``lm_head.weight``, every other tensor unchanged, config.json for vLLM and transformers, the
    tokenizer and other files copied, ``chat_template.jinja`` and the Sentence Transformers files.
    Peak memory is about 250 MB whatever the model's size (unless ``verify="model"``).

    Raises:
        ConversionError: not an original Qwen3 or Qwen3-VL reranker checkpoint, already converted, ``dst`` not
            empty, a token not a single vocabulary token, or verification failed.
    """
    if verify not in (True, False, "model"):
        raise ConversionError(f"verify must be True, False or 'model', not {verify!r}")
    dst = Path(dst).expanduser()
    root = resolve_source(src)
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        problem = "is not empty" if dst.is_dir() else "is a file"
        raise ConversionError(f"{dst} {problem}; pass a new or empty directory")
    source = inspect(root, yes_token, no_token)
    logger.info("converting %s (output layer %s, %s) to %s", root, source.head.name, source.head.dtype, dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".converting", dir=dst.parent))
    try:
        write(plan(source), staging, link=link, progress=progress)
        if verify:
            result = verify_files(source, staging)
            result = verify_model(source, staging, VERIFY_PAIRS, result) if verify == "model" else result
            logger.info("verified %s: %s", dst, result)
        staging.chmod(0o755)
        try:
            os.replace(staging, dst)
        except OSError as exc:
            raise ConversionError(f"cannot move the converted checkpoint into {dst}: {exc}") from exc
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(staging)
        raise
    logger.info("wrote %s%s", dst, " (verified)" if verify else "")
    return dst
