"""Images at Qwen3-VL-Reranker-2B's widths: RerankClient + VLLMServer vs the in-process peers.

The checkpoint is a random-weight ``Qwen3VLForConditionalGeneration`` with the **real widths** of
Qwen3-VL-Reranker-2B (``qwen3_vllm_rerank.testing.QWEN3_VL_2B_SHAPE``: text hidden 2048, 16 heads
of 128 (8 KV), MLP 6144, vocabulary 151,936; vision hidden 1024, MLP 4096, 16 heads, patch 16,
merge 2) and **fewer layers** (``--text-layers`` / ``--vision-layers``; every layer costs what
the 2B's does, so the full model's time is about ``28 / text-layers`` on the text side and
``24 / vision-layers`` on the vision side). bfloat16 weights, like the published model.

Workloads (page images rendered like PDF pages and scans, 800x1000 and 1240x1754, resized by
the official rules: ~775 and ~1,800 image tokens):

* **(a) images**: one text query x 32 page images;
* **(b) mixed**: 32 documents, a third text paragraphs, a third page images, a third text + image;
* **(c) repeated**: the same 32 pages under ``--passes`` different queries (a RAG app over a
  fixed document set): the first pass vs the repeated ones, and the client's preparation
  time on each, whatever the client caches.

Rows of (a) and (b), interleaved in one run (round-robin, order rotated; fresh pages and a fresh
query on every repetition, so no cache on any side helps):

* ``RerankClient`` against ``VLLMServer`` with its defaults (dtype chosen from the CPU's flags);
* raw vLLM: the same payload posted by hand with httpx (images prepared beforehand, untimed);
* the official-style transformers reference (``tests/support/reference_vl.py``'s way: one
  pair at a time through the checkpoint's chat template and image processor), at the best
  CPU dtype (bfloat16 where the CPU computes it natively: ``avx512_bf16`` / ``amx_bf16``);
* Sentence Transformers ``CrossEncoder`` (if it loads this checkpoint; otherwise the report
  shows its error and why).

For the client row the report splits each call: **prepare** (read, decode, convert, resize),
**encode** (PNG + base64), **send** (the rest of the client: prompts, request JSON, upload,
parsing) and **server** (from the request going out to the response's headers: vLLM's work).
Scores: every row's max |score - float32 reference| on the first set, and, after the timed
phases, a float32 server against the float32 reference on the same pairs (the fidelity figure).

    .venv/bin/python benchmarks/vl_realistic.py [--quick] [--text-layers N] [--vision-layers N]

The server's interpreter: ``--server-python``, ``$QWEN3_VLLM_RERANK_SERVER_PYTHON`` or ``.venv-vllm``.

The server gets ``VLLM_CPU_KVCACHE_SPACE=2`` (GiB) unless the environment sets it. Results go to
``benchmarks/results/vl_realistic.{md,json,png}`` (``--quick``: to the benchmark cache, so a smoke
run never replaces the real figures).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any

import httpx
from _common import (
    REPO,
    Checkpoint,
    Result,
    cache_dir,
    cli,
    common_parser,
    corpus,
    cpu_flags,
    fmt,
    header,
    interleave,
    md_table,
    median,
    mm_cache_counters,
    serve,
    server_python,
    serving,
    vl_checkpoint,
)
from _images import PAGE_SIZES, page_files

from qwen3_vllm_rerank import Content, Image, RerankClient
from qwen3_vllm_rerank.images import prepare_image
from qwen3_vllm_rerank.prompt import vl_document_param, vl_query_param
from qwen3_vllm_rerank.serve import VLLMServer

logger = logging.getLogger("benchmarks")

N_DOCS = 32
QUERY = "quarterly report page with a chart of closing prices"
CLIENT = "RerankClient + VLLMServer defaults"
RAW = "raw vLLM (same payload by hand)"
REFERENCE = "transformers reference (official, per pair)"
ST = "Sentence Transformers CrossEncoder"
RESULTS = Path(__file__).resolve().parent / "results"
#: The default layer cut, chosen so that one full run takes at most ~15 minutes on 2 cores
#: (measured on a shared machine with 4 documents: a 1240x1754 page at 2 + 2 layers took ~6.5 s
#: in vLLM and ~9 s in the bfloat16 reference under a load average of ~8). Per 1240x1754 page
#: (7,200 patches, 1,800 tokens), by arithmetic: a vision layer ~0.4 TFLOP (its attention is
#: over all patches), a text layer ~0.18 TFLOP, the patch merger and each DeepStack merger
#: ~0.09 TFLOP; so 1 + 1 layers ~0.76 TFLOP, 2 + 2 ~1.4, the whole 2B (24 + 28) ~15: the full
#: model's time per page is roughly 20x this cut's on the model side.
TEXT_LAYERS, VISION_LAYERS = 1, 1

Document = str | Image | Content


# --------------------------------------------------------------------------- workloads


@dataclass
class Workload:
    """One set of documents: for the client (``documents``), the reference (``parts``) and raw vLLM."""

    documents: list[Document]
    #: ``(text, image file)`` of each document.
    parts: list[tuple[str | None, Path | None]]
    #: Image tokens the model reads for the whole set.
    image_tokens: int = 0
    #: ``text_2`` of a raw request (prepared images' data URLs inline), built untimed.
    raw_documents: list[Any] = field(default_factory=list)


def build(kind: str, n: int, seed: int, directory: Path, paragraphs: list[str]) -> Workload:
    """``kind``: ``images`` (all pages) or ``mixed`` (text, page, text + page in turn)."""
    pages = page_files(n, seed, directory / f"{kind}-{seed}", paragraphs)
    documents: list[Document] = []
    parts: list[tuple[str | None, Path | None]] = []
    raw: list[Any] = []
    tokens = 0
    for i, path in enumerate(pages):
        text = paragraphs[(seed * 7 + i) % len(paragraphs)]
        form = "image" if kind == "images" else ("text", "image", "text+image")[i % 3]
        prepared = prepare_image(Image(path)) if form != "text" else None
        tokens += prepared.tokens if prepared else 0
        if form == "text":
            documents.append(text)
            parts.append((text, None))
            raw.append(vl_document_param(text))
        elif form == "image":
            documents.append(Image(path))
            parts.append((None, path))
            raw.append(vl_document_param("", [prepared.url]))  # type: ignore[union-attr]
        else:
            documents.append(Content(text[:300], images=[Image(path)]))
            parts.append((text[:300], path))
            raw.append(vl_document_param(text[:300], [prepared.url]))  # type: ignore[union-attr]
    return Workload(documents, parts, tokens, raw)


# --------------------------------------------------------------------------- the client's share


class Stopwatch:
    """Where a client call's time goes: its image stages and its HTTP time.

    Wraps the two stages of the image pipeline as the client calls them (private names of
    ``qwen3_vllm_rerank.images._calls``): ``load`` (read the source, look it up in the
    prepared-image cache, check its header; in the calling thread) and ``start`` (decode, RGB,
    resize and PNG in the decode sandbox's worker process, then base64 and hash here), timed from
    the call to its future's end. ``load`` is **prepare**, ``start`` is **encode**: the resize
    happens in the worker process, so the two cannot be split at it any more. A stage the client
    skips (a cache hit) costs nothing here,
    as it should. The client prepares a call's images in parallel, so the stages' seconds summed
    over threads can exceed the wall time they take: the image phase's wall time (the union of
    the stages' intervals) is shared between prepare and encode in proportion to their sums.
    HTTP time is the union of the score requests' intervals, from the request going out to its
    response's headers (the server's share).
    """

    STAGES = ("load", "start")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seconds = {"prepare": 0.0, "encode": 0.0}
        self.missing: list[str] = []
        self.image_intervals: list[tuple[float, float]] = []
        self.intervals: list[tuple[float, float]] = []
        self._sent: dict[int, float] = {}
        self._local = threading.local()

    @contextmanager
    def installed(self) -> Iterator[Stopwatch]:
        from qwen3_vllm_rerank.images import _calls

        originals: dict[str, Callable[..., Any]] = {}
        for name in self.STAGES:
            original = getattr(_calls, name, None)
            if original is None:
                self.missing.append(name)
                continue
            originals[name] = original
        if "load" in originals:
            _calls.load = self._timed_load(originals["load"])  # type: ignore[attr-defined]
        if "start" in originals:
            _calls.start = self._timed_start(originals["start"])  # type: ignore[attr-defined]
        try:
            yield self
        finally:
            for name, original in originals.items():
                setattr(_calls, name, original)

    def _record(self, start: float, stop: float, prepare: float, encode: float) -> None:
        with self.lock:
            self.seconds["prepare"] += prepare
            self.seconds["encode"] += encode
            self.image_intervals.append((start, stop))

    def _timed_load(self, load: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return load(*args, **kwargs)
            finally:
                stop = time.perf_counter()
                self._record(start, stop, stop - start, 0.0)

        return timed

    def _timed_start(self, start_work: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            future = start_work(*args, **kwargs)

            def ended(_: Any) -> None:
                stop = time.perf_counter()
                self._record(start, stop, 0.0, stop - start)

            future.add_done_callback(ended)
            return future

        return timed

    def hooks(self) -> dict[str, list[Callable[..., Any]]]:
        """httpx event hooks timing the score requests."""

        def sent(request: httpx.Request) -> None:
            if request.url.path.endswith("/score"):
                self._sent[id(request)] = time.perf_counter()

        def answered(response: httpx.Response) -> None:
            start = self._sent.pop(id(response.request), None)
            if start is not None:
                with self.lock:
                    self.intervals.append((start, time.perf_counter()))

        return {"request": [sent], "response": [answered]}

    def reset(self) -> None:
        with self.lock:
            self.seconds = {"prepare": 0.0, "encode": 0.0}
            self.image_intervals = []
            self.intervals = []

    @staticmethod
    def _union(intervals: list[tuple[float, float]]) -> float:
        total, end = 0.0, float("-inf")
        for start, stop in sorted(intervals):
            total += max(stop - max(start, end), 0.0)
            end = max(end, stop)
        return total

    def split(self, total: float) -> dict[str, float]:
        """``prepare``, ``encode``, ``send`` and ``server`` wall seconds of the call that took ``total``."""
        with self.lock:
            prepare, encode = self.seconds["prepare"], self.seconds["encode"]
            images = self._union(self.image_intervals)
            server = self._union(self.intervals)
        summed = prepare + encode
        share = prepare / summed if summed else 1.0
        return {
            "prepare": images * share,
            "encode": images * (1.0 - share),
            "send": max(total - images - server, 0.0),
            "server": server,
        }


# --------------------------------------------------------------------------- in-process peers


def _reference_module() -> Any:
    sys.path.insert(0, str(REPO))
    import tests.support.reference_vl as reference

    return reference


def _open(path: Path) -> Any:
    from PIL import Image as PILImage

    with PILImage.open(path) as image:
        image.load()
        return image.copy()


class OfficialReranker:
    """``tests/support/reference_vl.py``'s way (the official ``Qwen3VLReranker``'s), in ``dtype``:
    its messages and pixels, one pair at a time, p(yes) from the last hidden state."""

    def __init__(self, path: Path, dtype: str) -> None:
        import torch
        from transformers import AutoTokenizer, Qwen2VLImageProcessor, Qwen3VLForConditionalGeneration

        self.torch, self.path = torch, path
        self.reference = _reference_module()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.processor = Qwen2VLImageProcessor.from_pretrained(path)
        self.model = Qwen3VLForConditionalGeneration.from_pretrained(path, dtype=getattr(torch, dtype))
        self.model.train(False)
        vocab = self.tokenizer.get_vocab()
        head = self.model.lm_head.weight.data
        self.direction = (head[vocab["yes"]] - head[vocab["no"]]).to(torch.float32)
        self.template = (path / "chat_template.jinja").read_text()
        self.image_pad = vocab["<|image_pad|>"]

    def score_one(self, query: str, text: str | None, image_path: Path | None) -> float:
        torch, reference = self.torch, self.reference
        side = reference.Side(text=text, images=[_open(image_path)] if image_path else [])
        prompt = str(
            self.tokenizer.apply_chat_template(
                reference.messages(reference.Side(text=query), side),
                chat_template=self.template,
                tokenize=False,
                add_generation_prompt=True,
            )
        )
        vision: dict[str, Any] = {}
        if side.images:
            pixels = [reference.official_pixels(image) for image in side.images]
            vision = dict(self.processor(images=pixels, do_resize=False, return_tensors="pt"))
            merge = self.processor.merge_size**2
            head, *tails = prompt.split("<|image_pad|>")
            prompt = head + "".join(
                "<|image_pad|>" * (int(grid.prod()) // merge) + tail
                for grid, tail in zip(vision["image_grid_thw"], tails, strict=True)
            )
        ids = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
        inputs = {
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids),
            "mm_token_type_ids": (ids == self.image_pad).to(torch.int32),
            **vision,
        }
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        with torch.no_grad():
            hidden = self.model.model(**inputs).last_hidden_state[:, -1]
        return float(torch.sigmoid(hidden.to(torch.float32) @ self.direction).item())

    def score(self, query: str, workload: Workload) -> list[float]:
        return [self.score_one(query, text, path) for text, path in workload.parts]


def load_cross_encoder(path: Path, dtype: str) -> tuple[Callable[[str, Workload], list[float]] | None, str]:
    """Sentence Transformers' CrossEncoder on ``path``, or ``None`` and why it cannot load it."""
    import torch

    logging.getLogger("sentence_transformers").setLevel(logging.WARNING)
    try:
        from sentence_transformers import CrossEncoder

        encoder = CrossEncoder(str(path), model_kwargs={"dtype": getattr(torch, dtype)})
    except Exception as exc:
        error = traceback.format_exception_only(exc)[-1].strip()
        why = (
            "a checkpoint without Sentence Transformers' module files (modules.json, "
            "sentence_bert_config.json with transformer_task 'any-to-any', 1_LogitScore) is loaded as a "
            "sequence-classification model, and transformers has no Qwen3VLForSequenceClassification: "
            "the published Qwen3-VL-Reranker-2B ships those files, this fixture does not (yet)"
            if "AutoModelForSequenceClassification" in error
            else "see the error"
        )
        return None, f"`{error[:400]}`; why: {why}"

    def score(query: str, workload: Workload) -> list[float]:
        pairs = [
            (query, {"text": text, "image": str(path)} if text and path else (str(path) if path else text))
            for text, path in workload.parts
        ]
        return [float(torch.sigmoid(torch.tensor(float(s)))) for s in encoder.predict(pairs, batch_size=1)]

    return score, f"loaded ({dtype})"


def best_peer_dtype() -> tuple[str, str]:
    """bfloat16 where this CPU computes it natively, float32 elsewhere, and why."""
    flags = cpu_flags()
    native = [flag for flag in ("avx512_bf16", "amx_bf16", "bf16") if flags.get(flag)]
    if native:
        return "bfloat16", f"this CPU computes bfloat16 natively ({', '.join(native)})"
    return "float32", "this CPU has no native bfloat16 (emulated bfloat16 is several times slower)"


# --------------------------------------------------------------------------- the run


def realistic_checkpoint(text_layers: int, vision_layers: int) -> Checkpoint:
    """Qwen3-VL-Reranker-2B's widths with the given depth, bfloat16, built once."""
    return vl_checkpoint(text_layers=text_layers, vision_layers=vision_layers, dtype="bfloat16")


def run(args: argparse.Namespace) -> Result:
    import torch

    reps = args.reps or 1
    n_docs = 4 if args.quick else N_DOCS
    passes = 2 if args.quick else args.passes
    checked = min(n_docs, args.check_docs)
    python = server_python(args.server_python)
    ckpt = realistic_checkpoint(args.text_layers, args.vision_layers)
    peer_dtype, peer_reason = (args.peer_dtype, "yours") if args.peer_dtype else best_peer_dtype()
    paragraphs = corpus(60, min_chars=200, max_chars=700, whole=True)
    seeds = count(1)
    report_header = {
        "checkpoint": f"random weights, Qwen3-VL-Reranker-2B's widths (QWEN3_VL_2B_SHAPE) with "
        f"{args.text_layers} of 28 text layers and {args.vision_layers} of 24 vision layers, bfloat16",
        "pages": f"{' and '.join(f'{w}x{h}' for w, h in PAGE_SIZES)} renders (text columns, a figure), "
        "PNG and JPEG files, resized by the official rules",
        "calls": f"(a) one text query x {n_docs} pages; (b) {n_docs} documents: text, page, text + page in "
        f"turn; (c) {passes} queries over the same {n_docs} pages",
        "peers": f"in-process rows in {peer_dtype} ({peer_reason}); torch threads {torch.get_num_threads()}",
        "repetitions": f"{reps}, interleaved, order rotated; fresh pages and a fresh query every time",
        "score check": f"the first {checked} documents of each workload against the float32 reference",
    }
    report = header(
        "Images at Qwen3-VL-Reranker-2B's widths: client + server vs in-process", python, report_header
    )
    env = {"VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2")}
    stopwatch = Stopwatch()
    salt = count(1)

    def fresh_query() -> str:
        return f"[{next(salt):04d}] {QUERY}"

    data: dict[str, Any] = {"reps": reps, "docs": n_docs, "peer_dtype": peer_dtype, "checked": checked}
    with tempfile.TemporaryDirectory(prefix="qwen3-bench-vl-") as tmp, stopwatch.installed():
        directory = Path(tmp)
        sets = {
            kind: [build(kind, n_docs, next(seeds), directory, paragraphs) for _ in range(reps)]
            for kind in ("images", "mixed")
        }
        # Raw vLLM gets pages of its own (same sizes, same kind): the server's caches never carry
        # one row's images over to another's call.
        raw_sets = {
            kind: [build(kind, n_docs, next(seeds), directory, paragraphs) for _ in range(reps)]
            for kind in ("images", "mixed")
        }
        repeated = build("images", n_docs, next(seeds), directory, paragraphs)
        warm = build("mixed", 3, next(seeds), directory, paragraphs)

        # float32 reference on the first set of each workload: what every row is compared with.
        reference = _reference_module()
        logger.info("float32 reference scores")
        truth = {
            kind: [
                reference.reference_score(
                    ckpt.path,
                    reference.Side(text=QUERY),
                    reference.Side(text=text, images=[_open(path)] if path else []),
                )
                for text, path in workloads[0].parts[:checked]
            ]
            for kind, workloads in sets.items()
        }
        reference._load.cache_clear()
        gc.collect()

        official = OfficialReranker(ckpt.path, peer_dtype)
        cross_encoder, st_status = load_cross_encoder(ckpt.path, peer_dtype)
        server = serve(ckpt, python, dtype=None, max_model_len=8192, env=env, log_name="vl-realistic")
        http = httpx.Client(timeout=1800.0, event_hooks=stopwatch.hooks())
        with (
            serving({"vl": server}),
            http,
            RerankClient(server.base_url, timeout=1800.0, http_client=http) as client,
        ):
            plan = server.plan
            chosen = (plan.dtype if plan else None) or "vLLM's choice"
            url, model = server.base_url, server.served_model_name
            raw_http = httpx.Client(timeout=1800.0)

            def raw(query: str, workload: Workload) -> list[float]:
                body = {"model": model, "text_1": vl_query_param(query), "text_2": workload.raw_documents}
                response = raw_http.post(f"{url}/v1/score", json=body)
                response.raise_for_status()
                return [item["score"] for item in response.json()["data"]]

            rows: dict[str, Callable[[str, Workload], list[float]]] = {
                CLIENT: lambda q, w: client.score(q, w.documents),
                RAW: raw,
                REFERENCE: official.score,
            }
            if cross_encoder is not None:
                rows[ST] = cross_encoder
            for name, row in rows.items():  # warm-up: first requests, lazy loads
                logger.info("warming up %s", name)
                row(fresh_query(), warm)

            times: dict[str, dict[str, list[float]]] = {}
            diffs: dict[str, dict[str, float]] = {}
            splits: list[dict[str, Any]] = []
            for kind in sets:
                scores: dict[str, list[float]] = {}

                def case(
                    name: str, kind: str = kind, scores: dict[str, list[float]] = scores
                ) -> Callable[[int], object]:
                    def call(rep: int) -> object:
                        stopwatch.reset()
                        start = time.perf_counter()
                        # The score check's query only where no server cache can reuse another row's work.
                        checking = rep == 0 and name != RAW
                        workload = (raw_sets if name == RAW else sets)[kind][rep]
                        result = rows[name](QUERY if checking else fresh_query(), workload)
                        logger.info("%s, %s: %.1f s", kind, name, time.perf_counter() - start)
                        if name == CLIENT:
                            splits.append({"kind": kind, **stopwatch.split(time.perf_counter() - start)})
                        if checking:
                            scores[name] = result
                        return result

                    return call

                logger.info("workload %s", kind)
                times[kind] = interleave({name: case(name) for name in rows}, reps, warmup=0)
                diffs[kind] = {
                    name: max(abs(a - b) for a, b in zip(values[:checked], truth[kind], strict=True))
                    for name, values in scores.items()
                }

            logger.info("workload repeated")
            passes_data = []
            for number in range(passes):
                stopwatch.reset()
                before = mm_cache_counters(url)
                start = time.perf_counter()
                client.score(fresh_query(), repeated.documents)
                elapsed = time.perf_counter() - start
                after = mm_cache_counters(url, before["queries"] + len(repeated.documents))
                mm = {f"mm_cache_{k}": after[k] - before[k] for k in after}
                passes_data.append({"pass": number + 1, "seconds": elapsed, **stopwatch.split(elapsed), **mm})
                logger.info("repeated, pass %d: %.1f s", number + 1, elapsed)
            raw_http.close()
        del official
        gc.collect()

        # Fidelity: a float32 server against the float32 reference on the same pairs.
        fidelity: dict[str, float] = {}
        f32 = serve(ckpt, python, dtype="float32", max_model_len=8192, env=env, log_name="vl-realistic-f32")
        with serving({"vl-float32": f32}), RerankClient(f32.base_url, timeout=1800.0) as check:
            for kind, workloads in sets.items():
                ours = check.score(QUERY, workloads[0].documents[:checked])
                fidelity[kind] = max(abs(a - b) for a, b in zip(ours, truth[kind], strict=True))

    data.update(
        seconds=times,
        image_tokens={kind: workloads[0].image_tokens for kind, workloads in sets.items()},
        max_abs_diff=diffs,
        float32_max_abs_diff=fidelity,
        client_split=splits,
        repeated=passes_data,
        chosen_dtype=chosen,
        sentence_transformers=st_status,
        layers={"text": args.text_layers, "vision": args.vision_layers},
        stopwatch_missing=stopwatch.missing,
    )
    return _report(report, data, n_docs)


#: The rows of ``--encoder-cache``: vLLM's own encoder-cache sizing, and the plan's default.
CACHE_ROWS = {"vLLM's sizing (image_cache_pages=0)": 0, "VLLMServer defaults (encoder cache sized)": None}


def run_encoder_cache(args: argparse.Namespace) -> Result:
    """Workload (c) only, at each ``--depths`` cut: per repetition fresh pages, ``--passes`` fresh
    queries over them, on servers that differ only in the encoder cache (both up at once, the order
    rotated per repetition), both rows at every cut; the report projects the full depth from the cuts
    (:func:`_full_depth`)."""
    reps = args.reps or 2
    n_docs = args.cache_docs
    python = server_python(args.server_python)
    paragraphs = corpus(60, min_chars=200, max_chars=700, whole=True)
    seeds = count(1000)
    depths = [tuple(int(n) for n in cut.split("+")) for cut in args.depths.split(",")]
    env = {"VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2")}
    report = header(
        "Workload (c): the same pages under new queries, by encoder-cache size",
        python,
        {
            "checkpoint": "random weights, Qwen3-VL-Reranker-2B's widths, bfloat16, cut to "
            + ", ".join(f"{t} text + {v} vision layers" for t, v in depths),
            "calls": f"{args.passes} queries over the same {n_docs} page renders per repetition",
            "repetitions": f"{reps}, fresh pages each, servers up together, order rotated",
        },
    )
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="qwen3-bench-vl-cache-") as tmp:
        for text_layers, vision_layers in depths:
            ckpt = realistic_checkpoint(text_layers, vision_layers)
            rows = CACHE_ROWS
            servers = {
                name: VLLMServer(
                    ckpt.path,
                    python=python,
                    max_model_len=8192,
                    env=env,
                    image_cache_pages=pages,
                    log_file=cache_dir() / "logs" / f"vl-cache-{text_layers}t{vision_layers}v-{i}.log",
                )
                for i, (name, pages) in enumerate(rows.items())
            }
            with serving(servers) as started:
                clients = {name: RerankClient(s.base_url, timeout=1800.0) for name, s in started.items()}
                plans = {name: s.plan.describe() if s.plan else "" for name, s in started.items()}
                warm = build("images", 2, next(seeds), Path(tmp), paragraphs)
                for client in clients.values():
                    client.score(f"warm-up {next(seeds)}", warm.documents)
                for rep in range(reps):
                    pages = build("images", n_docs, next(seeds), Path(tmp), paragraphs)
                    queries = [f"[{rep}.{i}] {QUERY}" for i in range(args.passes)]
                    names = list(clients)
                    names = names[rep % len(names) :] + names[: rep % len(names)]
                    for name in names:
                        url = started[name].base_url
                        times, scores = [], []
                        for query in queries:
                            before = mm_cache_counters(url)
                            start = time.perf_counter()
                            scores.append(clients[name].score(query, pages.documents))
                            times.append(time.perf_counter() - start)
                            mm_cache_counters(url, before["queries"] + n_docs)
                            logger.info("%s %s rep %d: %.1f s", ckpt.path.name, name, rep, times[-1])
                        runs.append(
                            {
                                "text_layers": text_layers,
                                "vision_layers": vision_layers,
                                "row": name,
                                "rep": rep,
                                "seconds": times,
                                "scores": scores,
                                "image_tokens": pages.image_tokens,
                                "plan": plans[name],
                            }
                        )
                for client in clients.values():
                    client.close()
                # Kept as measured before the report is made from them.
                raw = cache_dir() / "vl_encoder_cache_runs.json"
                raw.write_text(json.dumps({"report": report, "runs": runs, "docs": n_docs}))
    return _cache_report(report, runs, n_docs)


def _cache_report(report: str, runs: list[dict[str, Any]], n_docs: int) -> Result:
    lines = [report]
    lines.append(
        "| layers (text + vision) | row | rep | pass 1 s | pass 2 s | pass 3 s | repeat speed-up |\n"
        "|---|---|---|---|---|---|---|"
    )
    for run in runs:
        s = run["seconds"]
        cells = " | ".join(fmt(x) for x in (s + [float("nan")] * 3)[:3])
        speedup = s[0] / median(s[1:]) if len(s) > 1 else float("nan")
        lines.append(
            f"| {run['text_layers']} + {run['vision_layers']} | {run['row']} | {run['rep'] + 1} | "
            f"{cells} | {speedup:.2f}x |"
        )
    by_rep: dict[tuple[int, int, int], dict[str, dict[str, Any]]] = {}
    for run in runs:
        by_rep.setdefault((run["text_layers"], run["vision_layers"], run["rep"]), {})[run["row"]] = run
    first, sized = list(CACHE_ROWS)
    ratios = [
        pair[sized]["seconds"][0] / pair[first]["seconds"][0] for pair in by_rep.values() if first in pair
    ]
    diffs = [
        max(
            abs(a - b)
            for x, y in zip(pair[first]["scores"], pair[sized]["scores"], strict=True)
            for a, b in zip(x, y, strict=True)
        )
        for pair in by_rep.values()
        if first in pair
    ]
    lines.append("")
    if ratios:
        lines.append(
            "- first pass, sized cache / vLLM's sizing, same pages and queries, side by side: "
            + ", ".join(f"{r:.3f}" for r in ratios)
            + f" (median {median(ratios):.3f}); max |score difference| between the rows: {max(diffs):.2g}"
        )
    plans = {run["row"]: run["plan"] for run in runs}
    for name, plan in plans.items():
        lines.append(f"- {name}: `{plan.splitlines()[0]}`")
    projection = _full_depth(runs, sized)
    lines += ["", *projection.pop("lines")]
    data = {
        "runs": runs,
        "docs": n_docs,
        "first_pass_ratios": ratios,
        "score_diffs": diffs,
        "projection": projection,
    }
    headlines = []
    for cut in sorted({(run["text_layers"], run["vision_layers"]) for run in runs}):
        speedups = [
            run["seconds"][0] / median(run["seconds"][1:])
            for run in runs
            if (run["text_layers"], run["vision_layers"]) == cut
            and run["row"] == sized
            and len(run["seconds"]) > 1
        ]
        if speedups:
            goal = ">= 3" if cut == (1, 1) else ""
            headlines.append(
                (
                    f"repeat pass speed-up, encoder cache sized ({cut[0]}+{cut[1]} layers, median)",
                    f"{median(speedups):.2f}x",
                    goal,
                )
            )
    if "speedup" in projection:
        headlines.append(
            ("repeat pass speed-up projected to the full 2B depth", f"{projection['speedup']:.2f}x", ">= 2.5")
        )
    if ratios:
        headlines.append(
            (
                "first pass, encoder cache sized / vLLM's sizing (median, side by side)",
                f"{median(ratios):.3f}",
                "<= 1.05",
            )
        )
    return Result("vl_encoder_cache", "\n".join(lines) + "\n", data, headlines)


#: The layers of Qwen3-VL-Reranker-2B: its vision tower's and its language model's.
FULL_VISION_LAYERS, FULL_TEXT_LAYERS = 24, 28


def _full_depth(runs: list[dict[str, Any]], row: str) -> dict[str, Any]:
    """The full-depth 2B's first and repeat pass, projected from two layer cuts of ``row``.

    At each cut, the first pass (median over repetitions) encodes every page and the repeat pass
    (median of the later passes, then over repetitions) encodes none: ``vision = first - repeat`` is
    the vision side, ``repeat`` the rest (text layers, preprocessing, HTTP). One more layer of each
    between the cuts gives the cost of one vision layer and of one text layer; what is left at the
    first cut is the fixed part (patch embedding, mergers, embeddings, the head, overheads).
    Full depth: ``first = fixed + 24 x vision layer + 28 x text layer``, ``repeat = fixed text part +
    28 x text layer``."""
    cuts: dict[tuple[int, int], tuple[float, float]] = {}
    for key in sorted({(r["text_layers"], r["vision_layers"]) for r in runs}):
        mine = [r for r in runs if (r["text_layers"], r["vision_layers"]) == key and r["row"] == row]
        if mine:
            first = median([r["seconds"][0] for r in mine])
            repeat = median([median(r["seconds"][1:]) for r in mine])
            cuts[key] = (first - repeat, repeat)
    lines = ["### Full depth, projected from the layer cuts", ""]
    lines.append(
        "Method: at each cut, vision = first pass - repeat pass (medians over repetitions; a repeat encodes "
        "no page), text = the repeat pass. Between two cuts one layer of each is added: the differences "
        "are one vision layer's and one text layer's cost; the first cut less one layer of each is the "
        f"fixed part. Full depth (2B): first = fixed + {FULL_VISION_LAYERS} x vision layer + "
        f"{FULL_TEXT_LAYERS} x text layer; repeat = fixed text part + {FULL_TEXT_LAYERS} x text layer."
    )
    lines.append("")
    lines.append("| layers (text + vision) | vision s | text (repeat) s |\n|---|---|---|")
    lines += [f"| {t} + {v} | {fmt(cut[0])} | {fmt(cut[1])} |" for (t, v), cut in cuts.items()]
    if len(cuts) < 2:
        return {"cuts": {f"{t}+{v}": c for (t, v), c in cuts.items()}, "lines": lines}
    measured = list(cuts.items())
    (low, low_cut), (high, high_cut) = measured[0], measured[-1]
    vision_layer = (high_cut[0] - low_cut[0]) / (high[1] - low[1])
    text_layer = (high_cut[1] - low_cut[1]) / (high[0] - low[0])
    vision_fixed = low_cut[0] - low[1] * vision_layer
    text_fixed = low_cut[1] - low[0] * text_layer
    repeat = text_fixed + FULL_TEXT_LAYERS * text_layer
    first = repeat + vision_fixed + FULL_VISION_LAYERS * vision_layer
    lines.append("")
    lines.append(
        f"- per vision layer {fmt(vision_layer)} s, per text layer {fmt(text_layer)} s (per pass); fixed: "
        f"vision {fmt(vision_fixed)} s, text {fmt(text_fixed)} s"
    )
    lines.append(
        f"- projected full depth: first pass {fmt(first)} s, repeat pass {fmt(repeat)} s: repeat speed-up "
        f"**{first / repeat:.2f}x**"
    )
    return {
        "cuts": {f"{t}+{v}": c for (t, v), c in cuts.items()},
        "vision_layer_s": vision_layer,
        "text_layer_s": text_layer,
        "vision_fixed_s": vision_fixed,
        "text_fixed_s": text_fixed,
        "first_s": first,
        "repeat_s": repeat,
        "speedup": first / repeat,
        "lines": lines,
    }


def _report(report: str, data: dict[str, Any], n_docs: int) -> Result:
    times: dict[str, dict[str, list[float]]] = data["seconds"]
    rows, speed = [], {}
    for kind, measured in times.items():
        speed[kind] = {name: n_docs / median(values) for name, values in measured.items()}
        best_peer = max(v for name, v in speed[kind].items() if name in (REFERENCE, ST))
        for name, values in measured.items():
            tokens = data["image_tokens"][kind] / median(values)
            rows.append(
                [
                    kind,
                    name,
                    fmt(median(values)),
                    fmt(speed[kind][name]),
                    fmt(tokens),
                    fmt(speed[kind][name] / best_peer),
                    fmt(data["max_abs_diff"][kind][name]) if name in data["max_abs_diff"][kind] else "-",
                ]
            )
    report += f"VLLMServer served the checkpoint with --dtype {data['chosen_dtype']}. "
    report += f"Sentence Transformers: {data['sentence_transformers']}. "
    report += (
        "Raw vLLM posts the client's payload for its own pages under fresh queries (no score check: "
        "its requests are the client's). Scores are at each row's dtype, against the float32 reference.\n\n"
    )
    report += md_table(
        [
            "workload",
            "row",
            "median s per call",
            "docs/s",
            "image tokens/s",
            "vs best in-process",
            "max |diff| vs f32 ref",
        ],
        rows,
    )
    report += "\n### The client's share of a call (RerankClient + VLLMServer)\n\n"
    split_rows, client_share = [], {}
    for kind in times:
        calls = [s for s in data["client_split"] if s["kind"] == kind]
        total = {part: median([c[part] for c in calls]) for part in ("prepare", "encode", "send", "server")}
        whole = sum(total.values()) or 1.0
        client_share[kind] = 100 * (whole - total["server"]) / whole
        split_rows.append([kind, *(f"{fmt(total[p])} s ({fmt(100 * total[p] / whole)}%)" for p in total)])
    report += md_table(
        [
            "workload",
            "prepare (read, decode, resize)",
            "encode (PNG, base64)",
            "send (rest of client)",
            "server",
        ],
        split_rows,
    )
    if data["stopwatch_missing"]:
        report += (
            f"\n(stages not found in the client, counted in 'send': {', '.join(data['stopwatch_missing'])})\n"
        )
    report += "\n### (c) The same pages under new queries\n\n"
    first = data["repeated"][0]["seconds"]
    report += md_table(
        [
            "pass",
            "s",
            "docs/s",
            "vs first pass",
            "client prepare s",
            "client encode s",
            "server s",
            "vLLM mm cache hits / lookups",
        ],
        [
            [
                p["pass"],
                fmt(p["seconds"]),
                fmt(n_docs / p["seconds"]),
                fmt(first / p["seconds"]),
                fmt(p["prepare"]),
                fmt(p["encode"]),
                fmt(p["server"]),
                f"{p.get('mm_cache_hits', 0):.0f} / {p.get('mm_cache_queries', 0):.0f}",
            ]
            for p in data["repeated"]
        ],
    )
    report += _where_the_time_goes(data, speed, client_share)
    report += "\n### Fidelity (float32 server vs float32 reference, same pairs)\n\n"
    report += "".join(
        f"- {kind}: max |score - reference| = {fmt(diff)}\n"
        for kind, diff in data["float32_max_abs_diff"].items()
    )
    data["docs_per_s"] = speed
    headlines = []
    for kind in times:
        best = max(v for name, v in speed[kind].items() if name in (REFERENCE, ST))
        headlines.append(
            (
                f"docs/s, RerankClient + VLLMServer / best in-process peer, {n_docs} {kind} "
                f"(Qwen3-VL-2B widths, "
                f"{data['layers']['text']}+{data['layers']['vision']} layers)",
                fmt(speed[kind][CLIENT] / best),
                ">= 2.0" if kind == "images" else "",
            )
        )
    headlines.append(
        (
            "the client's own share of a call (prepare + encode + send), (a) images",
            f"{fmt(client_share['images'])}%",
            "<= 5%",
        )
    )
    passes = data["repeated"]
    if len(passes) > 1:
        headlines.append(
            (
                "docs/s, repeated pass / first pass over the same pages",
                fmt(first / median([p["seconds"] for p in passes[1:]])),
                ">= 1.5",
            )
        )
    headlines.append(
        (
            "max score difference vs the Qwen3-VL reference (float32, realistic widths)",
            fmt(max(data["float32_max_abs_diff"].values())),
            "<= 1e-4",
        )
    )
    return Result("vl_realistic", report, data, headlines)


def _where_the_time_goes(
    data: dict[str, Any], speed: dict[str, dict[str, float]], client_share: dict[str, float]
) -> str:
    """Why the goals are met or missed, from the figures above."""
    passes = data["repeated"]
    repeats = passes[1:]
    hits = sum(p.get("mm_cache_hits", 0) for p in repeats)
    lookups = sum(p.get("mm_cache_queries", 0) for p in repeats)
    first_prep = passes[0]["prepare"] + passes[0]["encode"]
    later_prep = median([p["prepare"] + p["encode"] for p in repeats]) if repeats else first_prep
    lines = [
        "\n### Where the time goes\n\n",
        f"- (a) the server computes {fmt(100 - client_share['images'])}% of a call; the client's part "
        f"(preparing, encoding, sending) is {fmt(client_share['images'])}%. The pipeline scores "
        f"{fmt(speed['images'][CLIENT] / speed['images'][REFERENCE])}x the in-process reference's "
        "docs/s. Both compute the same matmuls over the same tokens (the reference one pair at a "
        "time, without padding); on a CPU, batching pairs does not make a matmul cheaper per token, "
        "so a server can win only what the reference spends outside the model, which at these "
        "widths is little.\n",
    ]
    if repeats:
        lines.append(
            f"- (c) every repeat hits both caches (the client's preparation {fmt(first_prep)} s -> "
            f"{fmt(later_prep)} s per call; vLLM's multimodal processor cache {hits:.0f} / {lookups:.0f}), "
            "and the page's image tokens come after the query in Qwen3-VL-Reranker's prompt, so the "
            "prefix cache cannot reuse them across queries. What a repeat saves on the server is the "
            "vision encoder: vLLM's encoder cache shares its outputs between requests by the image's "
            "hash; vLLM sizes it to `--max-num-batched-tokens` embeddings (2,048 on its CPU build: one "
            "page), VLLMServer to 32 pages by default (`image_cache_pages`; `vl_encoder_cache.md` "
            "measures both).\n"
        )
    return "".join(lines)


def plot(result: Result, path: Path) -> None:
    """docs/s of each row per workload, and of each pass of (c)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    speed: dict[str, dict[str, float]] = result.data["docs_per_s"]
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(11, 4.2), constrained_layout=True, gridspec_kw={"width_ratios": [3, 1]}
    )
    names = list(next(iter(speed.values())))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        left.bar(
            [k + i * width for k in range(len(speed))],
            [speed[kind].get(name, 0.0) for kind in speed],
            width,
            label=name,
        )
    left.set_xticks(
        [k + 0.4 - width / 2 for k in range(len(speed))],
        [f"({'ab'[k]}) {kind}" for k, kind in enumerate(speed)],
    )
    left.set_ylabel("documents / s (higher is better)")
    left.legend(fontsize=8)
    passes = result.data["repeated"]
    right.bar(
        [str(p["pass"]) for p in passes],
        [result.data["docs"] / p["seconds"] for p in passes],
        color="tab:blue",
    )
    right.set_xlabel("(c) pass over the same pages")
    right.set_ylabel("documents / s")
    layers = result.data["layers"]
    fig.suptitle(
        f"Qwen3-VL-Reranker-2B widths, {layers['text']} text + {layers['vision']} vision layers, "
        "random weights",
        fontsize=10,
    )
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parser() -> argparse.ArgumentParser:
    result = common_parser(__doc__.splitlines()[0] if __doc__ else "")
    result.add_argument("--text-layers", type=int, default=TEXT_LAYERS, help="text layers kept (of 28)")
    result.add_argument("--vision-layers", type=int, default=VISION_LAYERS, help="vision layers kept (of 24)")
    result.add_argument("--passes", type=int, default=3, help="queries over the same pages in (c)")
    result.add_argument(
        "--check-docs",
        type=int,
        default=6,
        help="documents of each workload scored in float32 for the score check",
    )
    result.add_argument(
        "--peer-dtype", choices=("float32", "bfloat16"), default=None, help="in-process rows' dtype"
    )
    result.add_argument("--out", type=Path, default=None, help="where to write the results")
    result.add_argument(
        "--encoder-cache",
        action="store_true",
        help="workload (c) only, vLLM's encoder-cache sizing vs the plan's, at each of --depths",
    )
    result.add_argument("--depths", default="1+1,2+2", help="text+vision layer cuts for --encoder-cache")
    result.add_argument("--cache-docs", type=int, default=12, help="pages per pass for --encoder-cache")
    return result


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    result = cli(run_encoder_cache if args.encoder_cache else run, parser(), argv)
    out = args.out or (cache_dir() / "quick-results" if args.quick else RESULTS)
    result.save(out)
    if not args.encoder_cache:
        plot(result, out / "vl_realistic.png")
    print(f"results written to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
