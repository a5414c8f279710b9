"""VLLMServer: the flags it chooses, its process lifecycle, and real servers on the network, with data
parallelism, with the CPU's dtype and for Qwen3-VL."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from qwen3_vllm_rerank import RerankClient, ServerStartError, VLLMServer
from qwen3_vllm_rerank.serve._cpu import choose_dtype, read_cpu_info
from qwen3_vllm_rerank.serve._plan import (
    ORIGINAL_OVERRIDES,
    UNGUARDED_PATHS,
    VL_ORIGINAL_OVERRIDES,
    identify_checkpoint,
    plan_launch,
)
from qwen3_vllm_rerank.serve._process import EXEC_WITH_PARENT_DEATH_SIGNAL, PARENT_GONE_EXIT_CODE, spawn
from qwen3_vllm_rerank.serve._self_check import check_image_scores
from qwen3_vllm_rerank.testing import make_fixture_checkpoint
from tests.serve.exposure_checks import assert_exactly_the_listed_paths_are_open
from tests.support.fixtures import Checkpoints, Served, ServerPool
from tests.support.processes import descendants, read_alive
from tests.support.serving import TEST_API_KEY

from .published_configs import PUBLISHED_CONFIGS

ORIGINAL = PUBLISHED_CONFIGS["0.6B"]
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
        identify_checkpoint({"architectures": ["LlamaForCausalLM"]})


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


@pytest.mark.usefixtures("server_room")  # it starts a vLLM server of its own
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


@pytest.mark.usefixtures("server_room")  # it starts a vLLM server of its own
async def test_server_killed_mid_batch_and_parent_sigterm_leave_nothing_behind(
    checkpoints: Checkpoints, server_python: str, tmp_path: Path
) -> None:
    """SIGTERM to the Python process that owns a VLLMServer stops vLLM too; calls then fail loudly."""
    import asyncio
    import signal
    import subprocess
    import sys

    from qwen3_vllm_rerank import AsyncRerankClient, Qwen3RerankError, RerankConnectionError, RetryPolicy

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
        retry = RetryPolicy(max_attempts=2)
        async with AsyncRerankClient(base_url, batch_size=50, max_concurrency=4, retry=retry) as client:
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


# --- child processes: no Python between fork and exec, dead with their parent -----------------------

NO_PYTHON_IN_THE_CHILD = """
import os, subprocess, sys, threading
from qwen3_vllm_rerank.serve._process import spawn

marker = sys.argv[1]

def ran_in_the_child():  # runs only if Python code runs in a forked child before exec
    os.close(os.open(marker, os.O_WRONLY | os.O_CREAT, 0o600))

os.register_at_fork(after_in_child=ran_in_the_child)
threading.Thread(target=threading.Event().wait, daemon=True).start()  # another thread runs
child = spawn([sys.executable, "-c", "print('exec ok')"], env=dict(os.environ), stdout=subprocess.PIPE)
print(child.communicate()[0].decode().strip(), flush=True)
"""


def test_no_python_code_runs_between_fork_and_exec(tmp_path: Path) -> None:
    """Regression: ``preexec_fn`` ran Python in the forked child while other threads existed (the
    CLI's log follower), which Python documents can deadlock before exec."""
    script = tmp_path / "spawn.py"
    script.write_text(NO_PYTHON_IN_THE_CHILD)
    marker = tmp_path / "python-ran-in-the-child"
    result = subprocess.run(
        [sys.executable, str(script), str(marker)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "exec ok"
    assert not marker.exists(), "Python code ran in the forked child"


SLEEPER = "import time; print('child up', flush=True); time.sleep(600)"
PARENT_OF_A_SLEEPER = f"""
import os, subprocess, sys, time
from qwen3_vllm_rerank.serve._process import spawn

child = spawn([sys.executable, "-c", {SLEEPER!r}], env=dict(os.environ), stdout=subprocess.PIPE)
assert child.stdout.readline() == b"child up\\n"
print(child.pid, flush=True)
time.sleep(600)
"""


def test_a_child_dies_with_its_parent_even_on_sigkill(tmp_path: Path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(PARENT_OF_A_SLEEPER)
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child = psutil.Process(int(parent.stdout.readline()))
        assert child.is_running()
        parent.send_signal(signal.SIGKILL)  # no atexit, no handler: only the kernel can stop the child
        parent.wait(60)
        child.wait(60)  # raises psutil.TimeoutExpired if the child outlives its parent
    finally:
        parent.kill()
        parent.wait()


def test_a_child_outlives_the_thread_that_started_it(tmp_path: Path) -> None:
    """Linux sends the parent-death signal when the spawning *thread* ends: a server started from a
    short-lived thread (a UI callback, a worker) must not get it when that thread returns."""
    go = tmp_path / "go"
    child_code = textwrap.dedent(f"""
        import os, signal, time
        signal.signal(signal.SIGTERM, lambda *_: print("SIGTERM", flush=True))
        print("started", flush=True)  # after exec: the death signal is armed
        while not os.path.exists({str(go)!r}):
            time.sleep(0.05)
        print("alive", flush=True)
    """)
    started: dict[str, object] = {}

    def start() -> None:
        process = spawn([sys.executable, "-c", child_code], env=dict(os.environ), stdout=subprocess.PIPE)
        assert process.stdout is not None
        started.update(process=process, first=process.stdout.readline(), thread=threading.get_native_id())

    thread = threading.Thread(target=start)
    thread.start()
    thread.join()
    process = started["process"]
    assert isinstance(process, subprocess.Popen)
    assert started["first"] == b"started\n"
    while Path(f"/proc/self/task/{started['thread']}").exists():  # the OS thread is gone, not just Python's
        time.sleep(0.01)
    go.touch()
    out, _ = process.communicate(timeout=60)
    assert out == b"alive\n"


def test_the_wrapper_does_not_exec_when_its_parent_is_already_gone() -> None:
    """The parent may die before the child armed its death signal: then the command never starts."""
    wrapper = [sys.executable, "-I", "-S", "-c", EXEC_WITH_PARENT_DEATH_SIGNAL]
    gone = subprocess.run(
        [*wrapper, "1", sys.executable, "-c", "print('ran')"], capture_output=True, check=False
    )
    assert (gone.returncode, gone.stdout) == (PARENT_GONE_EXIT_CODE, b"")
    alive = subprocess.run(
        [*wrapper, str(os.getpid()), sys.executable, "-c", "print('ran')"], capture_output=True, check=False
    )
    assert (alive.returncode, alive.stdout) == (0, b"ran\n")


# --- one real server on the network: API key, data parallelism, the CPU's dtype ---------------------


@dataclass
class Exposed:
    """A server bound to 0.0.0.0 with an API key and two data-parallel engines, serving a bfloat16
    fixture with no --dtype (the plan chooses by CPU); ``warnings``: what start() logged as warnings."""

    server: VLLMServer
    warnings: list[str]
    log: Path


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def exposed(
    server_pool: ServerPool, server_python: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Exposed]:
    root = tmp_path_factory.mktemp("exposed")
    checkpoint = make_fixture_checkpoint(root / "bf16", dtype="bfloat16")
    log = root / "vllm.log"
    server = VLLMServer(
        checkpoint,
        host="0.0.0.0",
        python=server_python,
        api_key=TEST_API_KEY,
        extra_args=["--data-parallel-size", "2"],
        log_file=log,
    )
    records = _Records()
    logger = logging.getLogger("qwen3_vllm_rerank.server")
    with server_pool.room(6):  # two engines
        logger.addHandler(records)
        try:
            server.start()
        finally:
            logger.removeHandler(records)
        try:
            yield Exposed(server, records.messages, log)
        finally:
            server.stop()


def _network_address() -> str:
    """This machine's first non-loopback IPv4 address (a client from the network), else loopback."""
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family == socket.AF_INET and not address.address.startswith("127."):
                return str(address.address)
    return "127.0.0.1"


def test_a_network_host_with_an_api_key_says_which_paths_stay_open(exposed: Exposed) -> None:
    plan = exposed.server.plan
    assert plan is not None
    (warning,) = exposed.warnings
    assert warning.startswith(
        "binding 0.0.0.0: --api-key guards only paths under /v1, /v2, /inference, /cohere"
    )
    assert ", ".join(UNGUARDED_PATHS) in warning
    assert f"WARNING: {warning}" in plan.describe()


def test_exactly_the_listed_paths_answer_without_the_key(exposed: Exposed) -> None:
    """Against vLLM's real routes, from the network (tests/compat/ runs the same on every version)."""
    url = f"http://{_network_address()}:{exposed.server.port}"
    assert_exactly_the_listed_paths_are_open(url, exposed.server.served_model_name, TEST_API_KEY)


def test_two_data_parallel_engines_serve(exposed: Exposed) -> None:
    process = exposed.server.process
    assert process is not None
    names = set(read_alive(descendants(process.pid), psutil.Process.name))
    assert {"VLLM::EngineCore_DP0", "VLLM::EngineCore_DP1"} <= names, names
    assert exposed.server.plan is not None
    assert "per worker, 2 workers" in exposed.server.plan.summary()
    documents = ["Paris is in France.", "Bananas are yellow.", "Berlin is in Germany."] * 4
    with RerankClient(
        exposed.server.base_url, api_key=TEST_API_KEY, max_concurrency=4, batch_size=3
    ) as client:
        first = client.score("Where is Paris?", documents)
        assert client.score("Where is Paris?", documents) == first
    assert first[:3] * 4 == first  # the same document scores the same whichever engine ran it


def test_the_dtype_follows_the_cpu_on_a_real_start(exposed: Exposed) -> None:
    plan = exposed.server.plan
    assert plan is not None
    expected = choose_dtype("bfloat16", cpu=True, user_dtype=None, cpu_info=read_cpu_info())
    assert plan.dtype == expected.dtype
    assert expected.dtype in ("float32", "bfloat16")  # this machine's flags are readable
    assert f"dtype={expected.dtype} ({expected.reason})" in plan.summary()
    assert f"dtype=torch.{expected.dtype}" in exposed.log.read_text()  # what vLLM's engine runs in


# --- Qwen3-VL ----------------------------------------------------------------------------------------


def test_a_vl_checkpoint_is_served_with_its_flags_and_checked_with_images(vl_served: Served) -> None:
    served = vl_served  # started (self-check included) by VLLMServer
    plan = served.server.plan
    assert plan is not None
    assert (plan.family, plan.kind) == ("vl", "original")
    assert plan.summary().startswith("original Qwen3-VL checkpoint, max_model_len=8192")
    args = plan.args
    assert json.loads(args[args.index("--hf-overrides") + 1]) == VL_ORIGINAL_OVERRIDES
    assert json.loads(args[args.index("--mm-processor-kwargs") + 1]) == {
        "min_pixels": 4096,
        "max_pixels": 1843200,
    }
    assert json.loads(args[args.index("--limit-mm-per-prompt") + 1]) == {"image": 4, "video": 0}
    assert args[args.index("--allowed-media-domains") + 1] == "none.invalid"
    scores = check_image_scores(served.base_url, model=served.model, api_key=None)
    assert len(set(scores)) == 2
    assert all(0.0 < score < 1.0 for score in scores)


# --- the API key: in vLLM's environment, never on its command line; IPv6 loopback ------------------------


def _command_lines(pid: int) -> list[str]:
    """The command lines of a process and its descendants, as every local user can read them."""
    return [
        " ".join(line)
        for line in read_alive([psutil.Process(pid), *descendants(pid)], psutil.Process.cmdline)
    ]


def test_the_api_key_is_on_no_command_line_and_still_required(server_pool: ServerPool) -> None:
    """Regression: ``VLLMServer(api_key=...)`` started vLLM with ``--api-key KEY`` in its argv."""
    served = server_pool.get("api-key")
    process = served.server.process
    assert process is not None
    lines = _command_lines(process.pid)
    assert any("vllm.entrypoints.openai.api_server" in line for line in lines)
    assert not [line for line in lines if TEST_API_KEY in line]
    assert psutil.Process(process.pid).environ()["VLLM_API_KEY"] == TEST_API_KEY  # the owner's only
    pair = {"model": served.model, "text_1": "q", "text_2": ["a"]}
    with httpx.Client(base_url=served.base_url, timeout=120.0) as http:
        assert http.post("/v1/score", json=pair).status_code == 401
        key = {"Authorization": f"Bearer {TEST_API_KEY}"}
        assert http.post("/v1/score", json=pair, headers=key).status_code == 200


@pytest.mark.usefixtures("server_room")  # it starts a vLLM server of its own
def test_a_server_on_ipv6_loopback_with_an_api_key(
    checkpoints: Checkpoints, server_python: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression: ``VLLMServer(host="::1")`` raised socket.gaierror and would have built
    ``http://::1:PORT``; now it binds, checks scores (with the key) and answers on ``http://[::1]:PORT``,
    with the key in no command line and no log."""
    server = VLLMServer(
        checkpoints.get("tied"),
        host="::1",
        python=server_python,
        api_key=TEST_API_KEY,
        extra_args=["--dtype", "float32", "--max-model-len", "2048"],
    )
    with caplog.at_level(logging.DEBUG, logger="qwen3_vllm_rerank"), server:
        assert server.base_url == f"http://[::1]:{server.port}"
        process = server.process
        assert process is not None
        assert not [line for line in _command_lines(process.pid) if TEST_API_KEY in line]
        with RerankClient(server.base_url, api_key=TEST_API_KEY) as client:
            assert len(client.score("q", ["a", "b"])) == 2
        pair = {"model": server.served_model_name, "text_1": "q", "text_2": ["a"]}
        assert httpx.post(f"{server.base_url}/v1/score", json=pair, timeout=120.0).status_code == 401
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "command: " in logged
    assert TEST_API_KEY not in logged
