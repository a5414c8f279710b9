"""scripts/demo's choice of checkpoint: the real Qwen3-Reranker-0.6B when the Hugging Face hub answers,
the random-weight fixture otherwise, decided quickly (this machine has no hub). The ranked table itself
is tested against the session's server in test_examples.py."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo.py"
REAL_MODEL = "Qwen/Qwen3-Reranker-0.6B"
#: What the hub's model API lists for Qwen3-Reranker-0.6B (the fields the demo reads).
SIBLINGS = [
    {"rfilename": "model.safetensors", "size": 1_191_586_416},
    {"rfilename": "tokenizer.json", "size": 11_423_705},
    {"rfilename": "config.json", "size": 727},
]


def _which_model(endpoint: str | None, *extra: str, offline: bool = False) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_ENDPOINT", "HF_HUB_OFFLINE")}
    if endpoint:
        env["HF_ENDPOINT"] = endpoint
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    result = subprocess.run(
        [sys.executable, str(DEMO), "--which-model", *extra],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # nothing listens on it any more: connections are refused at once


@dataclass
class FakeHub:
    url: str
    requests: list[str]


@pytest.fixture
def fake_hub() -> Iterator[FakeHub]:
    """A local stand-in for the hub's model API, answering for Qwen3-Reranker-0.6B only."""
    requests: list[str] = []

    class Hub(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            found = self.path.startswith(f"/api/models/{REAL_MODEL}?")
            body = json.dumps({"id": REAL_MODEL, "siblings": SIBLINGS} if found else {"error": "nope"})
            self.send_response(200 if found else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, format: str, *args: object) -> None:  # keep the test output quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield FakeHub(f"http://127.0.0.1:{server.server_address[1]}", requests)
    finally:
        server.shutdown()
        server.server_close()


def test_without_the_hub_the_demo_falls_back_to_the_fixture() -> None:
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    notice = _which_model(endpoint)
    assert notice == (
        f"the Hugging Face hub at {endpoint} did not answer (ConnectError): serving a tiny random-weight "
        f"fixture instead of {REAL_MODEL}"
    )


def test_when_the_hub_answers_the_demo_uses_the_real_model_and_says_how_big_it_is(fake_hub: FakeHub) -> None:
    notice = _which_model(fake_hub.url)
    assert fake_hub.requests == [f"/api/models/{REAL_MODEL}?blobs=true"]
    assert notice.startswith(f"serving {REAL_MODEL} from the Hugging Face hub ({fake_hub.url})")
    assert "vLLM downloads about 1.2 GB the first time" in notice
    assert "--fixture" in notice


def test_offline_fixture_and_explicit_model_never_ask_the_hub(fake_hub: FakeHub) -> None:
    url = fake_hub.url
    assert _which_model(url, offline=True).startswith("HF_HUB_OFFLINE is set: serving a tiny random-weight")
    assert _which_model(url, "--fixture") == "serving a tiny random-weight fixture (--fixture)"
    assert _which_model(url, "--model", "/models/mine") == "serving /models/mine"
    assert (
        _which_model(url, "--base-url", "http://10.0.0.1:8000") == "using the server at http://10.0.0.1:8000"
    )
    assert fake_hub.requests == []
