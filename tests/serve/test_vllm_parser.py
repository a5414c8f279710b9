"""The launcher's reading of vLLM arguments against vLLM's own parser, run in the server's interpreter:
the option table is vLLM's, and for generated lists (abbreviations, aliases, underscores, inline values,
dotted JSON keys, ``--config`` files, repeated flags) every guarded flag is read as vLLM reads it, or
the list is refused."""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path
from typing import Any

import pytest

from qwen3_vllm_rerank import ServerStartError
from qwen3_vllm_rerank.serve._vllm_args import UserFlags, human_int
from qwen3_vllm_rerank.serve._vllm_options import VLLM_OPTIONS

pytestmark = pytest.mark.heavy  # imports vLLM in a subprocess (~25 s)

#: Parses each argument list of stdin's JSON with vLLM's server parser; prints the option table (each
#: option's strings as argparse matches them: vLLM 0.33 hides `--no-enable-x` from `option_strings` but
#: keeps it registered, so registered strings follow the declared ones), every option string's
#: destination and, per list, the namespace (or the error).
PARSE = """
import json, sys
from vllm.utils.argparse_utils import FlexibleArgumentParser
try:  # 0.33 moved it to entrypoints/common; 0.32 had it in launchers, 0.27 in openai
    from vllm.entrypoints.common.cli_args import make_arg_parser
except ImportError:
    try:
        from vllm.entrypoints.launchers.cli_args import make_arg_parser
    except ImportError:
        from vllm.entrypoints.openai.cli_args import make_arg_parser
lists = json.load(sys.stdin)
parser = make_arg_parser(FlexibleArgumentParser())
zero = ("_StoreTrueAction", "_StoreFalseAction", "_StoreConstAction", "_HelpAction", "_CountAction")
registered = {}
for string, action in parser._option_string_actions.items():
    registered.setdefault(id(action), []).append(string)
table = []
for action in parser._actions:
    if action.option_strings:
        nargs = "0" if type(action).__name__ in zero else {None: "1"}.get(action.nargs, str(action.nargs))
        hidden = [s for s in registered[id(action)] if s not in action.option_strings]
        table.append([action.option_strings + hidden, nargs])
dests = {string: action.dest for string, action in parser._option_string_actions.items()}
results = []
for args in [[]] + lists:
    try:
        results.append({"ns": vars(make_arg_parser(FlexibleArgumentParser()).parse_args(args))})
    except BaseException as exc:
        results.append({"error": repr(exc)})
print(json.dumps({"table": table, "dests": dests, "results": results}, default=repr))
"""

#: Guarded flag -> (vLLM's destination, how vLLM converts the text, values to draw).
GUARDED: dict[str, tuple[str, Any, list[str]]] = {
    "--host": ("host", str, ["0.0.0.0", "10.1.2.3", "::"]),
    "--port": ("port", int, ["8001", "9000"]),
    "--api-key": ("api_key", list, ["k1", "k2"]),
    "--model": ("model", str, ["m1", "m2"]),
    "--runner": ("runner", str, ["pooling", "generate"]),
    "--hf-overrides": (
        "hf_overrides",
        json.loads,
        ['{"architectures":["X"]}', '{"is_original_qwen3_reranker":true}'],
    ),
    "--max-model-len": (
        "max_model_len",
        lambda t: -1 if t.strip() in ("auto", "-1") else human_int("", t),
        ["2048", "2k", "4K", "auto", "-1"],
    ),
    "--dtype": ("dtype", str, ["float32", "bfloat16"]),
    "--chat-template": ("chat_template", str, ["t.jinja"]),
    "--data-parallel-size": ("data_parallel_size", int, ["1", "2"]),
    "--tensor-parallel-size": ("tensor_parallel_size", int, ["1", "2"]),
    "--pipeline-parallel-size": ("pipeline_parallel_size", int, ["1", "2"]),
    "--kv-cache-memory-bytes": ("kv_cache_memory_bytes", lambda t: human_int("", t), ["1G", "500m"]),
    "--gpu-memory-utilization": ("gpu_memory_utilization", float, ["0.3", "0.5"]),
    "--block-size": ("block_size", int, ["32", "64"]),
    "--limit-mm-per-prompt": ("limit_mm_per_prompt", json.loads, ['{"image":1}', '{"image":2,"video":0}']),
    "--allowed-media-domains": ("allowed_media_domains", list, ["a.com", "b.org"]),
    "--served-model-name": ("served_model_name", list, ["s1", "s2"]),
}
ALIASES = {"--gpu-memory-utilization": "--device-memory-utilization", "--tensor-parallel-size": "-tp"}
NOISE = [
    ["--enforce-eager"],
    ["--no-enable-prefix-caching"],
    ["--seed", "3"],
    ["-O3"],
    ["--trust-remote-code"],
]
DOTTED = [
    ["--hf-overrides.architectures+", "Qwen3ForSequenceClassification"],
    ["--hf_overrides.is_original_qwen3_reranker", "true"],
    ["--hf-overrides.classifier_from_token", '["no","yes"]'],
    ["--limit-mm-per-prompt.image", "1"],
]


def _spell(rng: random.Random, flag: str, config: dict[str, Any]) -> list[str]:
    """One guarded flag with one of its values, in a spelling vLLM accepts (or finds ambiguous)."""
    _, convert, values = GUARDED[flag]
    value = rng.choice(values)
    name = ALIASES.get(flag, flag) if rng.random() < 0.2 else flag
    roll = rng.random()
    if roll < 0.15:
        config[flag[2:].replace("-", rng.choice("-_"))] = [value] if convert is list else value
        return []
    if roll < 0.45 and name.startswith("--"):
        name = name[: rng.randint(4, len(name))]
    if rng.random() < 0.3 and name.startswith("--"):
        name = "--" + name[2:].replace("-", "_")
    if rng.random() < 0.3:
        return [f"{name}={value}"]
    return [name, value, *([rng.choice(values)] if convert is list and rng.random() < 0.5 else [])]


def _lists(tmp_path: Path, count: int) -> list[list[str]]:
    rng = random.Random(20260)
    lists = [["--hos", "0.0.0.0"], ["-t", "2"], ["--api-k", "k"], ["--mode", "x"], ["--max-model", "2K"]]
    for n in range(count):
        config: dict[str, Any] = {}
        args: list[str] = []
        for _ in range(rng.randint(1, 4)):
            roll = rng.random()
            if roll < 0.15:
                args += rng.choice(NOISE)
            elif roll < 0.3:
                args += rng.choice(DOTTED)
            else:
                args += _spell(rng, rng.choice(list(GUARDED)), config)
        if config:
            path = tmp_path / f"c{n}.yaml"
            path.write_text("".join(f"{key}: {json.dumps(value)}\n" for key, value in config.items()))
            args = [*args, "--config", str(path)] if rng.random() < 0.5 else ["--config", str(path), *args]
        lists.append(args)
    return lists


def _ours(flags: UserFlags, flag: str) -> Any:
    _, convert, _ = GUARDED[flag]
    values = flags.values(flag)
    if values is None:
        return None
    return values if convert is list else convert(values[0])


@pytest.fixture(scope="module")
def parsed(server_python: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[list[str]], Any]:
    """The generated lists and what the installed vLLM's parser made of them (one vLLM import)."""
    lists = _lists(tmp_path_factory.mktemp("configs"), 300)
    run = subprocess.run(
        [server_python, "-c", PARSE], input=json.dumps(lists), capture_output=True, text=True, timeout=900
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return lists, json.loads(run.stdout.splitlines()[-1])


def test_the_option_table_is_the_installed_vllms(parsed: tuple[list[list[str]], Any]) -> None:
    _, answer = parsed
    assert [(tuple(strings), nargs) for strings, nargs in answer["table"]] == list(VLLM_OPTIONS)


#: What the launcher owns or reads (the plan's questions), by vLLM's destination.
READ_DESTS = {dest for dest, _, _ in GUARDED.values()} | {"enable_prefix_caching", "hf_token", "config"}


def test_a_vllm_with_more_options_reads_every_guarded_flag_as_the_table_does(
    parsed: tuple[list[list[str]], Any],
) -> None:
    """What another vLLM version may add without changing how the launcher's flags are read: every
    option of the table keeps its strings and arity, and no added string is a proper prefix of a table
    string (the exact added one would win over the reader's abbreviation) or writes a destination the
    launcher reads. Run against vLLM 0.33's parser, this fails naming ``--disable-prefix-caching``."""
    _, answer = parsed
    installed = {string: (tuple(strings), nargs) for strings, nargs in answer["table"] for string in strings}
    ours = {string for strings, _ in VLLM_OPTIONS for string in strings}
    for strings, nargs in VLLM_OPTIONS:
        assert strings[0] in installed, strings
        their_strings, their_nargs = installed[strings[0]]
        assert set(strings) <= set(their_strings), strings
        assert their_nargs == nargs, strings
    added = sorted(set(installed) - ours)
    assert [(new, old) for new in added for old in ours if old.startswith(new)] == []
    assert [new for new in added if answer["dests"][new] in READ_DESTS] == []


def test_the_reader_agrees_with_vllms_parser(parsed: tuple[list[list[str]], Any]) -> None:
    lists, answer = parsed
    default, *results = answer["results"]
    agreed = refused = 0
    for args, result in zip(lists, results, strict=True):
        try:
            flags = UserFlags(args)
        except ServerStartError:
            refused += 1
            continue
        if "error" in result:
            continue  # vLLM would not start: nothing to miss
        for flag, (dest, _, _) in GUARDED.items():
            ours = _ours(flags, flag)
            expected = result["ns"][dest]
            assert (default["ns"][dest] if ours is None else ours) == expected, (args, flag)
        agreed += 1
    assert agreed > 100  # most lists are read, not refused
    assert refused > 5  # ambiguous prefixes are refused
