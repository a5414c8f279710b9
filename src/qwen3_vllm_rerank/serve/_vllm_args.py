"""Read a vLLM command line the way vLLM's ``FlexibleArgumentParser`` (vLLM 0.32, Python 3.11) reads it.

The launch plan must see the user's flags exactly as vLLM will, or refuse them. vLLM first pulls
``--config FILE.yaml`` into the command line (its flags first, so the command line wins), turns
underscores in a flag's name into dashes, expands ``-O3``, gathers dotted JSON keys
(``--hf-overrides.architectures X``) into one JSON flag appended at the end, and hands the rest to
``argparse`` with abbreviations allowed: a unique prefix of an option is that option (``--hos`` is
``--host``, ``-t`` is ``-tp``), an ambiguous one is an error, ``--flag=value`` gives the value inline,
a negative number is a value, and when a flag is given twice the last one wins
(``vllm/utils/argparse_utils.py``, ``argparse._parse_optional``). Option names and arities come from
:data:`~qwen3_vllm_rerank.serve._vllm_options.VLLM_OPTIONS`.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ServerStartError
from ._vllm_options import VLLM_OPTIONS, Nargs

__all__ = [
    "REDACTED",
    "SECRET_FLAGS",
    "VLLM_API_KEY_ENV",
    "OptionToken",
    "UserFlags",
    "human_int",
    "read_vllm_config_file",
    "redact_command",
    "token_option",
]

#: What a secret is replaced with in a logged command line.
REDACTED = "***"

#: vLLM 0.32's options whose value is a secret (vLLM's own ``_SENSITIVE_ARG_FIELDS``,
#: ``entrypoints/serve/utils/api_utils.py``) -> the environment variable vLLM reads it from instead
#: (None: none). :func:`redact_command` masks their values; :mod:`._secrets` keeps them off the command line.
#: The environment variable vLLM reads its API key from (the client reads its own,
#: ``qwen3_vllm_rerank.API_KEY_ENV``).
VLLM_API_KEY_ENV = "VLLM_API_KEY"

SECRET_FLAGS: dict[str, str | None] = {
    "--api-key": VLLM_API_KEY_ENV,
    "--hf-token": "HF_TOKEN",
    "--watermark-config": None,
}

_NARGS: dict[str, Nargs] = {}
_CANONICAL: dict[str, str] = {}
for _strings, _nargs in VLLM_OPTIONS:
    _main = next((s for s in _strings if s.startswith("--")), _strings[0])
    for _string in _strings:
        _NARGS[_string] = _nargs
        _CANONICAL[_string] = _string if _string.startswith("--no-") else _main

#: argparse's test for a negative number (a value, never an option).
_NEGATIVE_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")
#: FlexibleArgumentParser's part of a flag whose underscores become dashes: after ``--``, up to a dot.
_NAME_PART = re.compile(r"(?<=--)[^.]*")

Value = str | list[str] | None


@dataclass(frozen=True, slots=True)
class OptionToken:
    """A token argparse reads as an option: its canonical name (None: not a vLLM 0.32 option)."""

    name: str | None
    string: str
    inline: str | None


def _resolve(token: str) -> OptionToken | None:
    """How argparse classifies ``token``: an option, or None for a value (``_parse_optional``)."""
    if not token.startswith("-"):
        return None
    if token in _NARGS:
        return OptionToken(_CANONICAL[token], token, None)
    if len(token) == 1:
        return None
    if "=" in token:
        key, value = token.split("=", 1)
        if key in _NARGS:
            return OptionToken(_CANONICAL[key], key, value)
    matches = _prefix_matches(token)
    if len(matches) > 1:
        names = ", ".join(string for string, _ in matches)
        raise ServerStartError(
            f"{token!r} is ambiguous to vLLM (it could be {names}): write the flag in full"
        )
    if matches:
        ((string, inline),) = matches
        return OptionToken(_CANONICAL[string], string, inline)
    if _NEGATIVE_NUMBER.match(token) or " " in token:
        return None
    return OptionToken(None, token, None)


def _prefix_matches(token: str) -> list[tuple[str, str | None]]:
    """The options ``token`` abbreviates, with its inline value (``argparse._get_option_tuples``)."""
    if token[1] == "-":
        prefix, has_value, value = token.partition("=")
        inline = value if has_value else None
        return [(string, inline) for string in _NARGS if string.startswith(prefix)]
    short, rest = token[:2], token[2:]
    matches: list[tuple[str, str | None]] = []
    for string in _NARGS:
        if string == short:
            matches.append((string, rest))
        elif string.startswith(token):
            matches.append((string, None))
    return matches


def human_int(name: str, text: str) -> int:
    """An integer as vLLM's ``human_readable_int`` reads it: ``8192``, ``8k`` (10^3), ``8K`` (2^10)."""
    value = text.strip()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([kKmMgGtT])", value)
    if match:
        number, suffix = match.groups()
        if suffix.islower():
            return int(float(number) * 1000 ** ("kmgt".index(suffix) + 1))
        if "." in number:
            raise ServerStartError(f"{name}: {text!r} has decimals; write it without a binary suffix")
        return int(number) << (10 * ("KMGT".index(suffix) + 1))
    try:
        return int(value)
    except ValueError:
        raise ServerStartError(f"{name} must be a number such as 8192, 8k or 8K; got {text!r}") from None


def _dotted_leaf(raw: str) -> Any:
    """A dotted key's value as vLLM reads it: JSON, else a human-readable integer, else the text."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        pass
    try:
        return human_int("", raw)
    except ServerStartError:
        return raw


def _merge(original: dict[str, Any], update: dict[str, Any]) -> None:
    """vLLM's ``recursive_dict_update``: nested objects merge, lists concatenate, the rest is replaced."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(original.get(key), dict):
            _merge(original[key], value)
        elif isinstance(value, list) and isinstance(original.get(key), list):
            original[key] += value
        else:
            original[key] = value


def read_vllm_config_file(path: str) -> list[str]:
    """The flags of a ``--config`` YAML file, as vLLM's ``load_config_file`` turns them into arguments.

    Needs PyYAML (vLLM's own dependency); without it, the file cannot be checked and is refused.
    """
    if path.rsplit(".", 1)[-1] not in ("yaml", "yml"):
        raise ServerStartError(f"--config {path}: vLLM reads only .yaml / .yml config files")
    try:
        yaml = importlib.import_module("yaml")
    except ImportError:
        raise ServerStartError(
            f"--config {path}: reading a vLLM config file needs PyYAML, which is not installed here, "
            "and its flags must be checked before vLLM starts. Pass the flags directly instead."
        ) from None
    try:
        config = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ServerStartError(f"--config {path}: cannot read it ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise ServerStartError(f"--config {path} is not valid YAML: {exc}") from exc
    if not isinstance(config, dict):
        raise ServerStartError(f"--config {path} must hold a mapping of flag names to values")
    args: list[str] = []
    for key, value in config.items():
        flag = f"--{key}"
        if isinstance(value, bool):
            if value:
                args.append(flag)
            elif f"--no-{key}" in _NARGS:
                args.append(f"--no-{key}")
        elif isinstance(value, list):
            if value:
                args += [flag, *(str(item) for item in value)]
        elif isinstance(value, dict):
            args += [flag, json.dumps(value)]
        else:
            args += [flag, str(value)]
    return args


def _pull_config(args: list[str], read: Callable[[str], list[str]]) -> tuple[list[str], str | None]:
    """vLLM's ``_pull_args_from_config``: the file's flags first, then the rest (the command line wins)."""
    if "--config" not in args:
        return args, None
    if args.count("--config") > 1:
        raise ServerStartError("--config is given more than once; vLLM reads one config file")
    index = args.index("--config")
    if index == len(args) - 1:
        raise ServerStartError("--config needs a file name")
    path = args[index + 1]
    return [*read(path), *args[:index], *args[index + 2 :]], path


def _dashed(args: Sequence[str]) -> list[str]:
    """Underscores to dashes in flag names, and ``-O3`` to ``--optimization-level 3``."""
    processed: list[str] = []
    for i, arg in enumerate(args):
        if arg.startswith("--"):
            key, has_value, value = arg.partition("=")
            key = _NAME_PART.sub(lambda m: m.group(0).replace("_", "-"), key, count=1)
            processed.append(f"{key}={value}" if has_value else key)
        elif arg.startswith("-O") and arg != "-O":
            processed += ["--optimization-level", arg[3:] if arg[2] == "=" else arg[2:]]
        elif arg == "-O" and i + 1 < len(args) and args[i + 1] in {"0", "1", "2", "3"}:
            processed.append("--optimization-level")
        else:
            processed.append(arg)
    return processed


def _gather_dotted(args: list[str]) -> list[str]:
    """Dotted keys (``--hf-overrides.a.b 1``, ``--x.list+ a,b``) merged into one JSON flag per name,
    appended after the other arguments."""
    delete: set[int] = set()
    merged: dict[str, dict[str, Any]] = {}
    for i, arg in enumerate(args):
        if i in delete or not arg.startswith("-") or "." not in arg:
            continue
        key = arg
        if "=" in arg:
            key, raw = arg.split("=", 1)
            if "." not in key:
                continue  # the dot was in the value
        else:
            if i + 1 >= len(args):
                raise ServerStartError(f"{arg} needs a value")
            raw = args[i + 1]
            delete.add(i + 1)
        if key.endswith("+"):
            key = key[:-1]
            raw = json.dumps(raw.split(","))
        name, *path = key.split(".")
        nested: Any = _dotted_leaf(raw)
        for part in reversed(path):
            nested = {part: nested}
        _merge(merged.setdefault(name, {}), nested)
        delete.add(i)
    kept = [arg for i, arg in enumerate(args) if i not in delete]
    for name, value in merged.items():
        kept += [name, json.dumps(value)]
    return kept


class UserFlags:
    """The user's extra vLLM arguments, read the way vLLM's parser reads them (see the module).

    Args:
        args: the arguments, as they will follow the plan's own on vLLM's command line.
        config_reader: turns a ``--config`` file name into its flags (:func:`read_vllm_config_file`).

    Every option is known by its canonical name (``--max-model-len`` for ``--max_model_len``,
    ``--max-model=2048`` or ``--max-model-len 2K``; ``--data-parallel-size`` for ``-dp``; the
    ``--no-...`` form of a boolean is its own name). :attr:`config_file` is the ``--config`` file read.
    Anything vLLM would refuse to parse (an ambiguous prefix, a missing value, ``--``) raises
    :class:`~qwen3_vllm_rerank.errors.ServerStartError`.
    """

    def __init__(
        self, args: Sequence[str], *, config_reader: Callable[[str], list[str]] = read_vllm_config_file
    ) -> None:
        self.args = list(args)
        if "--" in self.args:
            raise ServerStartError("do not pass `--` in the extra vLLM arguments: vLLM reads no positionals")
        pulled, self.config_file = _pull_config(self.args, config_reader)
        self._given: list[tuple[str, Value]] = []
        tokens = _gather_dotted(_dashed(pulled))
        options = [_resolve(token) for token in tokens]
        i = 0
        while i < len(tokens):
            option = options[i]
            i += 1
            if option is None or option.name is None:
                continue  # a value of an option vLLM 0.32 does not know, or one vLLM will refuse
            value, i = self._values(option, tokens, options, i)
            self._given.append((option.name, value))

    @staticmethod
    def _values(
        option: OptionToken, tokens: list[str], options: list[OptionToken | None], i: int
    ) -> tuple[Value, int]:
        nargs = _NARGS[option.string]
        if option.inline is not None:
            if nargs == "0":
                raise ServerStartError(f"{option.string} takes no value, got {option.inline!r}")
            return ([option.inline] if nargs == "+" else option.inline), i
        following = 0
        while i + following < len(tokens) and options[i + following] is None:
            following += 1
        if nargs == "0" or (nargs == "?" and not following):
            return None, i
        if not following:
            raise ServerStartError(f"{option.string} needs a value")
        if nargs == "+":
            return tokens[i : i + following], i + following
        return tokens[i], i + 1

    def readings(self) -> list[tuple[str, Value]]:
        """Every option read, in order: its canonical name and its value(s) (None: takes none)."""
        return list(self._given)

    def given(self, *names: str) -> bool:
        """Whether any of ``names`` (canonical ``--dashed`` names) was passed, in any form."""
        return any(name in names for name, _ in self._given)

    def values(self, name: str) -> list[str] | None:
        """The values of the last occurrence of ``name`` (one for most flags); None when not given."""
        for given, value in reversed(self._given):
            if given == name:
                return [] if value is None else [value] if isinstance(value, str) else value
        return None

    def value(self, name: str) -> str | None:
        """The value of a flag that takes one (the last occurrence wins)."""
        values = self.values(name)
        return values[0] if values else None

    def json_value(self, name: str) -> dict[str, Any] | None:
        """A JSON-object flag (``--hf-overrides``) as vLLM gets it, dotted keys merged; None if not given."""
        raw = self.value(name)
        if raw is None:
            return None
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ServerStartError(f"{name} is not valid JSON ({exc.msg}): {raw!r}") from exc
        if not isinstance(value, dict):
            raise ServerStartError(f"{name} must be a JSON object, got {raw!r}")
        return value

    def int_value(self, name: str, default: int) -> int:
        raw = self.value(name)
        if raw is None:
            return default
        try:
            return int(raw)
        except ValueError as exc:
            raise ServerStartError(f"{name} must be an integer, got {raw!r}") from exc


def token_option(token: str) -> OptionToken | None:
    """How vLLM's parser reads one token on its own: an option (its canonical name, None for one vLLM
    0.32 does not know or an ambiguous prefix), or None for a value."""
    if not token.startswith("-"):
        return None
    try:
        return _resolve(_dashed([token])[0])
    except ServerStartError:
        return OptionToken(None, token, None)


def redact_command(command: Sequence[str], secrets: Sequence[str] = ()) -> list[str]:
    """``command`` fit for a log: the values of every :data:`SECRET_FLAGS` option (in any spelling)
    and every token holding one of ``secrets`` replaced with :data:`REDACTED`."""
    redacted: list[str] = []
    masking = False
    for token in command:
        option = token_option(token)
        if option is not None:
            secret = option.name in SECRET_FLAGS
            masking = secret and option.inline is None
            if secret and option.inline is not None:
                token = f"{token.split('=', 1)[0]}={REDACTED}"
        elif masking:
            token = REDACTED
        if any(secret and secret in token for secret in secrets):
            token = REDACTED
        redacted.append(token)
    return redacted
