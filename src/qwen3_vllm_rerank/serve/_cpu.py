"""This machine's CPU and what vLLM's CPU build gets from it: which ``--dtype`` it computes fast, and
how many of its cores compute."""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CpuInfo", "DtypeChoice", "choose_dtype", "choose_reserved_cpus", "read_cpu_info"]

_HALF_DTYPES = ("bfloat16", "float16")


@dataclass(frozen=True, slots=True)
class CpuInfo:
    """The CPU's architecture and feature flags (``/proc/cpuinfo``: ``flags`` on x86, ``Features`` on ARM),
    and ``cores``: the CPUs this process may run on (its affinity), None when unknown."""

    machine: str
    flags: frozenset[str]
    cores: int | None = None
    #: The machine's memory in bytes (``/proc/meminfo``'s ``MemTotal``), None when unknown.
    memory_bytes: int | None = None

    def native(self, dtype: str) -> str | None:
        """The flag that says ``dtype`` runs natively here, or None when none does."""
        wanted = _NATIVE_FLAGS.get(self.family, {}).get(dtype, ())
        return next((flag for flag in wanted if flag in self.flags), None)

    @property
    def family(self) -> str:
        machine = self.machine.lower()
        if machine in ("x86_64", "amd64", "i686", "i386"):
            return "x86"
        if machine in ("aarch64", "arm64"):
            return "arm"
        return machine

    @property
    def known(self) -> bool:
        return self.family in _NATIVE_FLAGS and bool(self.flags)


#: Flags that mean a 16-bit float type is computed natively rather than emulated through float32.
_NATIVE_FLAGS: dict[str, dict[str, tuple[str, ...]]] = {
    "x86": {"bfloat16": ("avx512_bf16", "amx_bf16"), "float16": ("avx512_fp16", "amx_fp16")},
    "arm": {"bfloat16": ("bf16",), "float16": ("asimdhp",)},
}


def read_cpu_info(cpuinfo: Path = Path("/proc/cpuinfo"), meminfo: Path = Path("/proc/meminfo")) -> CpuInfo:
    """This machine's CPU flags (empty when they cannot be read: not Linux, or no flags line), cores
    and memory."""
    flags: frozenset[str] = frozenset()
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags = frozenset(value.split())
            break
    affinity = getattr(os, "sched_getaffinity", None)
    cores = len(affinity(0)) if affinity is not None else os.cpu_count()
    return CpuInfo(platform.machine(), flags, cores, _memory_bytes(meminfo))


def _memory_bytes(meminfo: Path) -> int | None:
    """``MemTotal`` of ``/proc/meminfo`` in bytes; None when it cannot be read."""
    try:
        text = meminfo.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        number, _, unit = value.strip().partition(" ")
        if key == "MemTotal" and number.isdigit():
            return int(number) * (1024 if unit.strip().lower() == "kb" else 1)
    return None


@dataclass(frozen=True, slots=True)
class DtypeChoice:
    """The ``--dtype`` to pass (None: leave it to vLLM) and why."""

    dtype: str | None
    reason: str
    flag: bool  # whether the plan adds --dtype itself


def choose_dtype(
    stored: str | None, *, cpu: bool, user_dtype: str | None, cpu_info: CpuInfo | None
) -> DtypeChoice:
    """The dtype the server should compute in, for a checkpoint stored in ``stored`` (None: unknown).

    The user's ``--dtype`` always wins. On GPUs vLLM's own choice stands. On the CPU build (as read in
    vLLM 0.32), vLLM resolves ``auto`` to the checkpoint's dtype whenever the platform lists it, and it lists
    bfloat16 on every x86 and Linux ARM CPU (``CpuPlatform.supported_dtypes``; only macOS ARM checks
    ``FEAT_BF16``). On a CPU without native bfloat16 (no ``avx512_bf16`` / ``amx_bf16`` on x86, no
    ``bf16`` on ARM) that is emulated and several times slower than float32
    (``benchmarks/vs_transformers.py`` measures it), so a 16-bit checkpoint is served in float32
    there, and in its own dtype where it is native. A
    float32 checkpoint stays float32 (vLLM would cast a float32 pooling model to float16, which
    most CPUs emulate too). When the CPU's flags cannot be read, vLLM decides.
    """
    if user_dtype is not None:
        if user_dtype == "auto":
            return DtypeChoice(None, "vLLM's choice (--dtype auto, yours)", flag=False)
        return DtypeChoice(user_dtype, "yours", flag=False)
    if not cpu:
        return DtypeChoice(None, "vLLM's choice", flag=False)
    if stored is None:
        return DtypeChoice(None, "vLLM's choice (config.json states no dtype)", flag=False)
    if stored not in _HALF_DTYPES:
        return DtypeChoice(stored, "the checkpoint's; vLLM's auto would cast it to float16", flag=True)
    if cpu_info is None or not cpu_info.known:
        where = f"this {cpu_info.machine} machine" if cpu_info else "the server's machine"
        return DtypeChoice(None, f"vLLM's choice (the CPU features of {where} are unknown)", flag=False)
    native = cpu_info.native(stored)
    if native:
        return DtypeChoice(
            stored, f"the checkpoint's; this CPU computes {stored} natively ({native})", flag=True
        )
    expected = " or ".join(_NATIVE_FLAGS[cpu_info.family][stored])
    return DtypeChoice(
        "float32",
        f"the checkpoint is {stored} but this CPU has no native {stored} (no {expected} flag): "
        "emulating it is several times slower than float32",
        flag=True,
    )


RESERVED_CPU_ENV = "VLLM_CPU_NUM_OF_RESERVED_CPU"
_THREADS_BIND_ENV = "VLLM_CPU_OMP_THREADS_BIND"
#: Up to this many cores, vLLM's one reserved core is a share of compute the server cannot spare.
SMALL_MACHINE_CORES = 4


def choose_reserved_cpus(
    cpu_info: CpuInfo | None, env: Mapping[str, str], *, workers: int
) -> tuple[dict[str, str], list[str]]:
    """The environment that lets vLLM's CPU build compute on every core of a small machine, and why.

    With its automatic thread binding, vLLM's CPU build (0.27 to 0.32) keeps one core per worker
    out of the model's OpenMP threads, for its scheduler process. On a machine of at most
    :data:`SMALL_MACHINE_CORES` cores that is a quarter to a half of the compute: on 2 cores the
    model ran on one, and ``VLLM_CPU_NUM_OF_RESERVED_CPU=0`` lets it use both
    (``benchmarks/vs_transformers.py``'s ``reserved-core`` variant measures the difference side by
    side, ``benchmarks/results/vs_transformers.md``). So a single worker on such a machine reserves
    none; a value the
    user set (``env`` or this process's environment), a thread binding of their own, several
    workers, a bigger machine or an unknown core count keep vLLM's default.
    """

    def given(name: str) -> str | None:
        return (env if name in env else os.environ).get(name)

    if given(RESERVED_CPU_ENV) is not None or given(_THREADS_BIND_ENV) not in (None, "", "auto"):
        return {}, []
    if cpu_info is None or cpu_info.cores is None or workers != 1 or cpu_info.cores > SMALL_MACHINE_CORES:
        return {}, []
    return {RESERVED_CPU_ENV: "0"}, [
        f"no core reserved for vLLM's scheduler ({RESERVED_CPU_ENV}=0): it would take 1 of this "
        f"machine's {cpu_info.cores} from the model"
    ]
