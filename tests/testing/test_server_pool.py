"""The suite's server pool keeps its servers, and the ones tests start themselves, within its memory
budget: regression for a run whose Qwen3-VL server the kernel's OOM killer took (the pool counted
2.5 GB per text server, measured 3.3, and nothing for the servers tests started outside it)."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest

from qwen3_vllm_rerank import VLLMServer
from tests.support.fixtures import Checkpoints, Served, ServerPool


class _Server:
    """Stands in for a running VLLMServer: the pool only stops it."""

    def __init__(self) -> None:
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True


def _pool(tmp_path: Path, *running: str) -> tuple[ServerPool, dict[str, _Server]]:
    pool = ServerPool(Checkpoints(tmp_path), tmp_path, "unused-python", memory_gb=15)
    servers = {name: _Server() for name in running}
    for name, server in servers.items():
        served = Served(name, "http://127.0.0.1:1", name, tmp_path, tmp_path, cast(VLLMServer, server))
        pool._running[name] = served
    return pool, servers


def test_room_for_a_tests_own_server_stops_the_least_recently_used_and_never_a_pinned_one(
    tmp_path: Path,
) -> None:
    pool, servers = _pool(tmp_path, "original", "api-key", "vl", "server-template")  # 16.5 GB counted
    with pool.room():
        assert [name for name, s in servers.items() if s.stopped] == ["api-key", "server-template"]
        assert set(pool._running) == {"original", "vl"}
    assert not servers["original"].stopped
    assert not servers["vl"].stopped


def test_what_a_room_holds_counts_until_the_block_ends(tmp_path: Path) -> None:
    pool, servers = _pool(tmp_path, "original", "vl", "api-key")  # 13 GB
    with pool.room(1.5):  # 14.5 GB: fits
        assert not servers["api-key"].stopped
        pool._make_room(1.0)  # 15.5 GB with the room: the unpinned server goes
        assert servers["api-key"].stopped
    pool, servers = _pool(tmp_path, "original", "vl", "api-key")
    with pool.room(1.5):
        pass
    pool._make_room(1.0)  # 14 GB once the room is released
    assert not servers["api-key"].stopped


def test_a_room_is_released_when_its_test_fails(tmp_path: Path) -> None:
    pool, _ = _pool(tmp_path, "original", "vl")
    with pytest.raises(RuntimeError), pool.room(6):
        raise RuntimeError("the test failed")
    assert pool._held_gb == 0
