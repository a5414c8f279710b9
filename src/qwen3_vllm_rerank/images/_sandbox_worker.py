"""The decoding process of the sandbox (``python -m qwen3_vllm_rerank.images._sandbox_worker``).

It reads jobs from its stdin and answers on its stdout, one at a time, for as long as its parent
keeps the pipe open. A job is a small JSON header (the label and description of the input for
messages, the prepared size, the memory and CPU it may take) and the image file's bytes; the
answer is a JSON header (the sizes, or the :class:`UnusableImage` reason) and the prepared PNG.
Before each job it lowers its own limits (``resource``, where the platform has it): its address
space may grow by the job's memory bound (``RLIMIT_AS``) and its CPU time by the job's seconds
(``RLIMIT_CPU``: the kernel stops it with ``SIGXCPU``); the parent's wall-time watchdog kills
it beyond the same seconds wherever it runs. A job that ran out of memory is answered, then the
process exits (its parent starts a fresh one when one is needed).

The framing (``send``, ``receive``) is the parent's (``_sandbox.py``).
"""

from __future__ import annotations

import contextlib
import os
import sys

__all__ = ["main"]


def _address_space() -> int | None:
    """This process's address space in bytes now (Linux), ``None`` where it cannot be read."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _limit(memory: int | None, seconds: float) -> None:
    """Lower the soft limits for one job (``memory`` bytes more address space, ``seconds`` more
    CPU time); ``memory=None`` lifts the memory limit again. Where the platform refuses a limit,
    the parent's watchdog remains."""
    try:
        import resource
    except ImportError:  # Windows: the wall-time kill only
        return
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    now = _address_space() if memory is not None else None
    soft = hard if now is None or memory is None else now + memory
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    with contextlib.suppress(ValueError, OSError):  # e.g. macOS, which does not enforce it
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    used = resource.getrusage(resource.RUSAGE_SELF)
    _, cpu_hard = resource.getrlimit(resource.RLIMIT_CPU)
    cpu = int(used.ru_utime + used.ru_stime + seconds) + 1
    if cpu_hard != resource.RLIM_INFINITY:
        cpu = min(cpu, cpu_hard)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu_hard))


def main() -> None:
    """Serve jobs until stdin closes."""
    jobs = sys.stdin.buffer
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    # Nothing a decoder prints may corrupt the answers: fd 1 goes nowhere from now on.
    quiet = os.open(os.devnull, os.O_WRONLY)
    os.dup2(quiet, sys.stdout.fileno())
    os.close(quiet)
    from ._failures import UnusableImage
    from ._preparing import render
    from ._sandbox import receive, send

    while True:
        try:
            header, data = receive(jobs)
        except EOFError:
            return
        size = (int(header["height"]), int(header["width"]))
        _limit(int(header["memory"]), float(header["seconds"]))
        try:
            png, original = render(data, size, str(header["label"]), str(header["shown"]))
        except UnusableImage as error:
            out_of_memory = isinstance(error.__cause__, MemoryError)
            del data
            _limit(None, float(header["seconds"]))
            send(answers, {"reason": error.reason, "memory": out_of_memory})
            if out_of_memory:
                return
            continue
        del data
        _limit(None, float(header["seconds"]))
        send(answers, {"width": original[0], "height": original[1]}, png)


if __name__ == "__main__":
    main()
