"""VLLMServer: the flags it chooses, and its process lifecycle against real vLLM."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import psutil
import pytest

from qwen3_vllm_rerank import RerankClient, ServerStartError, VLLMServer
from qwen3_vllm_rerank.server import ORIGINAL_OVERRIDES, checkpoint_kind, plan_launch

from .conftest import Checkpoints, Served

ORIGINAL = {
    "architectures": ["Qwen3ForCausalLM"],
    "num_hidden_layers": 28,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "hidden_size": 1024,
    "max_position_embeddings": 40960,
    "torch_dtype": "bfloat16",
}
CONVERTED = {**ORIGINAL, "architectures": ["Qwen3ForSequenceClassification"], "num_labels": 1}


def test_original_checkpoint_gets_the_overrides() -> None:
    plan = plan_launch(ORIGINAL, cpu=False)
    assert plan.kind == "original"
    i = plan.args.index("--hf-overrides")
    assert json.loads(plan.args[i + 1]) == ORIGINAL_OVERRIDES
    assert plan.args[:2] == ["--runner", "pooling"]
    assert plan.max_model_len == 8192


def test_converted_checkpoint_never_gets_the_overrides() -> None:
    plan = plan_launch(CONVERTED, cpu=False)
    assert plan.kind == "converted"
    assert "--hf-overrides" not in plan.args
    with pytest.raises(ServerStartError, match=r"every score becomes 0\.5"):
        plan_launch(
            CONVERTED,
            cpu=False,
            extra_args=["--hf-overrides", json.dumps(ORIGINAL_OVERRIDES)],
        )


def test_cpu_plan_sizes_the_kv_cache_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    plan = plan_launch(ORIGINAL, cpu=True)
    # 0.6B shape in bf16: 112 KiB per token; four 8192-token sequences need 3.5 GiB.
    assert plan.env == {"VLLM_CPU_KVCACHE_SPACE": "4"}
    assert "VLLM_CPU_KVCACHE_SPACE=4" in plan.describe()
    assert plan.max_model_len == 8192
    user = plan_launch(ORIGINAL, cpu=True, env={"VLLM_CPU_KVCACHE_SPACE": "1"})
    assert user.env == {}


def test_user_max_model_len_wins() -> None:
    plan = plan_launch(ORIGINAL, cpu=False, extra_args=["--max-model-len", "2048"])
    assert "--max-model-len" not in plan.args
    assert plan.max_model_len == 2048
    assert plan_launch(ORIGINAL, cpu=False, max_model_len=1024).max_model_len == 1024


def test_not_a_reranker_is_refused() -> None:
    with pytest.raises(ServerStartError, match="not a Qwen3-Reranker checkpoint"):
        checkpoint_kind({"architectures": ["LlamaForCausalLM"]})


def test_running_server_binds_loopback_and_answers(served: Served) -> None:
    assert served.base_url.startswith("http://127.0.0.1:")
    process = served.server.process
    assert process is not None
    assert process.poll() is None
    with RerankClient(served.base_url) as client:
        assert len(client.score("q", ["a", "b"])) == 2


def test_busy_port_is_refused_before_starting(checkpoints: Checkpoints, server_python: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        server = VLLMServer(checkpoints.get("tied"), port=port, python=server_python)
        with pytest.raises(ServerStartError, match=f"port {port}"):
            server.start()
    assert server.process is None


def test_crash_during_start_raises_with_the_log_tail(
    checkpoints: Checkpoints, server_python: str, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    config = json.loads((checkpoints.get("tied") / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps(config))  # no weights, no tokenizer
    server = VLLMServer(broken, python=server_python, startup_timeout=300)
    with pytest.raises(ServerStartError, match="exited with code") as info:
        server.start()
    assert "Last lines of" in str(info.value)
    assert len(str(info.value).splitlines()) > 3
    assert server.process is None


def test_stop_leaves_no_process_behind(checkpoints: Checkpoints, server_python: str) -> None:
    with VLLMServer(
        checkpoints.get("tied"), python=server_python, extra_args=["--dtype", "float32"]
    ) as server:
        process = server.process
        assert process is not None
        children = psutil.Process(process.pid).children(recursive=True)
        assert children, "vLLM runs its engine in child processes"
        with RerankClient(server.base_url) as client:
            assert len(client.score("q", ["a"])) == 1
    assert process.poll() is not None
    _, alive = psutil.wait_procs(children, timeout=10)
    assert alive == []


PARENT_SCRIPT = """
import sys, time
from qwen3_vllm_rerank import VLLMServer
server = VLLMServer(sys.argv[1], python=sys.argv[2], extra_args=["--dtype", "float32"]).start()
print(server.base_url, server.process.pid, flush=True)
while True:
    time.sleep(1)
"""


async def test_server_killed_mid_batch_and_parent_sigterm_leave_nothing_behind(
    checkpoints: Checkpoints, server_python: str, tmp_path: Path
) -> None:
    """SIGTERM to the Python process that owns a VLLMServer stops vLLM too; calls then fail loudly."""
    import asyncio
    import signal
    import subprocess
    import sys

    from qwen3_vllm_rerank import AsyncRerankClient, Qwen3RerankError, RerankConnectionError

    script = tmp_path / "parent.py"
    script.write_text(PARENT_SCRIPT)
    parent = subprocess.Popen(
        [sys.executable, str(script), str(checkpoints.get("tied")), server_python],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(parent.stdout.readline), timeout=600)
        base_url, pid = line.split()
        vllm = psutil.Process(int(pid))
        family = [vllm, *vllm.children(recursive=True)]
        async with AsyncRerankClient(base_url, batch_size=50, max_concurrency=4, max_attempts=2) as client:
            assert len(await client.score("q", ["warm-up"])) == 1
            batch = asyncio.create_task(client.score("q", [f"document {i}" for i in range(3000)]))
            await asyncio.sleep(0.5)
            parent.send_signal(signal.SIGTERM)
            with pytest.raises(Qwen3RerankError):  # never a partial list
                await batch
            _, alive = psutil.wait_procs(family, timeout=60)
            assert alive == [], "vLLM outlived its parent"
            with pytest.raises(RerankConnectionError, match="cannot connect"):
                await client.score("q", ["after"])
    finally:
        parent.kill()
        parent.wait()
