"""Images: RerankClient + VLLMServer vs the transformers reference, on a Qwen3-VL reranker.

The checkpoint is the tiny random-weight Qwen3-VL-Reranker fixture (text hidden 256, 2 layers;
vision depth 2, hidden 128), served by ``VLLMServer`` with its defaults. With so small a model
this measures the pipeline around it: reading and decoding the files, the official resize,
encoding, transport, vLLM's multimodal processing and batching on one side; the official
code's per-pair processing on the other. A 2B or 8B model adds the same model compute to both.

Two workloads of 100 documents, one text query per call, images as files on disk (crops of
matplotlib's sample photos, scans, maps and charts, 192-640 px, JPEG and PNG):

* **images**: 100 image documents;
* **mixed**: a third text paragraphs, a third images, a third text + image (``Content``).

Rows, interleaved in one run (fresh images and a fresh query on every repetition, so no cache
on either side helps):

* ``RerankClient.score`` against the server (one request of 100 documents: its default batch);
* the client's image preparation alone (decode, resize, PNG-encode; no request): where the
  client's share of the time goes;
* the transformers reference (``tests/support/reference_vl.py``: the official ``Qwen3VLReranker``'s
  way, one pair at a time through the checkpoint's chat template and image processor).

The same pairs are scored by both for a score check (float32 on both sides).

    python benchmarks/multimodal.py [--quick] [--reps N]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from itertools import count
from pathlib import Path
from typing import Any

from _common import (
    REPO,
    Result,
    cli,
    common_parser,
    corpus,
    fmt,
    header,
    interleave,
    md_table,
    median,
    serve,
    server_python,
    serving,
    vl_checkpoint,
)
from _images import image_files

from qwen3_vllm_rerank import Content, Image, RerankClient
from qwen3_vllm_rerank.images import prepare_image

N_DOCS = 100
QUERY = "a photograph or scan that shows a person's head"
CLIENT = "RerankClient + VLLMServer"
PREPARE = "client image preparation only (no request)"
REFERENCE = "transformers reference (official, per pair)"

Document = str | Image | Content


def _reference() -> tuple[Any, Callable[..., float]]:
    """``Side`` and ``reference_score`` of the test suite's reference (written from the official code)."""
    sys.path.insert(0, str(REPO))
    from tests.support.reference_vl import Side, reference_score

    return Side, reference_score


class Workload:
    """One set of documents, for the client (``documents``) and for the reference (``parts``)."""

    def __init__(self, kind: str, n: int, seed: int, directory: Path) -> None:
        files = image_files(n, seed, directory / f"{kind}-{seed}")
        texts = corpus(n, min_chars=200, max_chars=700, whole=True)
        self.documents: list[Document] = []
        #: ``(text, image file)`` of each document; the reference opens the file when it scores.
        self.parts: list[tuple[str | None, Path | None]] = []
        for i, (path, text) in enumerate(zip(files, texts, strict=True)):
            form = "image" if kind == "images" else ("text", "image", "text+image")[i % 3]
            if form == "text":
                self.documents.append(text)
                self.parts.append((text, None))
            elif form == "image":
                self.documents.append(Image(path))
                self.parts.append((None, path))
            else:
                self.documents.append(Content(text[:300], images=[Image(path)]))
                self.parts.append((text[:300], path))
        self.images = [image for d in self.documents for image in _images_of(d)]


def _reference_scores(
    checkpoint: Path, query: str, parts: list[tuple[str | None, Path | None]]
) -> list[float]:
    """The reference's scores; reading each image file is part of its work, as for the client."""
    side, reference_score = _reference()
    return [
        reference_score(checkpoint, side(text=query), side(text=text, images=[_open(path)] if path else []))
        for text, path in parts
    ]


def _open(path: Path) -> Any:
    from PIL import Image as PILImage

    with PILImage.open(path) as image:
        image.load()
        return image.copy()


def _images_of(document: Document) -> list[Image]:
    if isinstance(document, Image):
        return [document]
    if isinstance(document, Content):
        return list(document.images)
    return []


def run(args: argparse.Namespace) -> Result:
    import torch

    reps = args.reps or (1 if args.quick else 3)
    n_docs = 12 if args.quick else N_DOCS
    python = server_python(args.server_python)
    ckpt = vl_checkpoint()
    seeds = count(1)
    kinds = ("images", "mixed")
    workload = {
        "checkpoint": "random tiny Qwen3-VL-Reranker fixture (float32): it measures the pipeline, "
        "not a 2B model's compute",
        "calls": f"one text query x {n_docs} documents; images: all images; mixed: a third text, a third "
        "image, a third text + image; images 192-640 px (crops of matplotlib's sample photos, scans, maps, "
        "charts), JPEG and PNG files",
        "reference": "tests/support/reference_vl.py (the official code's way: one pair at a time), "
        f"torch threads {torch.get_num_threads()}",
        "repetitions": f"{reps}, interleaved, order rotated; fresh images and a fresh query every time",
    }
    report = header("Images: RerankClient + VLLMServer vs the transformers reference", python, workload)
    times: dict[str, dict[str, list[float]]] = {}
    diffs: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="qwen3-bench-images-") as tmp:
        directory = Path(tmp)
        # Built before the server starts: files on disk, as in a document store.
        sets = {
            kind: [Workload(kind, n_docs, next(seeds), directory) for _ in range(reps + 1)] for kind in kinds
        }
        server = serve(ckpt, python, dtype=None, max_model_len=None, log_name="multimodal")
        with serving({"vl": server}), RerankClient(server.base_url, timeout=900.0) as client:
            plan = server.plan
            chosen = (plan.dtype if plan else None) or "vLLM's choice"
            salt = count(1)

            def fresh_query() -> str:
                return f"[{next(salt):04d}] {QUERY}"

            for kind in kinds:
                first, *rest = sets[kind]
                # Warm-up and score check on the same pairs.
                ours = client.score(QUERY, first.documents)
                theirs = _reference_scores(ckpt.path, QUERY, first.parts)
                diffs[kind] = [abs(a - b) for a, b in zip(ours, theirs, strict=True)]
                times[kind] = interleave(_cases(client, rest, ckpt.path, fresh_query), reps, warmup=0)
    return _report(report, times, diffs, n_docs, chosen, reps)


def _cases(
    client: RerankClient, sets: list[Workload], checkpoint: Path, query: Callable[[], str]
) -> dict[str, Callable[[int], object]]:
    """The measured cases; repetition ``rep`` uses ``sets[rep]`` (fresh images each time)."""
    return {
        CLIENT: lambda rep: client.score(query(), sets[rep].documents),
        PREPARE: lambda rep: [prepare_image(image, label="document") for image in sets[rep].images],
        REFERENCE: lambda rep: _reference_scores(checkpoint, query(), sets[rep].parts),
    }


def _report(
    report: str,
    times: dict[str, dict[str, list[float]]],
    diffs: dict[str, list[float]],
    n_docs: int,
    chosen: str,
    reps: int,
) -> Result:
    rows = []
    speed: dict[str, dict[str, float]] = {}
    for kind, measured in times.items():
        speed[kind] = {name: n_docs / median(values) for name, values in measured.items()}
        for name, values in measured.items():
            rows.append(
                [
                    kind,
                    name,
                    fmt(median(values)),
                    fmt(speed[kind][name]) if name != PREPARE else "-",
                    fmt(speed[kind][name] / speed[kind][REFERENCE]) if name != PREPARE else "-",
                ]
            )
    report += f"VLLMServer served the fixture with --dtype {chosen}.\n\n"
    report += md_table(["workload", "case", "median s per call", "docs/s", "vs reference"], rows)
    report += "\n"
    for kind in times:
        share = median(times[kind][PREPARE]) / median(times[kind][CLIENT])
        ratio = speed[kind][CLIENT] / speed[kind][REFERENCE]
        report += (
            f"- {kind}: RerankClient + VLLMServer is **{fmt(ratio)}x** "
            f"the reference's docs/s; preparing the images on the client is {fmt(share * 100)}% of its call. "
            f"Scores of the same {n_docs} pairs: max |client - reference| = {fmt(max(diffs[kind]))}.\n"
        )
    data = {
        "seconds": times,
        "docs_per_s": speed,
        "max_abs_diff": {kind: max(values) for kind, values in diffs.items()},
        "chosen_dtype": chosen,
        "docs": n_docs,
        "reps": reps,
    }
    headlines = [
        (
            f"pipeline overhead (tiny Qwen3-VL fixture, no compute): docs/s, RerankClient + VLLMServer / "
            f"transformers reference, {n_docs} {kind} documents",
            fmt(speed[kind][CLIENT] / speed[kind][REFERENCE]),
            "",
        )
        for kind in times
    ]
    headlines.append(
        (
            "max score difference vs the Qwen3-VL reference (float32, tiny fixture)",
            fmt(max(map(max, diffs.values()))),
            "",
        )
    )
    return Result("multimodal", report, data, headlines)


def parser() -> argparse.ArgumentParser:
    return common_parser(__doc__.splitlines()[0] if __doc__ else "")


def main(argv: list[str] | None = None) -> None:
    cli(run, parser(), argv)


if __name__ == "__main__":
    main()
