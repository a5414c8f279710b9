"""vLLM's own argument parser, from each server virtualenv the suite runs (the newest vLLM, 0.32,
and the oldest, 0.27), accepts every argument list the launch plan produces for a GPU, and reads the
memory flags as the plan meant them (bytes, utilization, length)."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from qwen3_vllm_rerank.serve import plan_launch
from qwen3_vllm_rerank.serve._vllm_args import human_int

from .published_configs import PUBLISHED_CONFIGS
from .test_vllm_parser import PARSE

pytestmark = pytest.mark.heavy  # imports vLLM in a subprocess (~25 s per version)

GIB = 1024**3
#: Ways to plan a GPU launch: the defaults, a cap, a known device, a cap that shortens the length,
#: tensor parallelism, the user's own KV size or utilization.
VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "a cap 2 GiB under the plan": {"gpu_memory": -2},  # relative to the shape's own total
    "80 GiB device": {"gpu_total_bytes": 80 * GIB},
    "tight cap": {"gpu_memory": 5.2},
    "tp=2": {"extra_args": ["--tensor-parallel-size", "2"]},
    "user kv": {"extra_args": ["--kv-cache-memory-bytes", "2G"], "gpu_total_bytes": 24 * GIB},
    "user utilization": {"extra_args": ["--gpu-memory-utilization", "0.4"]},
}


def _plans(cache_manager: bool = True) -> list[tuple[str, list[str], int | None, str | None, str | None]]:
    """(name, full argument list, max_model_len, KV bytes flag, utilization flag) per shape and variant,
    for a vLLM that takes ``--ec-manager-config`` (``cache_manager``) or not."""
    plans = []
    for shape, config in sorted(PUBLISHED_CONFIGS.items()):
        for variant, options in VARIANTS.items():
            if variant == "tight cap" and shape != "0.6B":
                continue  # the 0.6B is the one a 5.2 GiB cap shortens; bigger ones it refuses
            extra = options.get("extra_args", [])
            if options.get("gpu_memory", 0) < 0:
                full = plan_launch(config, cpu=False, cache_manager=cache_manager)
                (note,) = [n for n in full.notes if n.startswith("GPU memory ")]
                options = {"gpu_memory": float(note.split()[2]) + options["gpu_memory"]}
            plan = plan_launch(config, cpu=False, cache_manager=cache_manager, **options)
            args = ["--model", "m", *plan.args, *extra]
            kv = (
                plan.args[plan.args.index("--kv-cache-memory-bytes") + 1]
                if "--kv-cache-memory-bytes" in plan.args
                else None
            )
            util = (
                plan.args[plan.args.index("--gpu-memory-utilization") + 1]
                if "--gpu-memory-utilization" in plan.args
                else None
            )
            plans.append((f"{shape} {variant}", args, plan.max_model_len, kv, util))
    return plans


@pytest.fixture(params=["newest", "oldest"])
def vllm_python(request: pytest.FixtureRequest, server_python: str) -> tuple[str, bool]:
    """The interpreter, and whether its vLLM takes ``--ec-manager-config`` (0.32 does, 0.27 does not)."""
    if request.param == "newest":
        return server_python, True
    return str(request.getfixturevalue("oldest_server_python")), False


def test_vllms_parser_accepts_every_gpu_plan(vllm_python: tuple[str, bool]) -> None:
    python, cache_manager = vllm_python
    plans = _plans(cache_manager)
    assert len(plans) > 30
    run = subprocess.run(
        [python, "-c", PARSE],
        input=json.dumps([args for _, args, _, _, _ in plans]),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    _, *results = json.loads(run.stdout.splitlines()[-1])["results"]
    for (name, args, length, kv, util), result in zip(plans, results, strict=True):
        assert "ns" in result, (name, args, result)
        ns = result["ns"]
        assert ns["runner"] == "pooling", name
        assert ns["max_model_len"] == length, name
        if kv is not None:
            assert ns["kv_cache_memory_bytes"] == human_int("", kv), name
        if util is not None:
            assert ns["gpu_memory_utilization"] == float(util), name
        if "user" not in name:
            assert kv is not None, name  # the plan sized both
            assert util is not None, name
