"""Session fixtures for the three test trees: fixture checkpoints and real vLLM servers, built once.

A pytest plugin, registered by the repository's root ``conftest.py`` for ``tests/`` and for each
adapter's ``tests/``; the classes are imported by the tests that need their types.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from qwen3_vllm_rerank import VLLMServer
from qwen3_vllm_rerank.testing import make_fixture_checkpoint

from .serving import OTHER_SERVERS, SERVING_PATHS, ServingPath

SERVER_PYTHON_ENV = "QWEN3_VLLM_RERANK_SERVER_PYTHON"
#: The interpreter of the oldest vLLM the suite runs (0.27; scripts/setup builds .venv-vllm-oldest).
OLDEST_SERVER_PYTHON_ENV = "QWEN3_VLLM_RERANK_OLDEST_SERVER_PYTHON"


def oldest_python() -> str:
    """``$QWEN3_VLLM_RERANK_OLDEST_SERVER_PYTHON``, or a usage error saying how to set it."""
    python = os.environ.get(OLDEST_SERVER_PYTHON_ENV)
    if not python:
        raise pytest.UsageError(
            f"${OLDEST_SERVER_PYTHON_ENV} is not set: run the suite with scripts/test, which points it at "
            ".venv-vllm-oldest/bin/python (the oldest vLLM the compatibility tier runs)"
        )
    return python


@dataclass
class Served:
    """A running server and what it serves."""

    name: str
    base_url: str
    model: str
    original: Path  # the CausalLM checkpoint reference scores are computed from
    served_checkpoint: Path
    server: VLLMServer


class Checkpoints:
    """Fixture checkpoints, written on first use."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._built: dict[str, Path] = {}

    def get(self, name: str) -> Path:
        if name not in self._built:
            options = {"tied": {"tied": True}, "untied": {"tied": False, "max_shard_size": "40MB"}}
            self._built[name] = make_fixture_checkpoint(self.root / name, **options[name])  # type: ignore[arg-type]
        return self._built[name]


class ServerPool:
    """One server per serving path, started on first use, all stopped at session end.

    A vLLM CPU server holds ~3.3 GB here (a Qwen3-VL one ~5.2 GB, two data-parallel engines
    ~5.8 GB; measured in the kernel's OOM report of a run whose servers did not fit); to stay well
    inside the machine's memory the running servers keep within ``memory_gb`` (their
    ``ServingPath.memory_gb``, plus what :meth:`room` holds for servers tests start themselves): the
    default "original" one and the Qwen3-VL one (the slowest to start, used by tests in all three
    trees) stay, and the least recently used of the others is stopped to make room (tests are
    grouped by server, so a stopped one is rarely needed again; it would simply be restarted).
    """

    PINNED = ("original", "vl")

    def __init__(self, checkpoints: Checkpoints, workdir: Path, python: str, memory_gb: float = 15) -> None:
        """``python``: the newest vLLM's interpreter; a path served by the oldest vLLM
        (``ServingPath.vllm``) gets :func:`oldest_python`, within the same memory budget."""
        self.checkpoints = checkpoints
        self.workdir = workdir
        self.python = python
        self.memory_gb = memory_gb
        self._running: dict[str, Served] = {}
        self._prepared: dict[str, Path] = {}
        self._held_gb = 0.0

    @staticmethod
    def _path(name: str) -> ServingPath:
        return SERVING_PATHS.get(name) or OTHER_SERVERS[name]

    def _make_room(self, needed_gb: float) -> None:
        def used() -> float:
            return self._held_gb + sum(self._path(name).memory_gb for name in self._running)

        while self._running and used() + needed_gb > self.memory_gb:
            victim = next((name for name in self._running if name not in self.PINNED), None)
            if victim is None:
                break  # only pinned servers left: start anyway
            self._running.pop(victim).server.stop()

    @contextmanager
    def room(self, memory_gb: float = ServingPath.memory_gb) -> Iterator[None]:
        """Room for a server a test starts itself: the pool's servers are stopped (least recently
        used first, never the pinned ones) until it fits, and it is counted until the block ends."""
        self._make_room(memory_gb)
        self._held_gb += memory_gb
        try:
            yield
        finally:
            self._held_gb -= memory_gb

    def get(self, name: str) -> Served:
        running = self._running.get(name)
        process = running.server.process if running is not None else None
        if running is not None and (process is None or process.poll() is not None):
            # It died (on a loaded machine the kernel's OOM killer picks the largest process): one
            # restart, so one lost server fails the tests that were using it, not every later one.
            warnings.warn(f"the {name!r} vLLM server had exited; starting it again", stacklevel=2)
            self._running.pop(name)
            running.server.stop()
        if name in self._running:
            self._running[name] = self._running.pop(name)  # most recently used last
        else:
            path = self._path(name)
            self._make_room(path.memory_gb)
            original = self.checkpoints.get(path.checkpoint)
            if name not in self._prepared:  # once: a server stopped to make room may be restarted
                self._prepared[name] = path.prepare(original, self.workdir / name)
            target = self._prepared[name]
            server = VLLMServer(
                target,
                python=self.python if path.vllm == "newest" else oldest_python(),
                extra_args=["--dtype", "float32", *path.extra_args],
                api_key=path.api_key,
                self_check=path.self_check,
                log_file=self.workdir / f"{name}.log",
            ).start()
            self._running[name] = Served(
                name, server.base_url, server.served_model_name, original, target, server
            )
        return self._running[name]

    def stop_all(self) -> None:
        for served in self._running.values():
            served.server.stop()
        self._running.clear()


@pytest.fixture(autouse=True)
def _vllm_only_in_vllm_tests(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test not marked ``vllm`` (conftest.py marks every user of ``server_python``) runs without
    ``$QWEN3_VLLM_RERANK_SERVER_PYTHON``: if it starts a server anyway, it fails, in either tier."""
    if request.node.get_closest_marker("vllm") is None:
        monkeypatch.delenv(SERVER_PYTHON_ENV, raising=False)
        monkeypatch.delenv(OLDEST_SERVER_PYTHON_ENV, raising=False)


@pytest.fixture(scope="session")
def server_python() -> str:
    python = os.environ.get(SERVER_PYTHON_ENV)
    if not python:
        raise pytest.UsageError(
            f"${SERVER_PYTHON_ENV} is not set: run the suite with scripts/test, which builds the "
            "vLLM virtualenv and points this variable at its python"
        )
    return python


@pytest.fixture(scope="session")
def oldest_server_python(server_python: str) -> str:
    """The oldest vLLM's interpreter (depends on ``server_python`` so that its users are marked
    ``vllm`` like every other server test)."""
    return oldest_python()


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Checkpoints:
    return Checkpoints(tmp_path_factory.mktemp("checkpoints"))


@pytest.fixture(scope="session")
def server_pool(
    checkpoints: Checkpoints, tmp_path_factory: pytest.TempPathFactory, server_python: str
) -> Iterator[ServerPool]:
    pool = ServerPool(checkpoints, tmp_path_factory.mktemp("servers"), server_python)
    yield pool
    pool.stop_all()


@pytest.fixture
def server_room(server_pool: ServerPool) -> Iterator[None]:
    """For a test that starts a text vLLM server of its own: room for it in the pool's budget."""
    with server_pool.room():
        yield


@pytest.fixture(scope="module")
def served(server_pool: ServerPool) -> Served:
    """The default server: the original tied checkpoint with vLLM's overrides. Module-scoped, so a
    server that died is started again for the next module (the pool keeps it running across them)."""
    return server_pool.get("original")


@pytest.fixture(scope="module", params=sorted(SERVING_PATHS))
def serving_path(request: pytest.FixtureRequest, server_pool: ServerPool) -> Served:
    """Every serving path in turn."""
    return server_pool.get(request.param)


@pytest.fixture(scope="module")
def vl_served(server_pool: ServerPool) -> Served:
    """The session's one Qwen3-VL reranker server; ``served_checkpoint`` is its reference."""
    return server_pool.get("vl")
