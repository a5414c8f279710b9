"""What preparing images costs the client: the encoding, parallel preparation, and the cache.

CPU only, no server. On rendered pages (800x1000 and 1240x1754, text in columns and a figure,
PNG and JPEG like PDF renders and scans) and photos (matplotlib's sample data), in one run:

1. the lossless encodings vLLM's image loader accepts (PNG at zlib levels 0, 1, 3, 6; BMP) of
   the official pixels: encode time (paid once per image with the cache), size (sent, and
   base64-decoded and decoded by the server, on every call), the server-side decode time, and
   a check that the decoded pixels are exactly the prepared ones;
2. one call's images prepared in this process by 1, 2 and 4 threads (the preparation before the
   sandbox: Pillow releases the GIL while it decodes, resizes and encodes), wall and CPU time;
   and the library's own sync and async paths (image files in its sandbox of
   ``DECODE_WORKERS`` worker processes);
3. the sandbox's cost per page: each image prepared alone, in this thread (decode, RGB, resize,
   PNG, base64, hash: the old path) against in a warm sandbox worker (the same work there, plus
   the pipe transfers of the file and the PNG), and what starting a worker costs once;
4. a second call over the same pages with a :class:`PreparedImageCache` (bytes sources, and
   PIL images, which are hashed by their pixels), against the first.

Medians of interleaved repetitions (CPU seconds from ``time.process_time``, plus the sandbox
workers' own CPU time read from ``/proc``: the machine is shared, wall times are noisy).

    python benchmarks/image_prep.py [--quick] [--reps N]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from _common import REPO, Result, cli, common_parser, corpus, fmt, header, md_table
from _images import page_files, sources

from qwen3_vllm_rerank.client import _inputs
from qwen3_vllm_rerank.images import PreparedImageCache
from qwen3_vllm_rerank.images._calls import DECODE_WORKERS
from qwen3_vllm_rerank.images._geometry import smart_resize
from qwen3_vllm_rerank.images._image_cache import PNG_COMPRESS_LEVEL
from qwen3_vllm_rerank.images._preparing import Settings, _finish_image, finish, open_checked
from qwen3_vllm_rerank.images._sandbox import sandbox, shutdown_sandbox

ENCODINGS: dict[str, dict[str, Any]] = {
    "PNG level 0 (stored)": {"format": "PNG", "compress_level": 0},
    "PNG level 1": {"format": "PNG", "compress_level": 1},
    "PNG level 3": {"format": "PNG", "compress_level": 3},
    "PNG level 6 (Pillow's default)": {"format": "PNG", "compress_level": 6},
    "BMP (raw)": {"format": "BMP"},
}


def _images(directory: Path, n_pages: int) -> list[tuple[str, bytes]]:
    """``(kind, file bytes)``: rendered pages, then two photo-like images at page size."""
    from PIL import Image

    pages = page_files(n_pages, 7, directory, corpus(60))
    out = [
        (f"page {Image.open(p).size[0]}x{Image.open(p).size[1]} {p.suffix[1:]}", p.read_bytes())
        for p in pages
    ]
    for name, image, _ in sources():
        if name in ("photo", "elevation"):
            big = image.convert("RGB").resize((1240, 1400), Image.Resampling.BICUBIC)
            buffer = io.BytesIO()
            big.save(buffer, format="JPEG", quality=90)
            out.append((f"photo {name} 1240x1400 jpg", buffer.getvalue()))
    return out


def _official(data: bytes) -> Any:
    from PIL import Image

    image = Image.open(io.BytesIO(data)).convert("RGB")
    height, width = smart_resize(image.height, image.width)
    return image.resize((width, height), Image.Resampling.BICUBIC)


def _workers_cpu() -> float:
    """CPU seconds the sandbox's live workers have used (Linux ``/proc``; 0 elsewhere)."""
    total = 0.0
    for pid in sandbox().pids():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _all_cpu() -> float:
    return time.process_time() + _workers_cpu()


def _cpu(work: Callable[[], object]) -> float:
    start = _all_cpu()
    work()
    return _all_cpu() - start


def _in_thread(data: bytes) -> object:
    """One image file prepared in the calling thread: the preparation before the sandbox."""
    opened = open_checked(data, "image", "image", Settings())
    return _finish_image(replace(opened, data=None), None)


def _in_sandbox(data: bytes) -> object:
    return finish(open_checked(data, "image", "image", Settings()))


def _encodings(images: list[tuple[str, bytes]], reps: int) -> tuple[str, dict[str, Any]]:
    from PIL import Image

    pixels = [_official(data) for _, data in images]
    data: dict[str, Any] = {}
    rows = []
    for name, options in ENCODINGS.items():
        encode, decode, size, exact = [], [], 0, True
        for _ in range(reps):
            for image in pixels:
                buffer = io.BytesIO()
                encode.append(
                    _cpu(lambda image=image, buffer=buffer, options=options: image.save(buffer, **options))
                )
                blob = buffer.getvalue()
                url = base64.b64encode(blob)

                def server(url: bytes = url) -> Any:
                    decoded = Image.open(io.BytesIO(base64.b64decode(url)))
                    decoded.load()
                    return decoded

                decode.append(_cpu(server))
                exact = exact and server().convert("RGB").tobytes() == image.tobytes()
                size += len(url)
        per = len(pixels)
        data[name] = {
            "encode_ms_per_image": 1000 * sum(encode) / reps / per,
            "server_decode_ms_per_image": 1000 * sum(decode) / reps / per,
            "data_url_kb_per_image": size / reps / per / 1000,
            "exact": exact,
        }
        row = data[name]
        rows.append(
            [
                name
                + (
                    " **(chosen)**"
                    if options == {"format": "PNG", "compress_level": PNG_COMPRESS_LEVEL}
                    else ""
                ),
                fmt(row["encode_ms_per_image"]),
                fmt(row["data_url_kb_per_image"]),
                fmt(row["server_decode_ms_per_image"]),
                "yes" if exact else "**NO**",
            ]
        )
    table = md_table(
        [
            "encoding",
            "encode CPU ms / image (once, cached)",
            "data URL kB / image (every call)",
            "server base64 + decode CPU ms / image (every call)",
            "decoded == prepared",
        ],
        rows,
    )
    return table, data


def _parallel(images: list[tuple[str, bytes]], reps: int) -> tuple[str, dict[str, Any]]:
    datas = [data for _, data in images]

    def threads(n: int) -> Callable[[], object]:
        def run() -> object:
            with ThreadPoolExecutor(n) as pool:
                return list(pool.map(_in_thread, datas))

        return run

    request = _inputs.score_request("q", datas, None)
    cases: dict[str, Callable[[], object]] = {
        "in this process, 1 thread (one image at a time)": threads(1),
        "in this process, 2 threads": threads(2),
        "in this process, 4 threads": threads(4),
        f"library sync path (sandbox of {DECODE_WORKERS})": lambda: _inputs.prepare(request, None),
        f"library async path (sandbox of {DECODE_WORKERS})": lambda: asyncio.run(
            _inputs.aprepare(request, None)
        ),
    }
    wall: dict[str, list[float]] = {name: [] for name in cases}
    cpu: dict[str, list[float]] = {name: [] for name in cases}
    names = list(cases)
    for rep in range(-1, reps):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            start, start_cpu = time.perf_counter(), _all_cpu()
            cases[name]()
            if rep >= 0:
                wall[name].append(time.perf_counter() - start)
                cpu[name].append(_all_cpu() - start_cpu)
    base = statistics.median(wall[names[0]])
    data = {
        name: {"wall_s": statistics.median(wall[name]), "cpu_s": statistics.median(cpu[name])}
        for name in names
    }
    rows = [
        [
            name,
            fmt(data[name]["wall_s"] * 1000),
            fmt(data[name]["cpu_s"] * 1000),
            fmt(data[name]["cpu_s"] / data[name]["wall_s"], 2),
            fmt(base / data[name]["wall_s"], 2),
        ]
        for name in names
    ]
    table = md_table(
        [
            f"preparing one call's {len(datas)} images",
            "wall ms",
            "CPU ms",
            "cores busy (CPU / wall)",
            "speed-up",
        ],
        rows,
    )
    return table, data


def _sandbox(images: list[tuple[str, bytes]], reps: int) -> tuple[str, dict[str, Any]]:
    """Each image alone, in this thread vs in a warm sandbox worker; and a worker's start."""
    starts = []
    for _ in range(reps):
        shutdown_sandbox()
        start = time.perf_counter()
        _in_sandbox(images[0][1])
        starts.append(time.perf_counter() - start)
    _in_sandbox(images[0][1])  # warm
    kinds = sorted({kind for kind, _ in images})
    rows, data = [], {}
    totals = {"in_thread": 0.0, "sandbox": 0.0}
    for kind in kinds:
        datas = [d for k, d in images if k == kind]
        walls: dict[str, list[float]] = {"in_thread": [], "sandbox": []}
        for rep in range(reps):
            order = [("in_thread", _in_thread), ("sandbox", _in_sandbox)]
            for name, work in order if rep % 2 == 0 else order[::-1]:
                for blob in datas:
                    start = time.perf_counter()
                    work(blob)
                    walls[name].append(time.perf_counter() - start)
        same = all(_in_thread(blob) == _in_sandbox(blob) for blob in datas)
        one, two = statistics.median(walls["in_thread"]), statistics.median(walls["sandbox"])
        totals["in_thread"] += one * len(datas)
        totals["sandbox"] += two * len(datas)
        data[kind] = {"in_thread_ms": one * 1000, "sandbox_ms": two * 1000, "ratio": two / one, "same": same}
        rows.append(
            [
                kind,
                fmt(one * 1000),
                fmt(two * 1000),
                fmt((two - one) * 1000),
                fmt(two / one, 3),
                "yes" if same else "**NO**",
            ]
        )
    ratio = totals["sandbox"] / totals["in_thread"]
    data["all images"] = {"ratio": ratio, "worker_start_ms": statistics.median(starts) * 1000}
    rows.append(
        [
            "**all images**",
            fmt(totals["in_thread"] * 1000),
            fmt(totals["sandbox"] * 1000),
            fmt((totals["sandbox"] - totals["in_thread"]) * 1000),
            f"**{fmt(ratio, 3)}**",
            "",
        ]
    )
    table = md_table(
        [
            "image (each alone)",
            "in this thread, wall ms",
            "in a warm sandbox worker, wall ms",
            "sandbox cost, ms",
            "sandbox / in thread",
            "same PreparedImage",
        ],
        rows,
    )
    table += (
        f"\nStarting a worker (once per worker; the first image of a process waits for it): "
        f"{fmt(statistics.median(starts) * 1000)} ms, first image included.\n"
    )
    return table, data


def _cache(images: list[tuple[str, bytes]], reps: int) -> tuple[str, dict[str, Any]]:
    from PIL import Image

    datas = [data for _, data in images]
    pils = [Image.open(io.BytesIO(data)).convert("RGB") for data in datas]
    rows, data = [], {}
    for kind, documents in (("image file bytes", datas), ("PIL images (keyed by their pixels)", pils)):
        first, second = [], []
        for _ in range(reps):
            cache = PreparedImageCache()
            request = _inputs.score_request("q", documents, None)
            first.append(_cpu(lambda request=request, cache=cache: _inputs.prepare(request, None, cache)))
            second.append(_cpu(lambda request=request, cache=cache: _inputs.prepare(request, None, cache)))
            info = cache.info()
        one, two = statistics.median(first), statistics.median(second)
        data[kind] = {"first_cpu_s": one, "second_cpu_s": two, "hits": info.hits, "bytes": info.bytes}
        rows.append(
            [
                kind,
                fmt(one * 1000),
                fmt(two * 1000),
                fmt(one / two, 3),
                f"{info.hits} of {len(documents)}",
                fmt(info.bytes / 1e6),
            ]
        )
    table = md_table(["source", "first call CPU ms", "second call CPU ms", "ratio", "hits", "cache MB"], rows)
    return table, data


def run(args: argparse.Namespace) -> Result:
    reps = args.reps or (1 if args.quick else 3)
    with tempfile.TemporaryDirectory() as tmp:
        images = _images(Path(tmp), 4 if args.quick else 8)
    kinds = sorted({kind for kind, _ in images})
    report = header(
        "Preparing images: encoding, parallelism, cache (CPU only)",
        sys.executable,
        {"images": f"{len(images)} ({', '.join(kinds)})", "repetitions": reps},
    )
    data: dict[str, Any] = {}
    table, data["encodings"] = _encodings(images, reps)
    report += "### Lossless encodings of the official pixels\n\n" + table
    report += (
        "\nWith the cache, an image is encoded once but sent, base64-decoded and decoded by the server "
        "on every call: level 0 and BMP save encode time once and cost size on every call. Every "
        "encoding decodes to exactly the prepared pixels.\n\n"
    )
    table, data["parallel"] = _parallel(images, reps)
    report += "### One call's images, prepared in parallel\n\n" + table
    report += (
        "\nThe speed-up is bounded by the cores this shared machine gives the process at the time "
        "(see the load average above); 'cores busy' is the CPU time over the wall time.\n\n"
    )
    table, data["sandbox"] = _sandbox(images, reps)
    report += "### The decoding sandbox's cost per page\n\n" + table
    report += (
        "\nThe sandbox prepares the same pixels (scores do not change); what it adds is two pipe "
        "transfers (the file in, the PNG out) and the hand-over between threads.\n\n"
    )
    table, data["cache"] = _cache(images, reps)
    report += "### A second call over the same images, with a PreparedImageCache\n\n" + table
    chosen = data["encodings"][f"PNG level {PNG_COMPRESS_LEVEL}"]
    headlines = [
        (
            "prepared PNG (level chosen by measurement)",
            f"level {PNG_COMPRESS_LEVEL}: {fmt(chosen['encode_ms_per_image'])} ms, "
            f"{fmt(chosen['data_url_kb_per_image'])} kB / image",
            "exact pixels",
        ),
        (
            "sandbox / in-thread preparation, per image (wall)",
            fmt(data["sandbox"]["all images"]["ratio"], 3),
            f"worker start {fmt(data['sandbox']['all images']['worker_start_ms'])} ms once",
        ),
        (
            "second call over the same pages / first (CPU)",
            fmt(
                data["cache"]["image file bytes"]["second_cpu_s"]
                / data["cache"]["image file bytes"]["first_cpu_s"],
                3,
            ),
            "no decode, resize or encode",
        ),
    ]
    return Result("image_prep", report, data, headlines)


def main(argv: list[str] | None = None) -> None:
    result = cli(run, common_parser(__doc__.splitlines()[0] if __doc__ else ""), argv)
    result.save(REPO / "benchmarks" / "results")


if __name__ == "__main__":
    main()
