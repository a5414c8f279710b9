"""Who listens on a port, read from the kernel's tables: real sockets on loopback, held by this process, a
child, a grandchild, or someone else."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from qwen3_vllm_rerank.serve._ownership import NOBODY, OURS, THEIRS, UNKNOWN, port_owner

#: Listens on 127.0.0.1 (a free port), prints the port, then waits for stdin to close. With "fork" the
#: socket is made and held by a forked child only (the parent closes its copy), as vLLM's API-server
#: processes may hold it.
LISTENER = """
import os, socket, sys
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
sock.listen()
port = sock.getsockname()[1]
if sys.argv[1:] != ["fork"] or os.fork():
    if sys.argv[1:] == ["fork"]:
        sock.close()  # the forked child holds the socket alone from here
    print(port, flush=True)
sys.stdin.read()  # until the test closes stdin (parent and child alike)
"""


def _listener(*args: str) -> Iterator[tuple[subprocess.Popen[str], int]]:
    process = subprocess.Popen(
        [sys.executable, "-c", LISTENER, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        yield process, int(process.stdout.readline())
    finally:
        assert process.stdin is not None
        process.stdin.close()  # ends the forked child too
        process.kill()
        process.wait()


@pytest.fixture
def child_listener() -> Iterator[tuple[subprocess.Popen[str], int]]:
    yield from _listener()


@pytest.fixture
def grandchild_listener() -> Iterator[tuple[subprocess.Popen[str], int]]:
    yield from _listener("fork")


@pytest.fixture
def bystander() -> Iterator[subprocess.Popen[bytes]]:
    """A process with no socket at all, unrelated to any listener."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        yield process
    finally:
        process.kill()
        process.wait()


def test_a_port_held_by_the_process_itself_is_ours() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        assert port_owner(os.getpid(), sock.getsockname()[1]).owner == OURS


def test_a_port_held_by_a_child_or_a_grandchild_is_the_familys(
    child_listener: tuple[subprocess.Popen[str], int],
    grandchild_listener: tuple[subprocess.Popen[str], int],
) -> None:
    child, port = child_listener
    assert port_owner(child.pid, port).owner == OURS
    assert port_owner(os.getpid(), port).owner == OURS  # the child is this process's
    top, grand_port = grandchild_listener
    assert port_owner(top.pid, grand_port).owner == OURS  # held only by the forked child of ``top``


def test_a_port_held_by_another_process_is_theirs_and_names_its_uid(
    child_listener: tuple[subprocess.Popen[str], int], bystander: subprocess.Popen[bytes]
) -> None:
    _, port = child_listener
    found = port_owner(bystander.pid, port)
    assert (found.owner, found.other_uids) == (THEIRS, (os.getuid(),))


def test_a_second_listener_that_is_not_ours_makes_the_port_theirs(bystander: subprocess.Popen[bytes]) -> None:
    """Two sockets may listen on one port (SO_REUSEPORT, same uid): every one must be the child's."""
    first, second = socket.socket(), socket.socket()
    with first, second:
        for sock in (first, second):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        first.bind(("127.0.0.1", 0))
        port = first.getsockname()[1]
        second.bind(("127.0.0.1", port))
        first.listen()
        second.listen()
        assert port_owner(os.getpid(), port).owner == OURS
        assert port_owner(bystander.pid, port).owner == THEIRS


def test_an_ipv6_listener_is_read_too(bystander: subprocess.Popen[bytes]) -> None:
    with socket.socket(socket.AF_INET6) as sock:
        sock.bind(("::1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert port_owner(os.getpid(), port).owner == OURS
        assert port_owner(bystander.pid, port).owner == THEIRS


def test_a_port_nobody_listens_on_is_nobodys() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, not listening: not a listener
        assert port_owner(os.getpid(), sock.getsockname()[1]).owner == NOBODY


def test_without_the_kernels_tables_the_owner_is_unknown(tmp_path: Path) -> None:
    """Where there is no /proc (macOS, Windows) the launcher cannot prove ownership and says so."""
    assert port_owner(os.getpid(), 8000, proc=tmp_path).owner == UNKNOWN
