"""The launcher's reading of vLLM arguments (abbreviations, aliases, dotted keys, ``--config`` files),
its IPv6 hosts, and the API key kept off vLLM's command line and out of the logs (no vLLM needed)."""

from __future__ import annotations

import json
import logging
import socket
import sys
from pathlib import Path

import pytest

from qwen3_vllm_rerank import ServerStartError, VLLMServer
from qwen3_vllm_rerank.serve._plan import ORIGINAL_OVERRIDES, plan_launch
from qwen3_vllm_rerank.serve._server import url_host
from qwen3_vllm_rerank.serve._vllm_args import REDACTED, UserFlags, redact_command
from tests.support.fake_vllm import fake_vllm

from .published_configs import PUBLISHED_CONFIGS

ORIGINAL = PUBLISHED_CONFIGS["0.6B"]
CONVERTED = {**ORIGINAL, "architectures": ["Qwen3ForSequenceClassification"], "num_labels": 1}
SECRET = "s3cret-key-do-not-show"


# --- abbreviations and aliases, as argparse reads them ------------------------------------------------


@pytest.mark.parametrize(
    ("user", "message"),
    [
        (["--hos", "0.0.0.0"], "pass host="),
        (["--ho=0.0.0.0"], "pass host="),
        (["--api-k", SECRET], "pass api_key="),
        (["--api_ke", SECRET], "pass api_key="),
        (["--por", "8001"], "pass port="),
        (["--runn", "generate"], "served with --runner pooling"),
        (["--mode", "x"], "ambiguous"),  # --model, --model-impl, --model-loader-extra-config, ...
    ],
)
def test_abbreviated_flags_are_read_as_vllm_reads_them(user: list[str], message: str) -> None:
    """Regression: argparse reads a unique prefix as the whole flag (``--hos`` is ``--host``); the plan
    did not, so the exposure warning and the owned-flag guards were bypassed."""
    with pytest.raises(ServerStartError, match=message) as info:
        plan_launch(ORIGINAL, cpu=False, host="127.0.0.1", extra_args=user)
    assert SECRET not in str(info.value)


def test_abbreviations_and_aliases_of_the_flags_the_plan_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    plan = plan_launch(ORIGINAL, cpu=False, extra_args=["--max-model", "2048"])
    assert (plan.max_model_len, "--max-model-len" in plan.args) == (2048, False)
    with pytest.raises(ServerStartError, match=r"every score becomes 0\.5"):
        plan_launch(CONVERTED, cpu=False, extra_args=["--hf-over", json.dumps(ORIGINAL_OVERRIDES)])
    # -t is the only single-dash option starting so: argparse reads it as -tp (--tensor-parallel-size).
    assert UserFlags(["-t", "2"]).int_value("--tensor-parallel-size", 1) == 2
    # vLLM 0.32's alias of --gpu-memory-utilization: vLLM sizes the KV cache itself.
    alias = plan_launch(ORIGINAL, cpu=True, extra_args=["--device-memory-utilization", "0.3"])
    assert alias.env == {}


def test_the_last_of_repeated_flags_and_the_dotted_keys_win_as_in_vllm() -> None:
    flags = UserFlags(["--max-model-len", "1024", "--max_model_len=2048", "--served-model-name", "a", "b"])
    assert flags.value("--max-model-len") == "2048"
    assert flags.values("--served-model-name") == ["a", "b"]
    # vLLM appends the dotted keys, merged, as one JSON flag after the others: it replaces the JSON one.
    dotted = UserFlags(["--hf-overrides.a", "1", '--hf-overrides={"b": 2}', "--hf-overrides.c+", "x,y"])
    assert dotted.json_value("--hf-overrides") == {"a": 1, "c": ["x", "y"]}
    assert UserFlags(["--max-model-len", "-1"]).value("--max-model-len") == "-1"  # a negative number


@pytest.mark.parametrize(
    ("user", "message"),
    [
        (["--max-model-len"], "needs a value"),
        (["--max-model-len", "--dtype", "float32"], "needs a value"),
        (["--enforce-eager=yes"], "takes no value"),
        (["--", "--host", "0.0.0.0"], "do not pass `--`"),
    ],
)
def test_lists_vllm_cannot_parse_are_refused(user: list[str], message: str) -> None:
    with pytest.raises(ServerStartError, match=message):
        UserFlags(user)


# --- --config files --------------------------------------------------------------------------------


def _yaml(tmp_path: Path, text: str, name: str = "serve.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_a_config_file_is_read_like_the_command_line(tmp_path: Path) -> None:
    """Regression: vLLM reads flags from ``--config FILE.yaml``; the plan did not look inside."""
    exposed = _yaml(tmp_path, "host: 0.0.0.0\n")
    with pytest.raises(ServerStartError, match=r"pass host=.*|here in --config") as info:
        plan_launch(ORIGINAL, cpu=False, extra_args=["--config", exposed])
    assert f"--config {exposed}" in str(info.value)
    overrides = _yaml(tmp_path, f"hf_overrides: {json.dumps(ORIGINAL_OVERRIDES)}\n", "o.yaml")
    with pytest.raises(ServerStartError, match=r"every score becomes 0\.5"):
        plan_launch(CONVERTED, cpu=False, extra_args=["--config", overrides])
    key = _yaml(tmp_path, f"api-key: {SECRET}\n", "k.yml")
    with pytest.raises(ServerStartError, match="pass api_key=") as refused:
        plan_launch(ORIGINAL, cpu=False, extra_args=["--config", key])
    assert SECRET not in str(refused.value)
    length = _yaml(tmp_path, "max-model-len: 2048\nenable-prefix-caching: false\n", "len.yaml")
    plan = plan_launch(ORIGINAL, cpu=True, extra_args=["--config", length, "--dtype", "float32"])
    assert plan.max_model_len == 2048
    assert "--max-model-len" not in plan.args
    assert "--block-size" not in plan.args  # the file turned prefix caching off
    assert UserFlags(["--config", length, "--max-model-len", "512"]).value("--max-model-len") == "512"


@pytest.mark.parametrize(
    ("text", "name", "message"),
    [
        ("host: [unclosed\n", "bad.yaml", "not valid YAML"),
        ("- a list\n", "list.yaml", "must hold a mapping"),
        ("host: 0.0.0.0\n", "serve.json", "only .yaml / .yml"),
    ],
)
def test_config_files_vllm_cannot_read_are_refused(
    tmp_path: Path, text: str, name: str, message: str
) -> None:
    with pytest.raises(ServerStartError, match=message):
        plan_launch(ORIGINAL, cpu=False, extra_args=["--config", _yaml(tmp_path, text, name)])
    with pytest.raises(ServerStartError, match="more than once"):
        UserFlags(["--config", "a.yaml", "--config", "b.yaml"])
    with pytest.raises(ServerStartError, match="cannot read it"):
        UserFlags(["--config", str(tmp_path / "missing.yaml")])


def test_without_pyyaml_a_config_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "yaml", None)  # `import yaml` raises ImportError
    with pytest.raises(ServerStartError, match=r"needs PyYAML.*Pass the flags directly"):
        plan_launch(ORIGINAL, cpu=False, extra_args=["--config", _yaml(tmp_path, "host: 0.0.0.0\n")])


# --- IPv6 hosts --------------------------------------------------------------------------------------


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def test_ipv6_hosts_are_bracketed_in_urls() -> None:
    assert url_host("::1") == "[::1]"
    assert url_host("::") == "[::1]"
    assert url_host("fe80::1%eth0") == "[fe80::1%eth0]"
    assert url_host("0.0.0.0") == "127.0.0.1"
    assert url_host("localhost") == "localhost"
    server = VLLMServer("unused", host="::1", port=8000)
    assert server.base_url == "http://[::1]:8000"


def test_an_ipv6_port_is_checked_on_ipv6(tmp_path: Path) -> None:
    """Regression: ``VLLMServer(host="::1")`` bound an IPv4 socket to "::1" (socket.gaierror)."""
    assert _has_ipv6_loopback(), "this machine has no IPv6 loopback"
    (tmp_path / "config.json").write_text(json.dumps(ORIGINAL))
    env = {"PYTHONPATH": str(fake_vllm(tmp_path))}
    server = VLLMServer(tmp_path, host="::1", python=sys.executable, env=env)
    command = server.command()  # chose a free port on ::1
    assert command[command.index("--host") + 1] == "::1"
    assert server.base_url == f"http://[::1]:{server.port}"
    with socket.socket(socket.AF_INET6) as busy:
        busy.bind(("::1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        taken = VLLMServer(tmp_path, host="::1", port=port, python=sys.executable, env=env)
        with pytest.raises(ServerStartError, match=f"port {port} on ::1 is already in use"):
            taken.start()


# --- the API key: in the child's environment, never in its argv or a log -----------------------------


def test_the_api_key_reaches_vllm_through_its_environment_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: ``api_key`` was passed as ``--api-key KEY``, readable in /proc/PID/cmdline by every
    local user, and logged with the command at debug level."""
    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    (tmp_path / "config.json").write_text(json.dumps(ORIGINAL))
    record = tmp_path / "record.json"
    env = {"PYTHONPATH": str(fake_vllm(tmp_path)), "FAKE_VLLM_RECORD": str(record)}
    server = VLLMServer(tmp_path, python=sys.executable, api_key=SECRET, env=env, startup_timeout=60)
    with caplog.at_level(logging.DEBUG, logger="qwen3_vllm_rerank"):
        with pytest.raises(ServerStartError, match="exited with code 3") as info:
            server.start()
    seen = json.loads(record.read_text())
    assert "vllm.entrypoints.openai.api_server" in seen["cmdline"]
    assert not [part for part in seen["cmdline"] if SECRET in part]
    assert seen["key"] == SECRET
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "command: " in logged
    assert SECRET not in logged
    assert SECRET not in str(info.value)
    assert SECRET not in " ".join(server.command())


def test_the_key_from_vllms_own_variable_is_the_servers_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """vLLM reads $VLLM_API_KEY by itself: the self-check must send that key too."""
    monkeypatch.setenv("VLLM_API_KEY", SECRET)
    assert VLLMServer("unused").api_key == SECRET
    monkeypatch.delenv("VLLM_API_KEY")
    assert VLLMServer("unused", env={"VLLM_API_KEY": SECRET}).api_key == SECRET
    assert VLLMServer("unused").api_key is None


def test_logged_commands_hide_api_keys_in_any_spelling() -> None:
    command = ["python", "--api-key", "a", "b", "--api_key=c", "--api-k", "d", "--dtype", "float32"]
    assert redact_command(command) == [
        "python",
        "--api-key",
        REDACTED,
        REDACTED,
        f"--api_key={REDACTED}",
        "--api-k",
        REDACTED,
        "--dtype",
        "float32",
    ]
    assert redact_command(["--served-model-name", f"x{SECRET}"], [SECRET]) == [
        "--served-model-name",
        REDACTED,
    ]
