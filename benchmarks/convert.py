"""Streaming conversion vs the two-model recipe: wall time and peak memory, each in its own process.

The recipe that circulates for Qwen3-Reranker loads the CausalLM and a
SequenceClassification model with transformers, copies ``W[yes] - W[no]`` into the
classifier and saves everything again. ``convert_checkpoint`` streams tensors instead.
Each method runs as a separate process (fresh interpreter, imports included); its peak
RSS is its own VmHWM, read at its end. Runs are interleaved
round-robin with the order rotated; medians are reported.

    .venv/bin/python benchmarks/convert.py            # ~5 minutes on 2 cores
    .venv/bin/python benchmarks/convert.py --quick    # one repetition
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import cache_dir, common_parser, fmt, header, md_table, median, server_python, setup_logging

SHARD_SIZE = "500MB"


# --------------------------------------------------------------------------- the measured work


def recipe(src: str, dst: str) -> None:
    """The widely circulated two-model conversion (as in vLLM's convert_model_to_seq_cls.py)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(src)
    causal_lm = AutoModelForCausalLM.from_pretrained(src)
    seq_cls = AutoModelForSequenceClassification.from_pretrained(
        src, num_labels=1, ignore_mismatched_sizes=True
    )
    weights = causal_lm.lm_head.weight
    yes, no = tokenizer.convert_tokens_to_ids("yes"), tokenizer.convert_tokens_to_ids("no")
    with torch.no_grad():
        seq_cls.score.weight.copy_((weights[yes].float() - weights[no].float()).unsqueeze(0))
    seq_cls.config.pad_token_id = tokenizer.pad_token_id
    seq_cls.save_pretrained(dst)
    tokenizer.save_pretrained(dst)


def streaming(src: str, dst: str, *, verify: bool, link: bool = False) -> None:
    from qwen3_vllm_rerank.convert import convert_checkpoint

    convert_checkpoint(src, dst, verify=verify, link=link, progress=False)


METHODS: dict[str, Callable[[str, str], None]] = {
    "two-model recipe": recipe,
    "convert_checkpoint": lambda s, d: streaming(s, d, verify=False),
    "convert_checkpoint --link": lambda s, d: streaming(s, d, verify=False, link=True),
    "convert_checkpoint + verify": lambda s, d: streaming(s, d, verify=True),
}


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM) since it exec'd.

    Not ``ru_maxrss`` from ``wait4``: Linux carries the forking parent's high-water mark
    across fork + exec into the child's ``ru_maxrss``, so every child would report at least
    the parent's peak.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise SystemExit("no VmHWM in /proc/self/status: this benchmark needs Linux")


def child(method: str, src: str, dst: str) -> None:
    start = time.perf_counter()
    METHODS[method](src, dst)
    print(json.dumps({"call_seconds": time.perf_counter() - start, "peak_rss_mb": peak_rss_mb()}))


# --------------------------------------------------------------------------- measuring


@dataclass
class Run:
    wall: float
    call: float
    peak_rss_mb: float


def measure(method: str, src: Path, workdir: Path) -> Run:
    """Run ``method`` in a fresh process; its wall time, in-call time and peak RSS."""
    dst = workdir / "out"
    shutil.rmtree(dst, ignore_errors=True)
    out, err = workdir / "stdout", workdir / "stderr"
    with out.open("w") as stdout, err.open("w") as stderr:
        start = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, __file__, "--child", method, str(src), str(dst)], stdout=stdout, stderr=stderr
        )
        code = process.wait()
        wall = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"{method} failed on {src}:\n{err.read_text()[-3000:]}")
    report = json.loads(out.read_text().strip().splitlines()[-1])
    shutil.rmtree(dst, ignore_errors=True)
    return Run(wall, report["call_seconds"], report["peak_rss_mb"])


def fixture(name: str, *, tied: bool, layers: int) -> Path:
    from qwen3_vllm_rerank.testing import QWEN3_0_6B_SHAPE, make_fixture_checkpoint

    path = cache_dir() / f"convert-{name}"
    if not (path / ".complete").exists():
        shutil.rmtree(path, ignore_errors=True)
        shape = dataclasses.replace(QWEN3_0_6B_SHAPE, num_hidden_layers=layers)
        make_fixture_checkpoint(path, shape=shape, dtype="bfloat16", tied=tied, max_shard_size=SHARD_SIZE)
        (path / ".complete").write_text("")
    return path


def describe(path: Path) -> str:
    config = json.loads((path / "config.json").read_text())
    shards = sorted(path.glob("*.safetensors"))
    size = sum(p.stat().st_size for p in shards) / 1e9
    tied = "tied" if config["tie_word_embeddings"] else "untied"
    return f"{config['num_hidden_layers']} layers, {tied}, bf16, {len(shards)} shards, {size:.2f} GB"


def main() -> None:
    parser = common_parser(__doc__ or "")
    parser.add_argument("--child", nargs=3, metavar=("METHOD", "SRC", "DST"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    setup_logging(args.verbose)
    reps = args.reps or (1 if args.quick else 3)
    workloads = {
        "0.6B-shaped, tied": fixture("0.6b-tied-bf16", tied=True, layers=28),
        "0.6B-shaped 2x layers, untied": fixture("0.6b-56-layers-untied-bf16", tied=False, layers=56),
    }
    methods = {
        "0.6B-shaped, tied": list(METHODS),
        "0.6B-shaped 2x layers, untied": [
            "two-model recipe",
            "convert_checkpoint",
            "convert_checkpoint --link",
        ],
    }
    rows = []
    data: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        workdir = Path(tmp)
        for workload, src in workloads.items():
            runs: dict[str, list[Run]] = {m: [] for m in methods[workload]}
            names = list(runs)
            for rep in range(reps):
                shift = rep % len(names)
                for method in names[shift:] + names[:shift]:
                    runs[method].append(measure(method, src, workdir))
            base = runs["two-model recipe"]
            base_wall, base_rss = median([r.wall for r in base]), median([r.peak_rss_mb for r in base])
            data[workload] = {}
            for method in names:
                wall = median([r.wall for r in runs[method]])
                call = median([r.call for r in runs[method]])
                rss = median([r.peak_rss_mb for r in runs[method]])
                data[workload][method] = {"wall_s": wall, "call_s": call, "peak_rss_mb": rss}
                rows.append(
                    [
                        workload,
                        method,
                        fmt(wall),
                        fmt(call),
                        f"{rss:,.0f}",
                        f"{wall / base_wall:.2f}x",
                        f"{rss / base_rss:.3f}x",
                    ]
                )
    workload_text = {name: describe(path) for name, path in workloads.items()}
    workload_text["repetitions"] = f"{reps} per method, interleaved, medians"
    report = header(
        "Checkpoint conversion: streaming vs the two-model recipe", server_python(None), workload_text
    )
    report += md_table(
        ["workload", "method", "wall (s)", "in-call (s)", "peak RSS (MB)", "time vs recipe", "RSS vs recipe"],
        rows,
    )
    report += (
        "\nwall = the whole process (interpreter start and imports included); in-call = the conversion "
        "call alone. Peak RSS = each process's VmHWM. Goals: peak RSS ≤ 0.2x and wall ≤ 0.25x "
        "the recipe's (without verify, which loads the models one after the other in float32).\n"
    )
    print(report)


if __name__ == "__main__":
    main()
