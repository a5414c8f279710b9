"""Real images for the multimodal benchmarks, from matplotlib's sample data (shipped, offline).

:func:`page_files` renders document pages (what RAG over PDFs and slides reranks): text in
columns, headings, and a figure cut from the sources below, at scan sizes.

Six sources: two photographs (Grace Hopper's portrait, a gift box with transparency), a logo,
an MRI slice, a shaded elevation map and a rendered stock-price chart. :func:`image_files`
writes ``n`` distinct images cut from them (a random crop, a random size, JPEG for photos,
PNG for the rest) so that every repetition of a benchmark can use images nobody has seen.
"""

from __future__ import annotations

import csv
import gzip
import io
import random
from functools import cache
from pathlib import Path
from typing import Any

__all__ = ["PAGE_SIZES", "image_files", "page_files", "sources"]

#: Typical page renders: a 800x1000 screenshot-like page and an A4 page at 150 dpi.
PAGE_SIZES = ((800, 1000), (1240, 1754))


def _sample(name: str) -> Path:
    import matplotlib.cbook

    return Path(matplotlib.cbook.get_sample_data(name, asfileobj=False))


def _stock_chart() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    with _sample("Stocks.csv").open() as handle:
        rows = [row for row in csv.reader(line for line in handle if not line.startswith("#"))]
    names, data = rows[0][1:], rows[1:]
    fig, axis = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for column, name in enumerate(names[:4], start=1):
        values = [float(row[column]) if row[column] else float("nan") for row in data]
        axis.plot(range(len(values)), values, label=name)
    axis.set_title("Monthly closing prices")
    axis.legend()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def _mri() -> Any:
    import numpy as np
    from PIL import Image

    raw = np.frombuffer(gzip.decompress(_sample("s1045.ima.gz").read_bytes()), np.uint16).reshape(256, 256)
    return Image.fromarray((raw / raw.max() * 255).astype(np.uint8), mode="L")


def _elevation() -> Any:
    import numpy as np
    from matplotlib import colormaps
    from matplotlib.colors import LightSource
    from PIL import Image

    with np.load(_sample("jacksboro_fault_dem.npz")) as dem:
        elevation = dem["elevation"]
    shaded = LightSource(azdeg=315, altdeg=45).shade(
        elevation, cmap=colormaps["gist_earth"], blend_mode="soft"
    )
    return Image.fromarray((shaded[..., :3] * 255).astype(np.uint8), mode="RGB")


@cache
def sources() -> list[tuple[str, Any, str]]:
    """``(name, PIL image, file format)`` of each source image."""
    from PIL import Image

    return [
        ("photo", Image.open(_sample("grace_hopper.jpg")).convert("RGB"), "JPEG"),
        ("gift", Image.open(_sample("Minduka_Present_Blue_Pack.png")).convert("RGBA"), "PNG"),
        ("logo", Image.open(_sample("logo2.png")).convert("RGBA"), "PNG"),
        ("mri", _mri(), "PNG"),
        ("elevation", _elevation(), "PNG"),
        ("chart", _stock_chart(), "PNG"),
    ]


def image_files(
    n: int, seed: int, directory: Path, *, min_side: int = 192, max_side: int = 640
) -> list[Path]:
    """``n`` image files in ``directory``: crops of the sources, longer side ``min_side..max_side``."""
    from PIL import Image

    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n):
        name, image, file_format = sources()[i % len(sources())]
        width, height = image.size
        crop_w, crop_h = int(width * rng.uniform(0.6, 1.0)), int(height * rng.uniform(0.6, 1.0))
        left, top = rng.randrange(width - crop_w + 1), rng.randrange(height - crop_h + 1)
        crop = image.crop((left, top, left + crop_w, top + crop_h))
        scale = rng.randint(min_side, max_side) / max(crop.size)
        crop = crop.resize(
            (max(1, round(crop_w * scale)), max(1, round(crop_h * scale))), Image.Resampling.LANCZOS
        )
        path = directory / f"{seed}-{i:03d}-{name}.{'jpg' if file_format == 'JPEG' else 'png'}"
        crop.save(path, format=file_format, **({"quality": 90} if file_format == "JPEG" else {}))
        files.append(path)
    return files


def page_files(
    n: int,
    seed: int,
    directory: Path,
    paragraphs: list[str],
    *,
    sizes: tuple[tuple[int, int], ...] = PAGE_SIZES,
) -> list[Path]:
    """``n`` rendered pages in ``directory``, the sizes in ``sizes`` in turn, deterministic per ``seed``.

    Each page: a heading, body text from ``paragraphs`` wrapped in one or two columns, and
    (on most pages) a figure cut from :func:`sources`; PNG like a rendered PDF page, every
    third one JPEG like a scan.
    """
    from PIL import Image, ImageDraw, ImageFont

    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n):
        width, height = sizes[i % len(sizes)]
        scale = width / 800
        page = Image.new("RGB", (width, height), (255, 255, 255))
        draw = ImageDraw.Draw(page)
        body = ImageFont.load_default(size=round(15 * scale))
        heading = ImageFont.load_default(size=round(30 * scale))
        margin, line = round(60 * scale), round(21 * scale)
        draw.text(
            (margin, margin),
            f"Section {seed}.{i + 1}: {paragraphs[i % len(paragraphs)][:36]}",
            fill=(20, 20, 60),
            font=heading,
        )
        top = margin + round(60 * scale)
        if rng.random() < 0.75:
            figure = sources()[rng.randrange(len(sources()))][1].convert("RGB")
            box_w = rng.randint(width // 3, width - 2 * margin)
            box_h = min(round(box_w * figure.height / figure.width), height // 3)
            page.paste(figure.resize((box_w, box_h), Image.Resampling.BILINEAR), (margin, top))
            top += box_h + line
        columns = rng.choice((1, 2))
        column_w = (width - 2 * margin - (columns - 1) * margin // 2) // columns
        chars = max(10, int(column_w / (8.2 * scale)))
        text = " ".join(paragraphs[(i + k) % len(paragraphs)] for k in range(12))
        words, column, y = text.split(), 0, top
        while words and column < columns:
            taken: list[str] = []
            while words and len(" ".join([*taken, words[0]])) <= chars:
                taken.append(words.pop(0))
            if not taken:
                taken.append(words.pop(0)[:chars])
            x = margin + column * (column_w + margin // 2)
            draw.text((x, y), " ".join(taken), fill=(30, 30, 30), font=body)
            y += line
            if y > height - margin:
                column, y = column + 1, top
        jpeg = i % 3 == 2
        path = directory / f"page-{seed}-{i:03d}.{'jpg' if jpeg else 'png'}"
        page.save(path, format="JPEG" if jpeg else "PNG", **({"quality": 85} if jpeg else {}))
        files.append(path)
    return files
