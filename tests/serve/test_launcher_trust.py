"""What the launcher sends, to whom, and what it puts on vLLM's command line: no request (and so no API
key) reaches a port another process bound first, none goes through a proxy from the environment, a
secret flag travels by environment, and server-side fetching stays off unless asked for. A stand-in
vLLM (``tests/support/fake_vllm.py``) plays the server: these are faults a real vLLM cannot produce on
demand, and the squatter is a real process-level race on loopback."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from qwen3_vllm_rerank import ServerStartError, VLLMServer
from qwen3_vllm_rerank.serve._plan import NO_MEDIA_DOMAIN, SERVER_MEDIA_FLAGS, plan_launch
from qwen3_vllm_rerank.serve._secrets import lift_secrets
from qwen3_vllm_rerank.serve._vllm_args import REDACTED, redact_command
from tests.support.fake_vllm import FAKE_EXIT_CODE, fake_vllm

#: Most of these start a stand-in vLLM in a subprocess (seconds each): heavy, out of the fast tier.
pytestmark = pytest.mark.heavy

ORIGINAL = {
    "architectures": ["Qwen3ForCausalLM"],
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 128,
    "hidden_size": 256,
    "max_position_embeddings": 4096,
    "torch_dtype": "bfloat16",
}
VL_ORIGINAL = {
    "architectures": ["Qwen3VLForConditionalGeneration"],
    "text_config": ORIGINAL,
    "vision_config": {"depth": 1},
}
API_KEY = "sk-launcher-key-do-not-leak"
HF_TOKEN = "hf_launcher-token-do-not-leak"


class _Recorder(BaseHTTPRequestHandler):
    """Answers like a reranker that passes the self-check (``/health`` 200, distinct scores) and records
    every request's method, path and headers on its server."""

    server: _RecordingServer

    def _answer(self) -> None:
        self.server.requests.append((self.command, self.path, dict(self.headers)))
        length = int(self.headers.get("Content-Length") or 0)
        request = json.loads(self.rfile.read(length)) if length else {}
        count = len(request.get("text_2") or []) if isinstance(request, dict) else 0
        body = json.dumps({"data": [{"index": i, "score": (i + 1) / (count + 1)} for i in range(count)]})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    do_GET = do_POST = do_CONNECT = _answer

    def log_message(self, *args: object) -> None:
        pass


class _RecordingServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int) -> None:
        super().__init__(("127.0.0.1", port), _Recorder)
        self.requests: list[tuple[str, str, dict[str, str]]] = []


def _serve(server: _RecordingServer) -> Iterator[_RecordingServer]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _checkpoint(root: Path, config: dict[str, object] = ORIGINAL) -> Path:
    checkpoint = root / "checkpoint"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text(json.dumps(config))
    return checkpoint


def _fake_env(root: Path, **extra: str) -> dict[str, str]:
    return {"PYTHONPATH": str(fake_vllm(root)), "FAKE_VLLM_RECORD": str(root / "record.json"), **extra}


# --- the port squatter ---------------------------------------------------------------------------------


class _Squatter(threading.Thread):
    """A local process's attack: read the port off vLLM's command line (``/proc/PID/cmdline``, readable
    by every local user), bind it before vLLM does, and answer like vLLM, recording what it receives."""

    def __init__(self, marker: str) -> None:
        super().__init__(daemon=True)
        self.marker = marker.encode()
        self.server: _RecordingServer | None = None
        self.victim: int | None = None  # the pid whose command line gave the port away
        self.bound = threading.Event()

    def _port(self) -> int | None:
        for entry in Path("/proc").iterdir():
            try:
                parts = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if self.marker in parts and b"--port" in parts:
                self.victim = int(entry.name)
                return int(parts[parts.index(b"--port") + 1])
        return None

    def run(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            port = self._port()
            if port is not None:
                self.server = _RecordingServer(port)
                self.bound.set()
                self.server.serve_forever()
                return
            time.sleep(0.005)

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def test_a_port_squatter_never_receives_the_api_key_and_start_fails(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression (issue 23, hole 3): a process that bound the chosen port first answered /health,
    received ``Bearer sk-...`` from the self-check, and ``start()`` said ready. Here the stand-in vLLM
    binds 20 s late, as a real one that is still importing; the squatter binds within milliseconds."""
    checkpoint = _checkpoint(tmp_path)
    env = _fake_env(tmp_path, FAKE_VLLM_SERVE="1", FAKE_VLLM_BIND_DELAY="20")
    server = VLLMServer(checkpoint, python=sys.executable, api_key=API_KEY, env=env, startup_timeout=60)
    squatter = _Squatter(str(checkpoint))
    squatter.start()
    started = time.monotonic()
    try:
        with caplog.at_level(logging.INFO, logger="qwen3_vllm_rerank"):
            with pytest.raises(ServerStartError, match=r"another process \(uid \d+\) holds port \d+") as info:
                server.start()
        assert squatter.bound.is_set()
        assert squatter.server is not None
        assert info.value.args[0].count(str(squatter.server.server_address[1])) >= 1
        assert squatter.server.requests == []  # not even /health: no request went to a port not proven ours
        assert time.monotonic() - started < 20, "start() waited for vLLM instead of refusing the port"
    finally:
        squatter.stop()
    assert server.process is None  # vLLM was stopped
    assert not Path(f"/proc/{squatter.victim}").exists()
    assert "vLLM is ready" not in caplog.text


def test_the_launcher_proves_its_own_child_holds_the_port_and_says_ready(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The proof passes when the socket is held by a process the child started (vLLM may bind there)."""
    env = _fake_env(tmp_path, FAKE_VLLM_SERVE="1", FAKE_VLLM_BIND_IN_CHILD="1")
    server = VLLMServer(_checkpoint(tmp_path), python=sys.executable, api_key=API_KEY, env=env)
    with caplog.at_level(logging.INFO, logger="qwen3_vllm_rerank"), server:
        assert httpx.get(f"{server.base_url}/health", timeout=10).status_code == 200
    assert "vLLM is ready at" in caplog.text
    assert "cannot prove" not in caplog.text


# --- no proxy from the environment ---------------------------------------------------------------------


@pytest.fixture
def proxy() -> Iterator[_RecordingServer]:
    yield from _serve(_RecordingServer(0))


def test_the_launchers_requests_never_go_through_an_environment_proxy(
    tmp_path: Path, proxy: _RecordingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Suspected in issue 23: httpx's ``trust_env`` would send /health and the self-check's Bearer key
    to ``HTTP(S)_PROXY``. The proxy below does receive an ordinary httpx request to the same server, so
    the environment is in effect; it receives nothing from the launcher."""
    url = f"http://127.0.0.1:{proxy.server_address[1]}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(name, url)
        monkeypatch.setenv(name.lower(), url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    env = _fake_env(tmp_path, FAKE_VLLM_SERVE="1")
    server = VLLMServer(_checkpoint(tmp_path), python=sys.executable, api_key=API_KEY, env=env)
    with server:
        assert proxy.requests == []
        httpx.get(f"{server.base_url}/health", timeout=10)  # trust_env=True: through the proxy
    ((method, path, _),) = proxy.requests
    assert (method, path) == ("GET", f"{server.base_url}/health")


# --- secret flags travel by environment ----------------------------------------------------------------


@pytest.mark.parametrize(
    "spelling",
    [["--hf-token", HF_TOKEN], [f"--hf-token={HF_TOKEN}"], ["--hf_token", HF_TOKEN], ["--hf-tok", HF_TOKEN]],
)
def test_hf_token_reaches_vllm_through_its_environment_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, spelling: list[str]
) -> None:
    """Regression (issue 23, hole 12): ``--hf-token`` sat on vLLM's command line and in the logged command."""
    monkeypatch.delenv("HF_TOKEN", raising=False)
    server = VLLMServer(
        _checkpoint(tmp_path),
        python=sys.executable,
        env=_fake_env(tmp_path),
        extra_args=["--dtype", "float32", *spelling, "--max-model-len", "2048"],
    )
    with caplog.at_level(logging.DEBUG, logger="qwen3_vllm_rerank"):
        with pytest.raises(ServerStartError, match=f"exited with code {FAKE_EXIT_CODE}") as info:
            server.start()
    seen = json.loads((tmp_path / "record.json").read_text())
    assert seen["hf_token"] == HF_TOKEN
    assert not [part for part in seen["cmdline"] if HF_TOKEN in part]
    assert seen["cmdline"][-5:-1] == ["--dtype", "float32", "--max-model-len", "2048"]  # the rest is kept
    assert "command: " in caplog.text
    assert HF_TOKEN not in caplog.text
    assert HF_TOKEN not in str(info.value)
    assert HF_TOKEN not in " ".join(server.command())
    assert server.plan is not None
    assert HF_TOKEN not in repr(server.plan) + server.plan.describe()


def test_a_bare_hf_token_uses_the_stored_login_and_stays() -> None:
    """``--hf-token`` alone (vLLM: use the stored login) holds no secret; the last occurrence wins."""
    assert lift_secrets(["--hf-token", "--dtype", "float32"]).args == ["--hf-token", "--dtype", "float32"]
    lifted = lift_secrets(["--hf-token", "old", "--hf-token"])  # vLLM uses the bare one: the login
    assert (lifted.args, lifted.env) == (["--hf-token"], {})
    lifted = lift_secrets(["--hf-token", "old", "--hf-token=new"])
    assert (lifted.args, lifted.env) == ([], {"HF_TOKEN": "new"})
    assert "new" not in repr(lifted)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--watermark-config", '{"key": 12345}'], "do not pass --watermark-config"),
        (["--model-loader-extra-config", '{"s3_secret_access_key": "x"}'], "s3_secret_access_key"),
        (["--model-loader-extra-config.s3_access_key_id", "x"], "s3_access_key_id"),
        (['--kv-transfer-config={"kv_connector_extra_config": {"password": "x"}}'], "password"),
        (["--hf-token.x", "y"], "cannot take off vLLM's command line"),
        (["--api-key", "k"], "pass api_key="),
    ],
)
def test_a_secret_with_no_environment_equivalent_is_refused(args: list[str], message: str) -> None:
    with pytest.raises(ServerStartError, match=message):
        plan_launch(ORIGINAL, cpu=False, extra_args=args)
    with pytest.raises(ServerStartError, match=message):
        lift_secrets(args)


def test_json_values_without_secret_keys_pass() -> None:
    """Token counts and the Qwen3 overrides' ``classifier_from_token`` are not secrets."""
    args = ["--hf-overrides", '{"classifier_from_token": ["no", "yes"]}', "--max-num-batched-tokens", "8k"]
    assert lift_secrets(args).args == args


def test_logged_commands_hide_every_secret_flag_in_any_spelling() -> None:
    command = ["--hf-token", "a", "--hf_tok=b", "--hf-token", "--dtype", "f", "--watermark-config", "{}"]
    assert redact_command(command) == [
        "--hf-token",
        REDACTED,
        f"--hf_tok={REDACTED}",
        "--hf-token",
        "--dtype",
        "f",
        "--watermark-config",
        REDACTED,
    ]


# --- server-side fetching: off unless asked for ----------------------------------------------------------


@pytest.mark.parametrize("config", [ORIGINAL, VL_ORIGINAL], ids=["text", "vl"])
@pytest.mark.parametrize(
    "args",
    [
        ["--allowed-media-domains", "images.example.com"],
        ["--allowed_media_domains=169.254.169.254"],
        ["--allowed-local-media-path", "/"],
        ["--allowed-local", "/srv"],
    ],
)
def test_flags_that_make_the_server_fetch_are_refused_by_default(
    config: dict[str, object], args: list[str]
) -> None:
    """Regression (issue 23, hole 15): these undid "the server fetches nothing" without a word."""
    with pytest.raises(ServerStartError, match="allow_server_media=True") as info:
        plan_launch(config, cpu=False, extra_args=args)
    assert "attacker-controlled" in str(info.value)


def test_a_config_file_cannot_turn_server_fetching_on_either(tmp_path: Path) -> None:
    config = tmp_path / "vllm.yaml"
    config.write_text("allowed-local-media-path: /\n")
    with pytest.raises(ServerStartError, match=r"--allowed-local-media-path \(here in --config"):
        plan_launch(ORIGINAL, cpu=False, extra_args=["--config", str(config)])


def test_server_fetching_on_request_is_passed_with_a_warning() -> None:
    args = ["--allowed-media-domains", "images.example.com", "--allowed-local-media-path", "/srv/pages"]
    plan = plan_launch(VL_ORIGINAL, cpu=False, extra_args=args, allow_server_media=True)
    assert NO_MEDIA_DOMAIN not in plan.args  # the user's domains are the ones vLLM gets
    (warning,) = [w for w in plan.warnings if w.startswith("allow_server_media")]
    assert "http(s) image URLs on images.example.com; files under /srv/pages" in warning
    assert set(SERVER_MEDIA_FLAGS) == {"--allowed-media-domains", "--allowed-local-media-path"}


def test_by_default_a_vl_server_fetches_from_no_domain() -> None:
    plan = plan_launch(VL_ORIGINAL, cpu=False)
    assert plan.args[plan.args.index("--allowed-media-domains") + 1] == NO_MEDIA_DOMAIN
    assert "--allowed-local-media-path" not in plan.args  # vLLM's default: no file is read
    assert not [w for w in plan.warnings if "allow_server_media" in w]


def test_vllm_server_passes_the_opt_in_to_the_plan(tmp_path: Path) -> None:
    args = ["--allowed-media-domains", "images.example.com"]
    env = _fake_env(tmp_path)
    refused = VLLMServer(_checkpoint(tmp_path), python=sys.executable, env=env, extra_args=args)
    with pytest.raises(ServerStartError, match="allow_server_media=True"):
        refused.command()
    allowed = VLLMServer(
        tmp_path / "checkpoint", python=sys.executable, env=env, extra_args=args, allow_server_media=True
    )
    assert allowed.command()[-2:] == args
