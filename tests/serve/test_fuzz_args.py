"""Property: the launch plan reads every flag it owns or guards exactly as vLLM's argparse reads it, or
refuses the argument list; a flag is never silently missed.

The oracle is Python's own ``argparse`` (abbreviations allowed, as vLLM's parser does) built from the
same option table, fed argument lists made of vLLM's real option names, their prefixes, ``--flag=value``
and ``--flag value`` spellings, underscores for dashes, negative numbers and repeated flags.
``tests/serve/test_vllm_parser.py`` checks the same reading against vLLM's own parser.
"""

from __future__ import annotations

import argparse
from typing import Any, NoReturn

from hypothesis import example, given, settings
from hypothesis import strategies as st

from qwen3_vllm_rerank import ServerStartError
from qwen3_vllm_rerank.serve._plan import SERVER_MEDIA_FLAGS, plan_launch
from qwen3_vllm_rerank.serve._secrets import lift_secrets
from qwen3_vllm_rerank.serve._vllm_args import UserFlags
from qwen3_vllm_rerank.serve._vllm_options import VLLM_OPTIONS

CONFIG = {
    "architectures": ["Qwen3ForCausalLM"],
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 64,
    "hidden_size": 128,
    "max_position_embeddings": 4096,
}

#: What the plan owns (refused when given), and what else it reads or guards.
OWNED = ("--host", "--port", "--api-key", "--model")
READ = (
    "--runner",
    "--hf-overrides",
    "--max-model-len",
    "--dtype",
    "--chat-template",
    "--data-parallel-size",
    "--data-parallel-size-local",
    "--tensor-parallel-size",
    "--pipeline-parallel-size",
    "--kv-cache-dtype",
    "--kv-cache-memory-bytes",
    "--gpu-memory-utilization",
    "--block-size",
    "--no-enable-prefix-caching",
    "--limit-mm-per-prompt",
    "--mm-processor-kwargs",
    "--allowed-media-domains",
    "--allowed-local-media-path",
    "--served-model-name",
    "--hf-token",
)
#: Option strings the lists are made of: the guarded ones, their aliases and neighbours (shared prefixes).
FLAGS = sorted(
    {
        string
        for strings, _ in VLLM_OPTIONS
        for string in strings
        if any(string.startswith(name[:5]) or name in strings for name in OWNED + READ)
        and string != "--config"  # an exact --config names a file: test_vllm_args.py covers it
    }
)
#: The guarded flags and their aliases, drawn as often as all the rest together.
GUARDED = sorted({s for strings, _ in VLLM_OPTIONS if set(strings) & set(OWNED + READ) for s in strings})
VALUES = ["0.0.0.0", "8001", "2048", "2k", "-1", "-7", "auto", "pooling", "generate", "float32", "x y"]
VALUES += ['{"architectures":["X"]}', '{"is_original_qwen3_reranker":true}', "k3y", "-x", "a_b"]
#: A token value nothing else uses: wherever it ends up on the lifted command line, it leaked.
TOKEN = "hf_t0ken"
VALUES += [TOKEN]


class _Refused(Exception):
    """argparse refused the list; ``unrecognized``: only because of options it does not know."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.unrecognized = message.startswith("unrecognized arguments")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _Refused(message)


def _oracle() -> tuple[_Parser, dict[str, str]]:
    """argparse with vLLM's option strings and arities; the canonical name of every destination."""
    parser = _Parser(add_help=False, allow_abbrev=True)
    names: dict[str, str] = {}
    for strings, nargs in VLLM_OPTIONS:
        groups = [
            [s for s in strings if not s.startswith("--no-")],
            [s for s in strings if s.startswith("--no-")],
        ]
        for group in filter(None, groups):
            name = next(s for s in group if s.startswith("--"))
            dest = f"d{len(names)}"
            names[dest] = name
            if nargs == "0":
                parser.add_argument(*group, dest=dest, action="store_const", const=[])
            elif nargs == "?":
                parser.add_argument(*group, dest=dest, nargs="?", const=[])
            else:
                parser.add_argument(*group, dest=dest, nargs=None if nargs == "1" else nargs)
    parser.add_argument("model_tag", nargs="?")
    return parser, names


PARSER, NAMES = _oracle()


@st.composite
def _flag(draw: st.DrawFn) -> list[str]:
    """One flag in any spelling vLLM accepts (or a prefix argparse may find ambiguous), maybe a value."""
    string = draw(st.sampled_from(GUARDED) | st.sampled_from(FLAGS))
    if draw(st.booleans()):
        shortest = 3 if string.startswith("--") else 2
        string = string[: draw(st.integers(min(shortest, len(string)), len(string)))]  # an abbreviation
    if string.startswith("--") and draw(st.booleans()):
        string = "--" + string[2:].replace("-", "_")  # vLLM reads underscores as dashes
    value = draw(st.sampled_from(VALUES))
    form = draw(st.sampled_from(["bare", "separate", "inline", "two"]))
    if form == "inline":
        return [f"{string}={value}"]
    if form == "separate":
        return [string, value]
    if form == "two":
        return [string, value, draw(st.sampled_from(VALUES))]
    return [string]


def _as_argparse(tokens: list[str]) -> list[str]:
    """vLLM turns underscores in a flag's name (before any ``=``) into dashes before argparse sees it."""
    dashed = []
    for token in tokens:
        if token.startswith("--"):
            key, has_value, value = token.partition("=")
            token = key.replace("_", "-") + (f"={value}" if has_value else "")
        dashed.append(token)
    return dashed


def _expected(namespace: argparse.Namespace) -> dict[str, list[str]]:
    """Each guarded flag argparse read, with its values (``[]`` for a flag that takes none)."""
    read: dict[str, list[str]] = {}
    for dest, name in NAMES.items():
        value: Any = getattr(namespace, dest)
        if name in OWNED + READ and value is not None:
            read[name] = [value] if isinstance(value, str) else list(value)
    return read


@settings(max_examples=400, deadline=None)
@given(st.lists(_flag(), max_size=6).map(lambda parts: [token for part in parts for token in part]))
def test_every_guarded_flag_is_read_as_argparse_reads_it_or_refused(tokens: list[str]) -> None:
    """Whatever argparse reads for a guarded flag, UserFlags reads the same, or the list is refused."""
    try:
        namespace = PARSER.parse_args(_as_argparse(tokens))
    except _Refused as refused:
        if refused.unrecognized:
            return  # vLLM would not start: nothing to miss
        namespace = None
    try:
        flags = UserFlags(tokens)
    except ServerStartError:
        assert namespace is None, f"refused a list argparse reads: {tokens}"
        return
    assert namespace is not None, f"argparse refuses {tokens} but UserFlags read it"
    expected = _expected(namespace)
    assert {name: flags.values(name) for name in expected} == expected
    assert not [name for name in OWNED + READ if name not in expected and flags.given(name)]


@settings(max_examples=300, deadline=None)
@given(st.lists(_flag(), max_size=3).map(lambda parts: [token for part in parts for token in part]))
@example(["--hos", "0.0.0.0"])  # regression: read by vLLM as --host, missed by the plan
@example(["--api-k", "k3y"])
@example(["--por=8001"])
@example(["--runn", "generate"])
def test_the_plan_refuses_every_list_that_sets_a_flag_it_owns(tokens: list[str]) -> None:
    """If argparse reads --host, --port, --api-key or --model (or a runner other than pooling), the plan refuses."""
    try:
        expected = _expected(PARSER.parse_args(_as_argparse(tokens)))
    except _Refused:
        return
    owned = [name for name in OWNED if name in expected]
    runner = expected.get("--runner")
    try:
        plan_launch(CONFIG, cpu=False, extra_args=tokens)
    except ServerStartError:
        return
    assert not owned, f"{owned} slipped through in {tokens}"
    assert runner in (None, ["pooling"]), tokens


def test_the_oracle_is_the_option_table() -> None:
    """The oracle knows exactly the table's option strings (so their prefixes collide the same way)."""
    assert set(PARSER._option_string_actions) == {s for strings, _ in VLLM_OPTIONS for s in strings}
    assert {"--host", "--api-key", "--hf-overrides", "-tp", "--device-memory-utilization"} <= set(FLAGS)


@settings(max_examples=400, deadline=None)
@given(st.lists(_flag(), max_size=5).map(lambda parts: [token for part in parts for token in part]))
@example(["--hf-token", TOKEN])
@example(["--hf_tok=" + TOKEN, "--hf-token"])
@example(["--served-model-name", "a", "--hf-token", TOKEN, "b"])  # taking it out would extend the names
def test_a_secret_flag_is_taken_off_the_command_line_exactly_or_refused(tokens: list[str]) -> None:
    """Whatever argparse reads for --hf-token reaches vLLM as $HF_TOKEN, and argparse reads the lifted
    command line exactly as the original apart from it; or the list is refused."""
    try:
        before = _expected(PARSER.parse_args(_as_argparse(tokens)))
    except _Refused:
        return
    try:
        lifted = lift_secrets(tokens)
    except ServerStartError:
        return
    after = _expected(PARSER.parse_args(_as_argparse(lifted.args)))
    token = before.pop("--hf-token", None)
    assert after.pop("--hf-token", []) == []  # at most a bare flag: the stored login
    assert after == before, tokens
    assert lifted.env == ({"HF_TOKEN": token[0]} if token else {}), tokens


@settings(max_examples=300, deadline=None)
@given(st.lists(_flag(), max_size=3).map(lambda parts: [token for part in parts for token in part]))
@example(["--allowed-local", "/"])
@example(["--allowed_media_domains=a.com"])
def test_the_plan_refuses_every_list_that_turns_server_fetching_on(tokens: list[str]) -> None:
    """If argparse reads --allowed-media-domains or --allowed-local-media-path, the plan refuses (the
    default; allow_server_media=True is the opt-in)."""
    try:
        expected = _expected(PARSER.parse_args(_as_argparse(tokens)))
    except _Refused:
        return
    try:
        plan_launch(CONFIG, cpu=False, extra_args=tokens)
    except ServerStartError:
        return
    assert not set(SERVER_MEDIA_FLAGS) & set(expected), tokens
