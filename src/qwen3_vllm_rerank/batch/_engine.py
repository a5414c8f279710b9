"""The engine mode's vLLM stage: the flags :func:`~qwen3_vllm_rerank.serve.plan_launch` chooses for the
checkpoint and this machine, read into engine arguments by vLLM's own parser, and the four settings Ray's
stage needs on top (measured with Ray 2.60 and vLLM 0.32):

* ``placement_group_config={"bundles": [{"CPU": 1}]}`` on the CPU build: the stage asks for a GPU by
  default and waits forever for one;
* ``log_engine_metrics=False``: vLLM's ``RayPrometheusMetric`` raises ``ImportError`` under Ray 2.60;
* on the CPU build a ``gpu_memory_utilization`` the host can give (it is a share of the RAM there, 0.92
  by default, which vLLM refuses when less is free): what the weights and the plan's KV cache need;
* the plan's environment (``VLLM_CPU_KVCACHE_SPACE`` and the cores) in the workers' ``runtime_env``.

An original checkpoint is served with the plan's ``--hf-overrides``, a converted one without: the plan
never combines them. The driver plans for its own machine: on a cluster whose workers differ, pass
``engine_kwargs`` to correct it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .._checkpoints import Family
from ..errors import InvalidInput
from ..serve import LaunchPlan, plan_launch, read_checkpoint_config, read_cpu_info
from ..serve._install import probe_install
from ..serve._secrets import lift_secrets
from ..serve._server import checkpoint_weight_bytes

__all__ = ["EngineSetup", "engine_kwargs_of", "plan_engine"]

_GIB = 1024**3
#: Room for activations and the runtime beside the weights and the KV cache on the CPU build.
_CPU_HEADROOM_BYTES = 2 * _GIB


@dataclass(frozen=True, slots=True)
class EngineSetup:
    """What every vLLM stage worker is started with, and why (``plan.describe()``)."""

    plan: LaunchPlan
    engine_kwargs: dict[str, Any]
    env: dict[str, str]
    cpu: bool
    placement_group_config: dict[str, Any] | None

    @property
    def family(self) -> Family:
        return self.plan.family

    @property
    def max_model_len(self) -> int | None:
        return self.plan.max_model_len


def engine_kwargs_of(model: str, args: Sequence[str]) -> dict[str, Any]:
    """vLLM's engine arguments for ``--model model *args``, as vLLM's own parser reads them (every
    spelling it accepts), keeping those that differ from vLLM's defaults."""
    from vllm.engine.arg_utils import EngineArgs
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = EngineArgs.add_cli_args(
        FlexibleArgumentParser(prog="qwen3-vllm-rerank batch", exit_on_error=False)
    )
    try:
        namespace = parser.parse_args(["--model", model, *args])
    except (SystemExit, ValueError, TypeError) as exc:  # argparse exits on an unknown flag
        raise InvalidInput(
            f"vLLM's engine does not take these arguments {list(args)} ({exc}); pass only engine flags "
            "(server flags such as --host, --port or --chat-template do not apply to a batch)"
        ) from exc
    fields = {field.name for field in dataclasses.fields(EngineArgs)}
    return {
        name: value
        for name, value in vars(namespace).items()
        if name in fields and name != "model" and value != parser.get_default(name)
    }


def _cpu_memory_share(plan_env: Mapping[str, str], weights: int | None) -> float:
    """``gpu_memory_utilization`` on the CPU build: the share of this host's RAM the engine needs."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    kv = float(plan_env.get("VLLM_CPU_KVCACHE_SPACE") or os.environ.get("VLLM_CPU_KVCACHE_SPACE") or 4)
    needed = kv * _GIB + (weights or 2 * _GIB) + _CPU_HEADROOM_BYTES
    return min(0.9, max(0.05, math.ceil(100 * needed / total) / 100))


def plan_engine(
    model: str,
    *,
    extra_args: Sequence[str] = (),
    max_model_len: int | None = None,
    gpu_memory: float | None = None,
    engine_kwargs: Mapping[str, Any] | None = None,
) -> EngineSetup:
    """Plan the stage's engine for ``model`` (a checkpoint directory or hub id) on this machine."""
    config = read_checkpoint_config(model)
    lifted = lift_secrets(extra_args)
    if lifted.env:
        raise InvalidInput(
            "do not pass secrets such as --hf-token in the batch's vLLM arguments: engine arguments travel "
            "to every worker in the clear; set HF_TOKEN in the workers' environment instead"
        )
    install = probe_install(sys.executable, tuple(sorted(os.environ.items())))
    plan = plan_launch(
        config,
        cpu=install.cpu,
        extra_args=extra_args,
        max_model_len=max_model_len,
        cpu_info=read_cpu_info() if install.cpu else None,
        gpu_memory=gpu_memory,
        gpu_total_bytes=install.gpu_total_bytes,
        weights_bytes=None if install.cpu else checkpoint_weight_bytes(model),
    )
    if plan.chat_template is not None:
        raise InvalidInput(
            "--chat-template does not apply to a batch: the prompt is rendered exactly as the client renders "
            "it. Drop the flag"
        )
    kwargs = engine_kwargs_of(model, [*plan.args, *lifted.args])
    placement: dict[str, Any] | None = None
    if install.cpu:
        kwargs.setdefault(
            "gpu_memory_utilization", _cpu_memory_share(plan.env, checkpoint_weight_bytes(model))
        )
        placement = {"bundles": [{"CPU": 1}]}
    kwargs.update(engine_kwargs or {})
    return EngineSetup(plan, kwargs, dict(plan.env), install.cpu, placement)
