"""The ``qwen3-vllm-rerank`` command line, every subcommand, against real checkpoints and servers."""

from __future__ import annotations

import io
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import psutil
import pytest
from safetensors import safe_open

from qwen3_vllm_rerank import RerankClient
from qwen3_vllm_rerank.cli import main
from qwen3_vllm_rerank.errors import ConversionError
from tests.support.fixtures import Checkpoints, Served
from tests.support.processes import descendants, read_alive

pytestmark = pytest.mark.heavy  # runs the CLI in subprocesses on fixture checkpoints

CLI = str(Path(sys.executable).parent / "qwen3-vllm-rerank")
COMMANDS = ["convert", "serve", "rerank", "make-fixture"]
QUERY = "What is the capital of France?"
DOCS = ["Bananas are rich in potassium.", "Paris is the capital and largest city of France.", "Berlin"]


def _run(*args: str, stdin: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], input=stdin, capture_output=True, text=True, timeout=timeout)


def _one_error_line(stderr: str, expected: str) -> None:
    lines = [line for line in stderr.splitlines() if line.startswith("qwen3-vllm-rerank: error:")]
    assert len(lines) == 1, stderr
    assert expected in lines[0]
    assert "Traceback" not in stderr


# --- help and usage -------------------------------------------------------------------------


def test_help_for_every_command() -> None:
    top = _run("--help")
    assert top.returncode == 0
    for command in COMMANDS:
        assert command in top.stdout
        result = _run(command, "--help")
        assert result.returncode == 0, result.stderr
        assert f"usage: qwen3-vllm-rerank {command}" in result.stdout
        assert "--debug" in result.stdout


def test_usage_errors_exit_2() -> None:
    assert _run().returncode == 2
    assert _run("frobnicate").returncode == 2
    result = _run("convert", "a", "b", "--", "extra")
    assert result.returncode == 2
    assert "unexpected arguments after --" in result.stderr
    assert _run("rerank", "--query", "q", "--top-n", "0", "doc").returncode == 2


# --- make-fixture and convert -----------------------------------------------------------------


def test_make_fixture(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "fixture"
    assert main(["make-fixture", str(target), "--untied", "--dtype", "bfloat16", "--seed", "3"]) == 0
    assert f"wrote {target}" in capsys.readouterr().out
    config = json.loads((target / "config.json").read_text())
    assert config["tie_word_embeddings"] is False
    assert config["dtype"] == "bfloat16"
    with safe_open(str(target / "model.safetensors"), framework="pt") as handle:
        assert "lm_head.weight" in handle.keys()  # noqa: SIM118 - safe_open is not a mapping
    assert main(["make-fixture", str(target)]) == 1
    _one_error_line(capsys.readouterr().err, "already holds a checkpoint")


def test_make_fixture_vl(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--vl: a tiny Qwen3-VL reranker with the real tokenizer and the processor files a published one
    ships; it converts like a real one."""
    target = tmp_path / "vl"
    assert main(["make-fixture", str(target), "--vl", "--untied"]) == 0
    assert f"wrote {target}" in capsys.readouterr().out
    config = json.loads((target / "config.json").read_text())
    assert config["architectures"] == ["Qwen3VLForConditionalGeneration"]
    assert config["tie_word_embeddings"] is False
    for name in ("tokenizer.json", "preprocessor_config.json", "chat_template.jinja"):
        assert (target / name).is_file(), name
    assert main(["convert", str(target), str(tmp_path / "converted"), "--link"]) == 0
    converted = json.loads((tmp_path / "converted" / "config.json").read_text())
    assert converted["architectures"] == ["Qwen3VLForSequenceClassification"]


def test_convert_then_refuse_to_overwrite(
    checkpoints: Checkpoints, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, target = checkpoints.get("untied"), tmp_path / "converted"
    assert main(["convert", str(source), str(target), "--link", "--no-verify"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {target}" in out
    assert "not verified" in out
    assert json.loads((target / "config.json").read_text())["architectures"] == [
        "Qwen3ForSequenceClassification"
    ]
    shard = "model-00001-of-00003.safetensors"
    assert (target / shard).stat().st_ino == (source / shard).stat().st_ino  # --link

    assert main(["convert", str(source), str(target)]) == 1
    _one_error_line(capsys.readouterr().err, "is not empty; pass a new or empty directory")
    with pytest.raises(ConversionError, match="not empty"):
        main(["convert", str(source), str(target), "--debug"])


def test_convert_verifies_by_default(
    checkpoints: Checkpoints, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["convert", str(checkpoints.get("tied")), str(tmp_path / "out")]) == 0
    captured = capsys.readouterr()
    assert "verified against the original" in captured.out
    assert "max |difference|" in captured.err  # the library's log line


def test_convert_error_is_one_line_without_traceback(checkpoints: Checkpoints, tmp_path: Path) -> None:
    result = _run("convert", str(checkpoints.get("tied")), str(tmp_path / "out"), "--yes-token", "yes please")
    assert result.returncode == 1
    _one_error_line(result.stderr, "'yes please' is not a single token")
    debug = _run(
        "--debug", "convert", str(checkpoints.get("tied")), str(tmp_path / "out"), "--yes-token", "x y"
    )
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr
    assert "ConversionError" in debug.stderr


# --- rerank -----------------------------------------------------------------------------------


def test_rerank_prints_a_table_best_first(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rerank", "--base-url", served.base_url, "--query", QUERY, *DOCS]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["rank", "index", "score", "document"]
    with RerankClient(served.base_url) as client:
        expected = client.rerank(QUERY, DOCS)
    rows = [line.split(None, 3) for line in lines[1:]]
    assert [int(row[1]) for row in rows] == [r.index for r in expected]
    assert [float(row[2]) for row in rows] == [round(r.score, 4) for r in expected]
    assert [row[3] for row in rows] == [r.document for r in expected]


def test_rerank_json_top_n_and_instruction(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    instruction = "Given a question, retrieve passages that answer it"
    args = ["rerank", "--base-url", served.base_url, "-q", QUERY, "--top-n", "2", "--json"]
    assert main([*args, "--instruction", instruction, "--model", served.model, *DOCS]) == 0
    rows = json.loads(capsys.readouterr().out)
    with RerankClient(served.base_url) as client:
        expected = client.rerank(QUERY, DOCS, top_n=2, instruction=instruction)
    assert rows == [
        {"rank": i, "index": r.index, "score": r.score, "document": r.document}
        for i, r in enumerate(expected, 1)
    ]


@pytest.mark.parametrize(
    "stdin",
    [
        "\n".join(DOCS) + "\n\n",
        "\n".join(json.dumps({"text": d, "id": i}) for i, d in enumerate(DOCS)),
        "\n".join(json.dumps(d) for d in DOCS),
    ],
    ids=["lines", "json-objects", "json-strings"],
)
def test_rerank_reads_documents_from_stdin(
    served: Served, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, stdin: str
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    assert main(["rerank", "--base-url", served.base_url, "-q", QUERY, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert sorted(row["document"] for row in rows) == sorted(DOCS)
    assert rows[0]["document"] == DOCS[1]


def test_rerank_documents_after_double_dash(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rerank", "--base-url", served.base_url, "-q", QUERY, "--json", "--", "-v", "--x"]) == 0
    assert sorted(row["document"] for row in json.loads(capsys.readouterr().out)) == ["--x", "-v"]


def test_rerank_errors_are_one_line(
    served: Served, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO('{"text": "ok"}\nnot json\n'))
    assert main(["rerank", "--base-url", served.base_url, "-q", QUERY]) == 1
    _one_error_line(capsys.readouterr().err, "stdin line 2: not JSON")
    monkeypatch.setattr("sys.stdin", io.StringIO('{"title": "no text"}\n'))
    assert main(["rerank", "--base-url", served.base_url, "-q", QUERY]) == 1
    _one_error_line(capsys.readouterr().err, 'an object with a "text" string')
    monkeypatch.setattr("sys.stdin", io.StringIO("\n\n"))
    assert main(["rerank", "--base-url", served.base_url, "-q", QUERY]) == 1
    _one_error_line(capsys.readouterr().err, "no documents on stdin")

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = _run("rerank", "--base-url", f"http://127.0.0.1:{port}", "-q", QUERY, "doc", timeout=60)
    assert result.returncode == 1
    _one_error_line(result.stderr, f"cannot connect to the vLLM server at http://127.0.0.1:{port}")


# --- serve ------------------------------------------------------------------------------------


def _lines(stream: IO[str]) -> queue.Queue[str | None]:
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _runs_vllm(children: list[psutil.Process]) -> bool:
    """Whether one of the CLI's children is vLLM's server."""
    return any("vllm.entrypoints" in " ".join(line) for line in read_alive(children, psutil.Process.cmdline))


def _serve(
    model: Path, server_python: str, tmp_path: Path, host: str = "127.0.0.1"
) -> tuple[subprocess.Popen[str], Path]:
    stderr = tmp_path / "stderr.txt"
    command = [CLI, "serve", str(model), "--host", host, "--port", "0", "--python", server_python]
    command += ["--log-file", str(tmp_path / "vllm.log"), "--", "--dtype", "float32"]
    with stderr.open("w") as err:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=err, text=True, preexec_fn=_as_if_from_a_terminal
        )
    return process, stderr


def _as_if_from_a_terminal() -> None:
    """Ctrl-C reaches a command typed at a terminal. A suite started as a background job
    (``cmd &``, as CI may run it) inherits SIGINT ignored, and ``serve`` rightly keeps
    ignored signals ignored, so give the child the terminal's default back."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_serve_prints_how_to_use_it_streams_the_log_and_stops_on_ctrl_c(
    checkpoints: Checkpoints, server_python: str, tmp_path: Path
) -> None:
    process, stderr = _serve(checkpoints.get("tied"), server_python, tmp_path, host="0.0.0.0")
    try:
        assert process.stdout is not None
        lines = _lines(process.stdout)
        out: list[str] = []
        deadline = time.monotonic() + 600
        while not out or "Press Ctrl-C to stop." not in out[-1]:
            line = lines.get(timeout=max(deadline - time.monotonic(), 1))
            assert line is not None, f"serve exited early: {stderr.read_text()[-3000:]}"
            out.append(line)
        text = "".join(out)
        match = re.search(r"at (http://127\.0\.0\.1:\d+) \(original checkpoint", text)
        assert match, text
        assert "\nWARNING: binding 0.0.0.0 without an API key: every endpoint" in text
        base_url = match.group(1)
        model = str(checkpoints.get("tied"))
        kwargs = f"Qwen3VLLMReranker(base_url={base_url!r}, model={model!r}, top_n=3)"
        for module in ("langchain_qwen3_vllm_rerank", "llama_index.postprocessor.qwen3_vllm_rerank"):
            assert f"from {module} import Qwen3VLLMReranker\n    reranker = {kwargs}" in text
        with RerankClient(base_url) as client:
            assert len(client.score(QUERY, DOCS)) == 3
        # vLLM's own log is streamed to stderr.
        log_start = (tmp_path / "vllm.log").read_text().splitlines()[0]
        assert log_start in stderr.read_text()

        children = descendants(process.pid)
        assert _runs_vllm(children)
        process.send_signal(signal.SIGINT)
        assert process.wait(300) == 0  # generous: a loaded 2-core machine stops vLLM slowly
        assert "SIGINT received, stopping vLLM" in stderr.read_text()
        _, alive = psutil.wait_procs(children, timeout=30)
        assert alive == [], "no vLLM process outlives the CLI"
    finally:
        if process.poll() is None:
            process.kill()


def test_serve_stops_cleanly_on_sigterm_during_startup(
    checkpoints: Checkpoints, server_python: str, tmp_path: Path
) -> None:
    process, stderr = _serve(checkpoints.get("tied"), server_python, tmp_path)
    try:
        deadline = time.monotonic() + 120
        children: list[psutil.Process] = []
        while not _runs_vllm(children):
            assert process.poll() is None, stderr.read_text()
            assert time.monotonic() < deadline, "vLLM was never launched"
            time.sleep(0.2)
            children = descendants(process.pid)
        time.sleep(3)  # vLLM is busy importing / starting its engine
        children = descendants(process.pid)
        process.send_signal(signal.SIGTERM)
        assert process.wait(300) == 0  # generous: a loaded 2-core machine stops vLLM slowly
        assert "SIGTERM received, stopping vLLM" in stderr.read_text()
        _, alive = psutil.wait_procs(children, timeout=30)
        assert alive == []
    finally:
        if process.poll() is None:
            process.kill()


def test_serve_reports_a_bad_checkpoint_in_one_line(tmp_path: Path) -> None:
    result = _run("serve", str(tmp_path), "--port", "0", "--quiet", timeout=120)
    assert result.returncode == 1
    _one_error_line(result.stderr, "has no config.json")


def test_serve_on_a_network_host_says_which_paths_the_api_key_leaves_open(tmp_path: Path) -> None:
    """The warning comes before vLLM starts: here an interpreter without vLLM makes the start fail at once."""
    config = {
        "architectures": ["Qwen3ForCausalLM"],
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 128,
        "hidden_size": 128,
        "max_position_embeddings": 40960,
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    args = ["--host", "0.0.0.0", "--api-key", "k", "--port", "0", "--quiet", "--python", sys.executable]
    result = _run("serve", str(tmp_path), *args, timeout=120)
    assert result.returncode == 1
    warning = (
        "qwen3-vllm-rerank: binding 0.0.0.0: --api-key guards only paths under /v1, /v2, /inference, /cohere"
    )
    assert warning in result.stderr
    assert "/score, /rerank, /classify, /pooling" in result.stderr
    _one_error_line(result.stderr, "vLLM exited with code 1 while starting")


def test_serve_debug_never_shows_the_api_key(tmp_path: Path) -> None:
    """Regression: ``serve --debug`` logged vLLM's command line with ``--api-key KEY`` in it. Here an
    interpreter without vLLM makes the start fail at once, after the command was logged; the key comes
    from the command line, then from $VLLM_API_KEY (which keeps it off the CLI's own command line)."""
    config = {
        "architectures": ["Qwen3ForCausalLM"],
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 128,
        "hidden_size": 128,
        "max_position_embeddings": 40960,
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    secret = "cli-secret-do-not-print"
    args = ["--port", "0", "--quiet", "--python", sys.executable]
    flag = _run("serve", "--debug", str(tmp_path), "--api-key", secret, *args, timeout=120)
    assert "command: " in flag.stderr
    assert secret not in flag.stdout + flag.stderr
    assert "readable by every local user" in flag.stderr  # and a hint to use the variable instead
    env = {**os.environ, "VLLM_API_KEY": secret}
    variable = subprocess.run(
        [CLI, "serve", "--debug", str(tmp_path), *args], capture_output=True, text=True, timeout=120, env=env
    )
    assert "command: " in variable.stderr
    assert secret not in variable.stdout + variable.stderr
    assert "readable by every local user" not in variable.stderr
