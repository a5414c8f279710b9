"""Rerank images and text with Qwen3-VL-Reranker served by vLLM, on real pictures that work offline.

    python examples/multimodal_rerank.py --base-url http://127.0.0.1:8000      # a running Qwen3-VL reranker
    python examples/multimodal_rerank.py --model /path/to/Qwen3-VL-Reranker-2B  # starts vLLM for it
    python examples/multimodal_rerank.py                                        # starts vLLM on a tiny
                                                                                # random-weight checkpoint

The documents are pictures that ship with matplotlib (Grace Hopper's portrait, a gift box,
the matplotlib logo, an MRI scan), a chart drawn from its stock-price sample data with a
caption, and a few text passages: the kinds of things a RAG system over photos, scans and
slides retrieves. They are ranked twice: against a text query, then against an image query
(the portrait itself).

Images are passed as ``Image(path)``, ``Image(PIL image)`` or ``Image(png bytes)``, alone or
with text in ``Content(text, images=[...])``; the client resizes them exactly as the official
reranker does and sends them inline.

Needs matplotlib and Pillow (``pip install matplotlib "qwen3-vllm-rerank[images]"``). Starting
a server needs vLLM in the interpreter given by ``--server-python`` (default
``$QWEN3_VLLM_RERANK_SERVER_PYTHON``, else this one) and, without ``--model``, the ``convert``
extra to build the fixture checkpoint, whose RANDOM weights make the scores meaningless (the
prompt, the pixels and the HTTP path are the real ones).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import gzip
import io
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

import matplotlib
import matplotlib.cbook
import numpy as np
from PIL import Image as PILImage

from qwen3_vllm_rerank import Content, Image, RerankClient
from qwen3_vllm_rerank.testing import local_reranker, make_vl_fixture_checkpoint

logger = logging.getLogger("multimodal_rerank")

Document = str | Image | Content


def sample(name: str) -> Path:
    """A file of matplotlib's sample data (installed with matplotlib)."""
    return Path(matplotlib.cbook.get_sample_data(name, asfileobj=False))


def mri_scan() -> PILImage.Image:
    """The MRI slice matplotlib ships as raw 16-bit pixels, as an 8-bit grayscale image."""
    raw = np.frombuffer(gzip.decompress(sample("s1045.ima.gz").read_bytes()), np.uint16).reshape(256, 256)
    return PILImage.fromarray((raw / raw.max() * 255).astype(np.uint8), mode="L")


def stock_chart() -> bytes:
    """A line chart of matplotlib's stock-price sample data, as PNG bytes."""
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with sample("Stocks.csv").open() as handle:
        rows = list(csv.reader(line for line in handle if not line.startswith("#")))
    fig, axis = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for column, name in enumerate(rows[0][1:5], start=1):
        axis.plot([float(row[column]) if row[column] else float("nan") for row in rows[1:]], label=name)
    axis.set_title("Monthly closing prices since 1990")
    axis.legend()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def documents() -> list[tuple[str, Document]]:
    """(label, document): images, text, and text with an image."""
    return [
        ("image: grace_hopper.jpg (photo)", Image(sample("grace_hopper.jpg"))),
        ("image: Minduka_Present_Blue_Pack.png (gift box)", Image(sample("Minduka_Present_Blue_Pack.png"))),
        ("image: logo2.png (matplotlib logo)", Image(sample("logo2.png"))),
        ("image: s1045.ima.gz (MRI scan, PIL image)", Image(mri_scan())),
        (
            "text+image: stock chart with caption",
            Content(
                "Monthly closing prices of IBM, Apple, Microsoft and Xerox.", images=[Image(stock_chart())]
            ),
        ),
        (
            "text: Grace Hopper",
            "Grace Hopper was an American computer scientist and United States Navy rear admiral who "
            "pioneered machine-independent programming languages.",
        ),
        ("text: gift wrapping", "Wrap the present in blue paper and tie it with a silver ribbon."),
        ("text: MRI", "Magnetic resonance imaging shows the soft tissue of the brain in thin slices."),
    ]


@contextlib.contextmanager
def reranker_url(args: argparse.Namespace) -> Iterator[str]:
    """The server's URL: ``--base-url``, else a local vLLM for ``--model`` or for a tiny fixture."""
    if args.base_url:
        yield args.base_url
        return
    with contextlib.ExitStack() as stack:
        model = args.model
        if model is None:
            workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="qwen3-vl-fixture-"))
            logger.warning(
                "no model given: serving a tiny Qwen3-VL-Reranker-shaped checkpoint with RANDOM weights; "
                "its scores are meaningless, everything else is the real thing"
            )
            model = make_vl_fixture_checkpoint(Path(workdir) / "vl-fixture")
        yield stack.enter_context(local_reranker(model, python=args.server_python))


def show(title: str, ranked: list[tuple[float, str]]) -> None:
    print(title)
    for rank, (score, label) in enumerate(ranked, 1):
        print(f"{rank:3d}. {score:.4f}  {label}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base-url", help="a running Qwen3-VL reranker server; otherwise one is started")
    parser.add_argument("--model", help="Qwen3-VL reranker checkpoint to serve when no --base-url is given")
    parser.add_argument("--server-python", help="interpreter with vLLM installed, for the local server")
    parser.add_argument("--query", default="a portrait photograph of a computer pioneer in uniform")
    parser.add_argument("--top-n", type=int, default=4)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    labelled = documents()
    labels = [label for label, _ in labelled]
    docs = [document for _, document in labelled]
    image_query = Image(sample("grace_hopper.jpg"))
    with reranker_url(args) as base_url, RerankClient(base_url) as client:
        by_text = client.rerank(args.query, docs, top_n=args.top_n)
        by_image = client.rerank(image_query, docs, top_n=args.top_n)

    print(f"query: {args.query}")
    show(
        f"Qwen3-VL-Reranker's best {len(by_text)} of {len(docs)} documents:",
        [(r.score, labels[r.index]) for r in by_text],
    )
    show(
        "image query: grace_hopper.jpg; best documents:",
        [(r.score, labels[r.index]) for r in by_image],
    )


if __name__ == "__main__":
    main()
