"""Child processes that never outlive this one, started without running Python code between fork and exec.

Two traps shape this module:

* ``subprocess.Popen(preexec_fn=...)`` runs Python in the forked child before ``exec``; Python documents
  that this can deadlock when other threads exist (a lock one of them held at fork time stays held
  forever in the child). A program that starts vLLM usually has threads (a log follower, an event
  loop's executor, a web framework), so the parent-death signal is set by a tiny wrapper instead:
  ``python -c`` sets ``PR_SET_PDEATHSIG`` in a fresh interpreter, checks that its parent is still
  the process that spawned it (the parent may have died before the signal was armed) and ``exec``\\ s
  the real command, which keeps its pid.
* Linux sends the parent-death signal when the *thread* that spawned the child ends, not the process
  (prctl(2)). A server started from a short-lived thread (a UI callback, a worker) would be killed when
  that thread returns, so every spawn runs on one daemon thread that lives as long as the process.

Elsewhere than Linux there is no parent-death signal: the child runs in its own session and is stopped
by its owner (context manager, ``atexit``), but a parent killed with SIGKILL leaves it running.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from typing import IO

__all__ = ["EXEC_WITH_PARENT_DEATH_SIGNAL", "PARENT_GONE_EXIT_CODE", "spawn", "stop_process_group"]

logger = logging.getLogger("qwen3_vllm_rerank.server")

#: The wrapper's exit code when the process that spawned it was already gone.
PARENT_GONE_EXIT_CODE = 75

#: ``python -c`` program: argv = [expected parent pid, command...]. Only the standard library, run
#: with -I -S so that nothing from the environment or site-packages is imported before the exec.
EXEC_WITH_PARENT_DEATH_SIGNAL = f"""
import ctypes, os, signal, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
except (AttributeError, OSError):
    pass
if os.getppid() != int(sys.argv[1]):
    sys.exit({PARENT_GONE_EXIT_CODE})
os.execvp(sys.argv[2], sys.argv[2:])
"""


def _wrapped(command: Sequence[str]) -> list[str]:
    if not sys.platform.startswith("linux") or not sys.executable:
        return list(command)
    return [sys.executable, "-I", "-S", "-c", EXEC_WITH_PARENT_DEATH_SIGNAL, str(os.getpid()), *command]


_Job = tuple[Callable[[], "subprocess.Popen[bytes]"], "Future[subprocess.Popen[bytes]]"]


class _Spawner(threading.Thread):
    """The one thread every child is spawned from, so its parent-death signal follows the process."""

    def __init__(self) -> None:
        super().__init__(name="qwen3-vllm-rerank-spawner", daemon=True)
        self.jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()

    def run(self) -> None:
        while True:
            start, future = self.jobs.get()
            try:
                future.set_result(start())
            except BaseException as exc:  # handed to the caller, who re-raises it
                future.set_exception(exc)


_spawner: _Spawner | None = None
_spawner_lock = threading.Lock()


def _spawner_thread() -> _Spawner:
    global _spawner
    with _spawner_lock:
        if _spawner is None or not _spawner.is_alive():
            _spawner = _Spawner()
            _spawner.start()
        return _spawner


def spawn(
    command: Sequence[str], *, env: Mapping[str, str], stdout: IO[bytes] | int | None
) -> subprocess.Popen[bytes]:
    """Start ``command`` in a new session (its own process group) that dies with this process.

    ``stdout`` also receives stderr; stdin is ``/dev/null``. The returned process is ``command``
    itself (the wrapper ``exec``\\ s it): its pid leads the new process group.
    """
    wrapped = _wrapped(command)

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            wrapped,
            stdout=stdout,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env),
            start_new_session=True,
        )

    future: Future[subprocess.Popen[bytes]] = Future()
    _spawner_thread().jobs.put((start, future))
    return future.result()


def stop_process_group(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM the process's group, SIGKILL it if it has not exited within ``timeout`` seconds, then
    SIGKILL whatever is left of the group (workers that share it must not outlive it)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        logger.warning("process %d did not stop within %.0f s; killing it", process.pid, timeout)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
