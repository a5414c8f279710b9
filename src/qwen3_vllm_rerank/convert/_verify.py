"""Verification: the written files read back against the source (default), the models run (opt-in)."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .._checkpoints import PROBE_DOCUMENTS, PROBE_QUERY
from ..errors import ConversionError
from ..prompt import format_prompt
from . import _sentence_transformers as st
from ._conversion_plan import ORIGINAL_KEYS, SCORE, Source, is_copied, score
from ._reading import INDEX, decode, open_inside, read_bytes, read_json, read_shards
from ._writing import BUFFER

_CODE_INSTRUCTION = "Given a code search query, retrieve code that answers the query"
#: (query, document, instruction) pairs the forward-pass check scores: the probe pair, code, Chinese.
VERIFY_PAIRS: tuple[tuple[str, str, str | None], ...] = (
    *((PROBE_QUERY, document, None) for document in PROBE_DOCUMENTS),
    ("function that reverses a list", "def reverse(xs):\n    return xs[::-1]\n", _CODE_INSTRUCTION),
    ("什么是机器学习？", "机器学习是人工智能的一个分支，研究计算机如何从数据中学习。", None),  # noqa: RUF001
)


@dataclasses.dataclass(frozen=True, slots=True)
class VerificationResult:
    """What :func:`~qwen3_vllm_rerank.convert.verify_conversion` checked; it raises on any difference.

    ``tensors`` equal the source's (``compared_bytes`` read back, hard links aside), ``score.weight``
    is ``W[yes] - W[no]`` (``score_rounding``: the most storing it in its dtype moved a value),
    ``files`` are identical. The forward-pass check fills the rest: converted logits (``actual``) vs
    ``logit(yes) - logit(no)`` (``expected``), within ``tolerances``: 1e-4 relative plus
    ``rounding_bounds``, what that rounding can move a logit.
    """

    tensors: int
    compared_bytes: int
    score_rounding: float
    files: tuple[str, ...]
    expected: tuple[float, ...] = ()
    actual: tuple[float, ...] = ()
    rounding_bounds: tuple[float, ...] = ()
    tolerances: tuple[float, ...] = ()

    @property
    def max_abs_diff(self) -> float:
        """The largest logit difference of the forward-pass check (0.0 without it)."""
        return max((abs(a - e) for a, e in zip(self.actual, self.expected, strict=True)), default=0.0)

    @property
    def ok(self) -> bool:
        """Every logit of the forward-pass check within its tolerance (true without it)."""
        triples = zip(self.actual, self.expected, self.tolerances, strict=True)
        return all(math.isfinite(a) and abs(a - e) <= tol for a, e, tol in triples)

    def __str__(self) -> str:
        text = f"{self.tensors} tensors identical to the source ({self.compared_bytes / 1e6:,.1f} MB read)"
        text += f", score.weight = W[yes] - W[no] (max |difference| {self.score_rounding:.2e}, its rounding)"
        text += f", config.json and {len(self.files)} files checked"
        if self.expected:
            text += f"; converted logits vs logit(yes) - logit(no) of the original on {len(self.expected)} "
            text += f"templated pairs: max |difference| {self.max_abs_diff:.2e} (allowed "
            text += f"{min(self.tolerances):.2e} to {max(self.tolerances):.2e})"
        return text


def _failed(converted: Path, problem: str) -> ConversionError:
    return ConversionError(f"verification failed: {converted} {problem}. Do not serve it; convert again.")


def _same(fd: Callable[[Path], int], a: tuple[Path, int], b: tuple[Path, int], nbytes: int) -> bool:
    """Two byte ranges compared chunk by chunk: memory holds two buffers, whatever the size."""
    for offset in range(0, nbytes, BUFFER):
        size = min(BUFFER, nbytes - offset)
        if os.pread(fd(a[0]), size, a[1] + offset) != os.pread(fd(b[0]), size, b[1] + offset):
            return False
    return True


def _check_tensors(source: Source, converted: Path, fd: Callable[[Path], int]) -> tuple[int, int, float]:
    """``(tensors, bytes compared, score rounding)``; raises on the first difference."""
    _, index, found = read_shards(converted)
    original = source.kept()
    total = sum(t.nbytes for _, t in found.values())
    if (index is None) != (source.index is None) or (
        index and (index.get("metadata") or {}).get("total_size") != total
    ):
        raise _failed(converted, f"has a missing, extra or wrong {INDEX}")
    if differ := sorted(set(found) ^ set(original) ^ {SCORE}):
        raise _failed(converted, f"differs from the source in the tensors {differ}")
    (shard, tensor), (exact, data) = found[SCORE], score(source)
    stored = os.pread(fd(shard.path), tensor.nbytes, tensor.start)
    if (tensor.dtype, tensor.shape, stored) != (source.head.dtype, (1, source.head.shape[1]), data):
        raise _failed(converted, f"has a {SCORE} that is not W[yes] - W[no] of the source, in its dtype")
    compared = 0
    for name, (src_shard, src) in original.items():
        dst_shard, dst = found[name]
        if src.start == dst.start and os.path.samefile(src_shard.path, dst_shard.path):
            continue  # a hard link: the source's own bytes
        same = (src.dtype, src.shape) == (dst.dtype, dst.shape)
        if not same or not _same(fd, (src_shard.path, src.start), (dst_shard.path, dst.start), src.nbytes):
            raise _failed(converted, f"has a {name} that differs from the source's")
        compared += src.nbytes
    rounding = max(abs(s - e) for s, e in zip(decode(stored, tensor.dtype), exact, strict=True))
    return len(original), compared, rounding


def verify_files(source: Source, converted: Path) -> VerificationResult:
    """The converted checkpoint against its source: config, tensors, score, tokenizer and other files."""
    config = read_json(converted / "config.json")
    wanted = {"architectures": [source.architecture.seq_cls], "num_labels": 1, "pad_token_id": source.pad_id}
    wanted |= {"use_sep_token": False, "tie_word_embeddings": source.tied}
    found = {key: config.get(key, False if key == "tie_word_embeddings" else None) for key in wanted}
    set_here = {*wanted, *ORIGINAL_KEYS, "id2label", "label2id"}
    others = [{k: v for k, v in c.items() if k not in set_here} for c in (config, source.config)]
    if found != wanted or config.keys() & set(ORIGINAL_KEYS) or others[0] != others[1]:
        raise _failed(converted, f"has a wrong config.json: {found}, or other keys than the source's")
    with contextlib.ExitStack() as stack:  # each file opened once, all closed at the end
        fd = functools.cache(lambda path: stack.enter_context(open_inside(path)).fileno())
        tensors, compared, rounding = _check_tensors(source, converted, fd)
    copied = {p.name: read_bytes(p) for p in sorted(source.root.iterdir()) if is_copied(p, source.vl)}
    written = {} if source.vl else {name: text.encode() for name, text in st.files().items()}
    for name, content in (copied | written).items():
        if not (converted / name).is_file() or (converted / name).read_bytes() != content:
            raise _failed(converted, f"has a {name} other than the source's (or the template's), or none")
    return VerificationResult(tensors, compared, rounding, tuple(copied))


def verify_model(
    source: Source, converted: Path, pairs: Sequence[tuple[str, str, str | None]], checked: VerificationResult
) -> VerificationResult:
    """The forward-pass check: both models with transformers in float32, one at a time (loaded in
    their stored dtype, then upcast: exact, and it peaks about 1.5x lower than loading in float32)."""
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
    except ImportError as exc:
        raise ConversionError(f"the forward-pass check needs torch and transformers: {exc}") from exc
    if source.vl:
        raise ConversionError("verify='model' is for text rerankers: transformers has no Qwen3-VL seq-cls")
    prompts = [format_prompt(query, document, instruction) for query, document, instruction in pairs]
    tokenizer = AutoTokenizer.from_pretrained(converted, padding_side="right")
    expected: list[float] = []
    with torch.inference_mode():
        model: Any = AutoModelForCausalLM.from_pretrained(source.root, dtype="auto")
        model = model.float().eval()
        for prompt in prompts:
            logits = model(**tokenizer(prompt, return_tensors="pt"), logits_to_keep=1).logits[0, -1]
            expected.append(float(logits[source.yes_id] - logits[source.no_id]))
        del model
        gc.collect()
        model = AutoModelForSequenceClassification.from_pretrained(converted, dtype="auto")
        model = model.float().eval()
        captured: list[Any] = []
        hook = model.score.register_forward_hook(lambda _m, args, _out: captured.append(args[0]))
        try:
            batch = tokenizer(prompts, return_tensors="pt", padding=True)
            actual = model(**batch).logits[:, 0].tolist()
        finally:
            hook.remove()
    # What storing W[yes] - W[no] in the head's dtype can move a logit: sum |h| * |rounded - exact|,
    # from the original rows, not from what was stored, so a wrong head still fails.
    exact, data = score(source)
    error = torch.tensor([abs(r - e) for r, e in zip(decode(data, source.head.dtype), exact, strict=True)])
    hidden = captured[0][torch.arange(len(prompts)), batch["attention_mask"].sum(dim=1) - 1]
    bounds = (hidden.abs().double() * error.double()).sum(dim=1).tolist()
    tolerances = tuple(1e-4 * (1.0 + abs(e)) + b for e, b in zip(expected, bounds, strict=True))
    logits = {"expected": tuple(expected), "actual": tuple(actual), "rounding_bounds": tuple(bounds)}
    if not (result := dataclasses.replace(checked, tolerances=tolerances, **logits)).ok:
        raise ConversionError(
            f"verification failed: {converted} does not score like {source.root}: {result}; expected "
            f"{[round(e, 6) for e in expected]}, got {[round(a, 6) for a in actual]}. Do not serve it; "
            "check the yes/no tokens and report the checkpoint if they are right."
        )
    return result
