"""Streaming conversion vs the two-model recipe: wall time and peak memory, each in its own process.

The recipe that circulates for Qwen3-Reranker loads the CausalLM and a SequenceClassification
model with transformers, copies ``W[yes] - W[no]`` into the classifier and saves everything
again. ``convert_checkpoint`` streams tensors instead, and its default call also verifies the
result by reading it back against the source (streaming too). Each method runs as a separate
process (fresh interpreter, imports included); its peak RSS is its own VmHWM, read at its end.
Runs are interleaved round-robin with the order rotated, each after a ``sync`` (so that one run's
written gigabytes do not throttle the next one's writes); medians are reported. The forward-pass
check (``verify="model"``) is measured once, for its documented cost.

    .venv/bin/python benchmarks/convert.py            # ~10 minutes on 2 cores; writes results/convert.*
    .venv/bin/python benchmarks/convert.py --quick    # one repetition, no forward-pass check
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Result, cache_dir, cli, common_parser, fmt, header, md_table, median, server_python

RESULTS = Path(__file__).resolve().parent / "results"
SHARD_SIZE = "500MB"
RECIPE = "two-model recipe"
DEFAULT = "convert_checkpoint(src, dst)"


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


def streaming(src: str, dst: str, **kwargs: object) -> None:
    from qwen3_vllm_rerank.convert import convert_checkpoint

    convert_checkpoint(src, dst, progress=False, **kwargs)  # type: ignore[arg-type]


METHODS: dict[str, Callable[[str, str], None]] = {
    RECIPE: recipe,
    DEFAULT: streaming,
    "... link=True": lambda s, d: streaming(s, d, link=True),
    "... verify=False": lambda s, d: streaming(s, d, verify=False),
    '... verify="model"': lambda s, d: streaming(s, d, verify="model"),
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
    os.sync()  # the previous run's written gigabytes must not throttle this run's writes
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


def fixture() -> Path:
    """A random Qwen3-Reranker-0.6B-shaped checkpoint (tied, bf16, 500 MB shards), built once."""
    from qwen3_vllm_rerank.testing import QWEN3_0_6B_SHAPE, make_fixture_checkpoint

    path = cache_dir() / "convert-0.6b-tied-bf16"
    if not (path / ".complete").exists():
        shutil.rmtree(path, ignore_errors=True)
        make_fixture_checkpoint(
            path, shape=QWEN3_0_6B_SHAPE, dtype="bfloat16", tied=True, max_shard_size=SHARD_SIZE
        )
        (path / ".complete").write_text("")
    return path


def doubled(src: Path) -> Path:
    """``src`` with every layer twice and an untied ``lm_head`` in a shard of its own, built shard by
    shard (about 1 GB of memory; building it with transformers would take about 7 GB)."""
    from safetensors.torch import load_file, save_file

    path = cache_dir() / "convert-0.6b-2x-layers-untied-bf16"
    if (path / ".complete").exists():
        return path
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    config = json.loads((src / "config.json").read_text())
    layers = config["num_hidden_layers"]
    shards = sorted({*json.loads((src / "model.safetensors.index.json").read_text())["weight_map"].values()})
    names = [f"model-{i:05d}-of-{2 * len(shards) + 1:05d}.safetensors" for i in range(1, 2 * len(shards) + 2)]
    weight_map: dict[str, str] = {}
    total_size = 0
    for copy in (0, 1):
        for shard, name in zip(shards, names[copy * len(shards) :], strict=False):
            tensors = load_file(src / shard)
            if copy == 0 and "model.embed_tokens.weight" in tensors:
                head = {"lm_head.weight": tensors["model.embed_tokens.weight"].clone()}
                save_file(head, path / names[-1], metadata={"format": "pt"})
                weight_map["lm_head.weight"] = names[-1]
                total_size += head["lm_head.weight"].nbytes
            out = {}
            for key, tensor in tensors.items():
                if key.startswith("model.layers."):
                    layer, rest = key.removeprefix("model.layers.").split(".", 1)
                    out[f"model.layers.{int(layer) + copy * layers}.{rest}"] = tensor
                elif copy == 0:
                    out[key] = tensor
            save_file(out, path / name, metadata={"format": "pt"})
            weight_map |= dict.fromkeys(out, name)
            total_size += sum(t.nbytes for t in out.values())
    index = {"metadata": {"total_size": total_size}, "weight_map": dict(sorted(weight_map.items()))}
    (path / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    config.update(num_hidden_layers=2 * layers, max_window_layers=2 * layers, tie_word_embeddings=False)
    config["layer_types"] = config["layer_types"] * 2
    (path / "config.json").write_text(json.dumps(config, indent=2))
    for other in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        shutil.copyfile(src / other, path / other)
    (path / ".complete").write_text("")
    return path


def describe(path: Path) -> str:
    config = json.loads((path / "config.json").read_text())
    shards = sorted(path.glob("*.safetensors"))
    size = sum(p.stat().st_size for p in shards) / 1e9
    tied = "tied" if config["tie_word_embeddings"] else "untied"
    return f"{config['num_hidden_layers']} layers, {tied}, bf16, {len(shards)} shards, {size:.2f} GB"


def run(args: argparse.Namespace) -> Result:
    reps = args.reps or (1 if args.quick else 3)
    tied = fixture()
    workloads = {"0.6B-shaped, tied": tied, "0.6B-shaped 2x layers, untied": doubled(tied)}
    interleaved = [RECIPE, DEFAULT, "... link=True", "... verify=False"]
    once = [] if args.quick else ['... verify="model"']  # ~1 min and ~3 GB a run: measured once
    rows, data = [], {}
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        workdir = Path(tmp)
        for workload, src in workloads.items():
            runs: dict[str, list[Run]] = {m: [] for m in interleaved}
            for rep in range(reps):
                shift = rep % len(interleaved)
                for method in interleaved[shift:] + interleaved[:shift]:
                    runs[method].append(measure(method, src, workdir))
            for method in once if workload == "0.6B-shaped, tied" else []:
                runs[method] = [measure(method, src, workdir)]
            base_wall = median([r.wall for r in runs[RECIPE]])
            base_rss = median([r.peak_rss_mb for r in runs[RECIPE]])
            data[workload] = {}
            for method, measured in runs.items():
                wall, call = median([r.wall for r in measured]), median([r.call for r in measured])
                rss = median([r.peak_rss_mb for r in measured])
                data[workload][method] = {
                    "wall_s": wall,
                    "call_s": call,
                    "peak_rss_mb": rss,
                    "runs": len(measured),
                }
                ratios = [f"{wall / base_wall:.2f}x", f"{rss / base_rss:.2f}x"]
                rows.append([workload, method, fmt(wall), fmt(call), f"{rss:,.0f}", *ratios])
    workload_text = {name: describe(path) for name, path in workloads.items()}
    workload_text["repetitions"] = f'{reps} per method, interleaved, medians; verify="model" once'
    report = header(
        "Checkpoint conversion: streaming vs the two-model recipe", server_python(None), workload_text
    )
    report += md_table(
        ["workload", "method", "wall (s)", "in-call (s)", "peak RSS (MB)", "time vs recipe", "RSS vs recipe"],
        rows,
    )
    report += (
        "\nwall = the whole process (interpreter start and imports included); in-call = the conversion call "
        "alone. Peak RSS = each process's VmHWM. The default call verifies by reading the result back "
        'against the source (streaming); verify="model" also runs both models with transformers in float32. '
        "Goals for the default call: peak RSS <= 0.2x and wall <= 0.25x the recipe's.\n"
    )
    default = data["0.6B-shaped, tied"][DEFAULT]
    recipe_tied = data["0.6B-shaped, tied"][RECIPE]
    headlines = [
        (
            "convert_checkpoint(src, dst) wall / two-model recipe",
            fmt(default["wall_s"] / recipe_tied["wall_s"]),
            "<= 0.25",
        ),
        (
            "convert_checkpoint(src, dst) peak RSS / two-model recipe",
            fmt(default["peak_rss_mb"] / recipe_tied["peak_rss_mb"]),
            "<= 0.2",
        ),
    ]
    return Result("convert", report, data, headlines)


def parser() -> argparse.ArgumentParser:
    p = common_parser(__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("--child", nargs=3, metavar=("METHOD", "SRC", "DST"), help=argparse.SUPPRESS)
    p.add_argument("--no-save", action="store_true", help=f"do not write {RESULTS.name}/convert.md and .json")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.child:
        child(*args.child)
        return
    result = cli(run, parser(), argv)
    if not args.no_save:
        result.save(RESULTS)


if __name__ == "__main__":
    main()
