"""The widely circulated recipe's trap, closed.

Serving a *converted* untied checkpoint (8B-style) with the *original-model* overrides
(``classifier_from_token`` + ``is_original_qwen3_reranker``) makes vLLM rebuild the
classifier from ``lm_head`` rows that the converted checkpoint no longer has: the vector
comes out zero and every score is exactly 0.5, with HTTP 200. These tests launch vLLM
that way on purpose (VLLMServer refuses to), show the symptom, and show the two guards:
VLLMServer's self-check rejects such a server, and VLLMServer never adds the overrides
to a converted checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from qwen3_vllm_rerank import RerankClient, ServerStartError, VLLMServer
from qwen3_vllm_rerank.convert import convert_checkpoint
from qwen3_vllm_rerank.serve._plan import ORIGINAL_OVERRIDES
from tests.support.fixtures import Checkpoints


@pytest.fixture(scope="module")
def converted_untied(checkpoints: Checkpoints, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return convert_checkpoint(
        checkpoints.get("untied"), tmp_path_factory.mktemp("trap") / "converted", progress=False
    )


@contextlib.contextmanager
def raw_vllm(python: str, model: Path, args: list[str], log: Path) -> Iterator[str]:
    """vLLM launched directly, without VLLMServer's checks; yields its base URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model)]
    command += ["--host", "127.0.0.1", "--port", str(port), *args]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while True:
            assert process.poll() is None, f"vLLM exited: {log.read_text()[-3000:]}"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base_url}/health", timeout=5).status_code == 200:
                    break
            assert time.monotonic() < deadline, "vLLM did not start in 600 s"
            time.sleep(0.5)
        yield base_url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


@pytest.mark.usefixtures("server_room")  # it starts a vLLM server of its own
def test_converted_untied_with_original_overrides_scores_half_and_the_self_check_refuses_it(
    converted_untied: Path, server_python: str, tmp_path: Path
) -> None:
    overrides = ["--hf-overrides", json.dumps(ORIGINAL_OVERRIDES)]
    args = ["--runner", "pooling", *overrides, "--dtype", "float32", "--max-model-len", "2048"]
    with raw_vllm(server_python, converted_untied, args, tmp_path / "vllm.log") as base_url:
        with RerankClient(base_url) as client:
            scores = client.score(
                "What is the capital of France?",
                ["Paris is the capital of France.", "Bananas are rich in potassium.", "yes", ""],
            )
        assert scores == [0.5, 0.5, 0.5, 0.5], "the trap: HTTP 200, every score exactly 0.5"

        # VLLMServer runs this self-check on every server it starts; pointed at this one, it refuses.
        port = int(base_url.rsplit(":", 1)[1])
        with pytest.raises(ServerStartError, match="degenerate scores"):
            VLLMServer(converted_untied, port=port).check_scores()


def test_vllm_server_never_adds_the_overrides_to_a_converted_checkpoint(
    converted_untied: Path, server_python: str
) -> None:
    command = VLLMServer(converted_untied, python=server_python).command()
    assert "--hf-overrides" not in command
    assert command[command.index("--runner") + 1] == "pooling"

    # Passing them by hand is refused before any process starts.
    server = VLLMServer(
        converted_untied,
        python=server_python,
        extra_args=["--hf-overrides", json.dumps(ORIGINAL_OVERRIDES)],
    )
    with pytest.raises(ServerStartError, match=r"every score becomes 0\.5"):
        server.start()
    assert server.process is None
