"""Who listens on a TCP port: the launcher's child, someone else, or nobody yet (Linux ``/proc``).

The launcher picks a free port, closes it and starts vLLM on it; until vLLM binds it, any local process
can bind it first (it can read the port on vLLM's command line) and would answer ``/health`` and receive
the API key. :func:`port_owner` settles it from the kernel's own tables: every listening TCP socket on
the port (``/proc/net/tcp`` and ``/proc/net/tcp6``, state ``0A``) is identified by its inode, and each
must be one of the ``socket:[inode]`` file descriptors of the child or of a process it started (vLLM
may bind in a child process, and several API-server processes share one socket). A listener held by
anyone else, on any address, makes the port someone else's.

Once the child holds the port, nobody else can take it while the child lives: another user cannot bind
a held address even with ``SO_REUSEPORT`` (Linux requires the same effective uid), and a co-listener of
the same uid shows up here as a socket that is not the child's. Without ``/proc`` (macOS, Windows) the
owner cannot be read: :data:`UNKNOWN`.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = ["NOBODY", "OURS", "THEIRS", "UNKNOWN", "Owner", "PortOwner", "port_owner"]

#: What :func:`port_owner` can say.
Owner = Literal["ours", "theirs", "nobody", "unknown"]
OURS: Owner = "ours"
THEIRS: Owner = "theirs"
NOBODY: Owner = "nobody"
UNKNOWN: Owner = "unknown"

#: ``st`` of a listening socket in ``/proc/net/tcp{,6}`` (``TCP_LISTEN``).
_LISTEN = "0A"


@dataclass(frozen=True, slots=True)
class PortOwner:
    """The answer of :func:`port_owner`, with the uids of the listeners that are not the child's."""

    owner: Owner
    other_uids: tuple[int, ...] = ()


def _listeners(proc: Path, port: int) -> dict[int, int] | None:
    """Inode -> uid of every listening TCP socket on ``port`` (None: no ``/proc/net/tcp`` to read)."""
    found: dict[int, int] = {}
    read_any = False
    for table in ("tcp", "tcp6"):
        try:
            lines = (proc / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        read_any = True
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != _LISTEN:
                continue
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port:
                found[int(fields[9])] = int(fields[7])
    return found if read_any else None


def _family(proc: Path, root: int) -> set[int]:
    """``root`` and every process descended from it or in its process group (vLLM's workers)."""
    parents: dict[int, tuple[int, int]] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        fields = stat.rsplit(")", 1)[1].split()  # the name, in parentheses, may hold anything
        parents[int(entry.name)] = (int(fields[1]), int(fields[2]))  # ppid, process group
    family = {root} | {pid for pid, (_, group) in parents.items() if group == root}
    grew = True
    while grew:
        grown = {pid for pid, (ppid, _) in parents.items() if ppid in family}
        grew = not grown <= family
        family |= grown
    return family


def _socket_inodes(proc: Path, pid: int) -> set[int]:
    """The inodes of the sockets process ``pid`` holds open (empty if it is gone or unreadable)."""
    inodes: set[int] = set()
    with contextlib.suppress(OSError):
        for fd in (proc / str(pid) / "fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
    return inodes


def port_owner(pid: int, port: int, *, proc: Path = Path("/proc")) -> PortOwner:
    """Whether the TCP listeners on ``port`` are all held by process ``pid`` and its descendants.

    ``ours``: at least one listener, every one the family's; ``theirs``: some listener is not;
    ``nobody``: no listener yet; ``unknown``: ``proc`` has no TCP tables (not Linux).
    """
    listeners = _listeners(proc, port)
    if listeners is None:
        return PortOwner(UNKNOWN)
    if not listeners:
        return PortOwner(NOBODY)
    held: set[int] = set()
    for member in _family(proc, pid):
        held |= _socket_inodes(proc, member)
    others = {inode: uid for inode, uid in listeners.items() if inode not in held}
    if others:
        return PortOwner(THEIRS, tuple(sorted(set(others.values()))))
    return PortOwner(OURS)
