"""Untrusted pixels are decoded behind a hard bound: a persistent pool of worker processes.

A retrieved image file is decoded, made RGB, resized and PNG-encoded in a worker process
(``_sandbox_worker.py``), never in this one: a file that takes too long (a progressive JPEG
with thousands of scans decodes in minutes from 200 kB) or too much memory (more than its header
announced) is stopped there, that image becomes an :class:`UnusableImage` saying so, and the
worker is replaced. Each job's bounds:

* **wall time** :data:`DECODE_SECONDS` from the moment the job reaches its worker (a watchdog
  thread kills the process beyond it; on every platform);
* **CPU time** the same seconds (``RLIMIT_CPU`` in the worker, where ``resource`` exists);
* **memory**: the worker's address space may grow by :func:`memory_bound` of the image's
  estimated cost (``RLIMIT_AS``, where the platform enforces it: Linux).

Workers are started lazily (a fresh interpreter each, ``python -P -m ...``: no fork of this
threaded process, no re-import of the application's ``__main__``) and persist: a page costs
two pipe transfers, not a process start.

Scheduling keeps one call's bombs from delaying another call's images beyond the bound:

* at most :data:`~qwen3_vllm_rerank.images._decode_budget.DECODE_WORKERS` jobs run *freshly* (sent
  less than :data:`STALL_SECONDS` ago) at once: that many cores' worth of decoding;
* a job running longer than :data:`STALL_SECONDS` stops counting against that number, so the
  next waiting job starts in another worker (up to :data:`SANDBOX_PROCESSES` at once);
* one owner (one call's budget) has at most ``DECODE_WORKERS`` jobs running, and waiting jobs
  are taken from the owners in turn: a call with a hundred bombs holds two workers, and another
  call's image starts within :data:`STALL_SECONDS` of the bombs starting (unless
  ``SANDBOX_PROCESSES`` workers are all stalled at once, and then within :data:`DECODE_SECONDS`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

from ._decode_budget import DECODE_WORKERS
from ._failures import UnusableImage, logger

__all__ = [
    "DECODE_SECONDS",
    "MEMORY_SLACK_BYTES",
    "SANDBOX_PROCESSES",
    "STALL_SECONDS",
    "Decoded",
    "Job",
    "Sandbox",
    "chained",
    "memory_bound",
    "receive",
    "sandbox",
    "send",
    "shutdown_sandbox",
]

#: Wall (and CPU) seconds one image may take to decode, convert, resize and encode in its worker.
#: A 64-megapixel photo takes about 2 s on one core of this project's 2-core CI machine; 20 s
#: leaves room for a loaded machine. A 3,000-scan progressive JPEG (90 s) is stopped at it, if
#: the scan count check (``MAX_JPEG_SCANS``) did not refuse it first.
DECODE_SECONDS = 20.0

#: Seconds after which a running job stops holding one of the ``DECODE_WORKERS`` slots: the
#: next waiting image then starts in another worker. A rendered page takes 30 to 150 ms.
STALL_SECONDS = 0.5

#: The most worker processes running jobs at once (stalled ones included): each is bounded in
#: memory by its job, and at most ``DECODE_WORKERS`` are idle between calls (about 40 MB each).
SANDBOX_PROCESSES = 4 * DECODE_WORKERS

#: What a worker may use beyond its image's estimated cost: the decoders' own tables and
#: buffers, Python's allocations. Measured growth was at most 0.7x the estimate (every format,
#: 6 to 16 megapixels; WebP 0.9x once its estimate was corrected).
MEMORY_SLACK_BYTES = 64 * 1024 * 1024

_WORKER = "qwen3_vllm_rerank.images._sandbox_worker"
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
_REPLACE = "re-encode it (a baseline JPEG or a PNG) or pass a smaller image"
_UNSTARTED = (
    "the image decoding worker process could not be started; check that this Python can start subprocesses"
)

_T = TypeVar("_T")
_R = TypeVar("_R")


_HEADER = struct.Struct(">I")
_PAYLOAD = struct.Struct(">Q")


def send(stream: IO[bytes], header: dict[str, Any], payload: bytes = b"") -> None:
    """One message: a length-prefixed JSON ``header``, then the length-prefixed ``payload``."""
    encoded = json.dumps(header).encode()
    stream.write(_HEADER.pack(len(encoded)) + encoded + _PAYLOAD.pack(len(payload)))
    stream.write(payload)
    stream.flush()


def _exactly(stream: IO[bytes], size: int) -> bytes:
    parts, left = [], size
    while left:
        part = stream.read(left)
        if not part:
            raise EOFError("the other end closed the pipe")
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def receive(stream: IO[bytes]) -> tuple[dict[str, Any], bytes]:
    """The next message from ``stream`` (``EOFError`` once the other end has closed it)."""
    (length,) = _HEADER.unpack(_exactly(stream, _HEADER.size))
    header = json.loads(_exactly(stream, length))
    (size,) = _PAYLOAD.unpack(_exactly(stream, _PAYLOAD.size))
    return header, _exactly(stream, size)


def memory_bound(cost: int) -> int:
    """How far a worker's address space may grow for an image whose estimated cost is ``cost``
    bytes (at most the call's budget): the cost, half again, and :data:`MEMORY_SLACK_BYTES`."""
    return cost + cost // 2 + MEMORY_SLACK_BYTES


@dataclass(frozen=True, slots=True)
class Job:
    """One image file to prepare: its bytes, its prepared ``(height, width)``, the bounds, and
    how it is named in messages."""

    data: bytes = field(repr=False)
    size: tuple[int, int]
    memory: int
    seconds: float
    label: str
    shown: str


@dataclass(frozen=True, slots=True)
class Decoded:
    """A job's answer: the prepared PNG, the original's size, and the worker that made it."""

    png: bytes = field(repr=False)
    original_width: int
    original_height: int
    pid: int


class _Process:
    """One worker process and its two pipes."""

    def __init__(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
        self._popen = subprocess.Popen(
            [sys.executable, "-P", "-m", _WORKER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        self.pid = self._popen.pid

    def ask(self, job: Job) -> tuple[dict[str, Any], bytes]:
        """Send ``job``, wait for its answer (``EOFError`` / ``OSError`` if the worker died)."""
        stdin, stdout = self._popen.stdin, self._popen.stdout
        if stdin is None or stdout is None:  # pragma: no cover - both are pipes
            raise EOFError("the worker has no pipes")
        header = {
            "height": job.size[0],
            "width": job.size[1],
            "memory": job.memory,
            "seconds": job.seconds,
            "label": job.label,
            "shown": job.shown,
        }
        send(stdin, header, job.data)
        return receive(stdout)

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self._popen.kill()

    def ran_out_of_cpu(self) -> bool:
        """Whether it ended by ``SIGXCPU`` (its CPU limit), after it ended."""
        try:
            code = self._popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()
            return False
        return os.name != "nt" and code == -getattr(signal, "SIGXCPU", -1)

    def close(self) -> None:
        """End it: close its stdin (it exits), kill it if it does not."""
        for pipe in (self._popen.stdin, self._popen.stdout):
            with contextlib.suppress(OSError):
                if pipe is not None:
                    pipe.close()
        try:
            self._popen.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._popen.wait(timeout=2)


@dataclass(eq=False)
class _Running:
    owner: object
    job: Job
    future: Future[Decoded]
    process: _Process | None = None
    sent: float | None = None  # time.monotonic() when the job reached its worker
    killed: bool = False


def _too_long(job: Job) -> UnusableImage:
    return UnusableImage(
        job.label,
        f"image {job.shown} took longer than {job.seconds:g} s to decode and prepare and was stopped "
        f"(a progressive JPEG with very many scans does this, for one); {_REPLACE}",
    )


def _too_big(job: Job) -> UnusableImage:
    return UnusableImage(
        job.label,
        f"image {job.shown} took more memory to decode and prepare than its header announced (over "
        f"{job.memory >> 20} MiB) and was stopped; {_REPLACE}",
    )


def _shut_down(job: Job) -> UnusableImage:
    return UnusableImage(
        job.label, f"image {job.shown} was not prepared: image decoding was shut down; try the call again"
    )


class Sandbox:
    """The pool of decoding processes (see the module docstring for the bounds and the order).

    Args:
        workers: jobs running freshly at once, and idle workers kept (:data:`DECODE_WORKERS`).
        processes: the most workers running jobs at once (:data:`SANDBOX_PROCESSES`).
        stall: seconds after which a running job no longer holds a fresh slot (:data:`STALL_SECONDS`).
    """

    def __init__(
        self,
        workers: int = DECODE_WORKERS,
        processes: int = SANDBOX_PROCESSES,
        stall: float = STALL_SECONDS,
    ) -> None:
        self.workers = workers
        self.processes = max(processes, workers)
        self.stall = stall
        self._changed = threading.Condition()
        self._idle: list[_Process] = []
        self._running: list[_Running] = []
        self._waiting: OrderedDict[object, deque[tuple[Job, Future[Decoded]]]] = OrderedDict()
        self._watchdog: threading.Thread | None = None
        self._closed = False

    def submit(self, owner: object, job: Job) -> Future[Decoded]:
        """``job`` prepared in a worker, for ``owner`` (the call it belongs to): its future
        raises :class:`UnusableImage` if the image was stopped or cannot be decoded."""
        future: Future[Decoded] = Future()
        with self._changed:
            if self._closed:
                future.set_exception(_shut_down(job))
                return future
            self._waiting.setdefault(owner, deque()).append((job, future))
            self._dispatch()
            if self._watchdog is None:
                watchdog = threading.Thread(target=self._watch, name="qwen3-image-watchdog", daemon=True)
                watchdog.start()
                self._watchdog = watchdog
            self._changed.notify_all()
        return future

    def pids(self) -> list[int]:
        """The worker processes alive now (idle or running a job)."""
        with self._changed:
            running = [r.process.pid for r in self._running if r.process is not None]
            return [p.pid for p in self._idle] + running

    def close(self) -> None:
        """Stop every worker; jobs still waiting fail. The sandbox cannot be used afterwards."""
        with self._changed:
            self._closed = True
            idle, self._idle = self._idle, []
            waiting, self._waiting = list(self._waiting.values()), OrderedDict()
            for run in self._running:
                run.killed = True
                if run.process is not None:
                    run.process.kill()
            self._changed.notify_all()
        for queue in waiting:
            for job, future in queue:
                _settle(future, _shut_down(job))
        for process in idle:
            process.close()

    # Everything below runs with self._changed held, except _run.

    def _fresh(self, now: float) -> int:
        return sum(1 for r in self._running if r.sent is None or now - r.sent < self.stall)

    def _dispatch(self) -> None:
        now = time.monotonic()
        while self._waiting and self._fresh(now) < self.workers and len(self._running) < self.processes:
            owned: dict[int, int] = {}
            for run in self._running:
                owned[id(run.owner)] = owned.get(id(run.owner), 0) + 1
            owner = next((o for o in self._waiting if owned.get(id(o), 0) < self.workers), None)
            if owner is None:
                return
            queue = self._waiting.pop(owner)
            job, future = queue.popleft()
            if queue:
                self._waiting[owner] = queue  # to the back: owners take turns
            if not future.set_running_or_notify_cancel():
                continue
            run = _Running(owner, job, future, self._idle.pop() if self._idle else None)
            self._running.append(run)
            threading.Thread(target=self._run, args=(run,), name="qwen3-image-sandbox", daemon=True).start()

    def _watch(self) -> None:
        """Kills jobs past their seconds, and starts waiting jobs when running ones stall."""
        with self._changed:
            while not self._closed:
                now = time.monotonic()
                wake: list[float] = []
                for run in self._running:
                    if run.sent is None or run.killed:
                        continue
                    if now - run.sent >= run.job.seconds and run.process is not None:
                        run.killed = True
                        run.process.kill()
                        continue
                    wake.append(run.sent + run.job.seconds)
                    if now - run.sent < self.stall:
                        wake.append(run.sent + self.stall)
                self._dispatch()
                self._changed.wait(None if not wake else max(0.001, min(wake) - now))

    def _run(self, run: _Running) -> None:
        """One job, in its own thread: start a worker if none was idle, send, wait."""
        job, process = run.job, run.process
        outcome: Decoded | UnusableImage
        alive = False
        try:
            if process is None:
                process = _Process()
        except OSError as exc:
            logger.warning("the image decoding worker could not be started: %r", exc)
            self._finish(run, None, UnusableImage(job.label, f"{_UNSTARTED} ({type(exc).__name__}: {exc})"))
            return
        try:
            with self._changed:
                run.process, run.sent = process, time.monotonic()
                if run.killed:  # closed meanwhile
                    process.kill()
                self._changed.notify_all()
            header, png = process.ask(job)
        except (EOFError, OSError, ValueError) as exc:
            logger.debug("decoding worker ended during %s: %r", job.label, exc)
            if self._closed:
                outcome = _shut_down(job)
            elif run.killed or process.ran_out_of_cpu():
                outcome = _too_long(job)
            else:
                outcome = _too_big(job)
        else:
            if "reason" in header:
                out_of_memory = bool(header.get("memory"))
                outcome = _too_big(job) if out_of_memory else UnusableImage(job.label, str(header["reason"]))
                alive = not out_of_memory
            else:
                outcome = Decoded(png, int(header["width"]), int(header["height"]), process.pid)
                alive = True
        if not alive:
            process.close()
        self._finish(run, process if alive else None, outcome)

    def _finish(self, run: _Running, alive: _Process | None, outcome: Decoded | UnusableImage) -> None:
        """``run`` is over: its worker (if ``alive``) back to the idle ones or closed, the next
        job dispatched, its future settled."""
        with self._changed:
            self._running.remove(run)
            keep = alive is not None and not run.killed and not self._closed
            if alive is not None and keep and len(self._idle) < self.workers:
                self._idle.append(alive)
            else:
                keep = False
            self._dispatch()
            self._changed.notify_all()
        if alive is not None and not keep:
            alive.close()
        if isinstance(outcome, UnusableImage):
            run.future.set_exception(outcome)
        else:
            run.future.set_result(outcome)


def chained(future: Future[_T], then: Callable[[_T], _R]) -> Future[_R]:
    """A future of ``then(result)``, computed in the thread that completes ``future``; its
    exception passes through, and cancelling the new future cancels ``future`` if it can."""
    derived: Future[_R] = Future()

    def done(source: Future[_T]) -> None:
        if source.cancelled():
            derived.cancel()
            derived.set_running_or_notify_cancel()
            return
        error = source.exception()
        if error is not None:
            _settle(derived, error)
            return
        try:
            value = then(source.result())
        except BaseException as exc:  # handed to whoever waits
            _settle(derived, exc)
        else:
            if not derived.cancelled():
                derived.set_result(value)

    def cancelled(mine: Future[_R]) -> None:
        if mine.cancelled():
            future.cancel()

    derived.add_done_callback(cancelled)
    future.add_done_callback(done)
    return derived


def _settle(future: Future[_R], error: BaseException) -> None:
    if not future.cancelled():
        future.set_exception(error)


_SANDBOX: Sandbox | None = None
_SANDBOX_LOCK = threading.Lock()


def sandbox() -> Sandbox:
    """The process-wide sandbox, made on first use (its workers start when jobs need them)."""
    global _SANDBOX
    with _SANDBOX_LOCK:
        if _SANDBOX is None:
            _SANDBOX = Sandbox()
        return _SANDBOX


def shutdown_sandbox() -> None:
    """Stop the process-wide sandbox's workers (the next image starts a new sandbox)."""
    global _SANDBOX
    with _SANDBOX_LOCK:
        current, _SANDBOX = _SANDBOX, None
    if current is not None:
        current.close()


def _forget_after_fork() -> None:
    # A forked child inherits the pipes but not the threads: it starts its own sandbox.
    global _SANDBOX
    _SANDBOX = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
