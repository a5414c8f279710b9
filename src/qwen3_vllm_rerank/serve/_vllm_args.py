"""Read a vLLM command line the way vLLM 0.32's ``FlexibleArgumentParser`` reads it.

The launch plan must see the user's flags exactly as vLLM will: ``--max_model_len`` is
``--max-model-len``, ``--flag=value`` is ``--flag value``, ``-dp`` is ``--data-parallel-size``,
``--hf-overrides.architectures X`` sets one key of ``--hf-overrides``, the last occurrence wins, and
``8k`` / ``8K`` are 8,000 / 8,192 (``vllm/utils/argparse_utils.py``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ServerStartError

__all__ = ["UserFlags", "human_int"]

#: vLLM 0.32's short aliases for the flags the plan reads (``vllm/engine/arg_utils.py``).
_ALIASES = {
    "-dp": "--data-parallel-size",
    "-dpl": "--data-parallel-size-local",
    "-tp": "--tensor-parallel-size",
    "-pp": "--pipeline-parallel-size",
}
_NEGATIVE_NUMBER = re.compile(r"^-\d")


@dataclass(frozen=True, slots=True)
class _Flag:
    index: int
    name: str  # canonical: --dashed-name
    inline: str | None  # the value after "=", if given that way
    path: tuple[str, ...]  # the keys after the name in the dotted JSON form (--hf-overrides.a.b)


class UserFlags:
    """The user's extra vLLM arguments, read the way vLLM's ``FlexibleArgumentParser`` reads them.

    Underscores and dashes in a flag's name are the same flag (``--max_model_len``), a value may
    follow ``=``, ``-dp`` is ``--data-parallel-size``, and ``--hf-overrides.key value`` sets one key
    of the ``--hf-overrides`` JSON. When a flag is given twice, the last one wins, as in vLLM.
    """

    def __init__(self, args: Sequence[str]) -> None:
        self.args = list(args)
        self._flags: list[_Flag] = []
        for index, arg in enumerate(self.args):
            if arg.startswith("--") and len(arg) > 2:
                key, has_value, value = arg.partition("=")
                base, *path = key.split(".")
                name = base.replace("_", "-")
                self._flags.append(_Flag(index, name, value if has_value else None, tuple(path)))
            elif arg.startswith("-") and not _NEGATIVE_NUMBER.match(arg):
                key, has_value, value = arg.partition("=")
                if key in _ALIASES:
                    self._flags.append(_Flag(index, _ALIASES[key], value if has_value else None, ()))

    def given(self, *names: str) -> bool:
        """Whether any of ``names`` (canonical ``--dashed`` names) was passed, in any form."""
        return any(flag.name in names for flag in self._flags)

    def value(self, name: str) -> str | None:
        """The value of a flag that takes one (the last occurrence wins)."""
        for flag in reversed(self._flags):
            if flag.name == name and not flag.path:
                if flag.inline is not None:
                    return flag.inline
                if flag.index + 1 < len(self.args):
                    return self.args[flag.index + 1]
                raise ServerStartError(f"{self.args[flag.index]} needs a value")
        return None

    def json_value(self, name: str) -> dict[str, Any] | None:
        """A JSON-object flag (``--hf-overrides``), its dotted keys merged in; None when not given."""
        if not self.given(name):
            return None
        merged: dict[str, Any] = {}
        for flag in self._flags:
            if flag.name != name:
                continue
            raw = flag.inline if flag.inline is not None else self._next(flag)
            if not flag.path:
                try:
                    value = json.loads(raw)
                except json.JSONDecodeError as exc:
                    raise ServerStartError(f"{name} is not valid JSON ({exc.msg}): {raw!r}") from exc
                if not isinstance(value, dict):
                    raise ServerStartError(f"{name} must be a JSON object, got {raw!r}")
                merged.update(value)
                continue
            try:
                leaf: Any = json.loads(raw)
            except json.JSONDecodeError:
                leaf = raw
            target = merged
            *parents, last = flag.path
            for key in parents:
                target = target.setdefault(key, {})
            target[last.removesuffix("+")] = leaf
        return merged

    def _next(self, flag: _Flag) -> str:
        if flag.index + 1 >= len(self.args):
            raise ServerStartError(f"{self.args[flag.index]} needs a value")
        return self.args[flag.index + 1]

    def int_value(self, name: str, default: int) -> int:
        raw = self.value(name)
        if raw is None:
            return default
        try:
            return int(raw)
        except ValueError as exc:
            raise ServerStartError(f"{name} must be an integer, got {raw!r}") from exc


def human_int(name: str, text: str) -> int:
    """An integer as vLLM's ``human_readable_int`` reads it: ``8192``, ``8k`` (10^3), ``8K`` (2^10)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([kKmMgGtT]?)", text.strip())
    if not match:
        raise ServerStartError(f"{name} must be a number such as 8192, 8k or 8K; got {text!r}")
    number, suffix = match.groups()
    if suffix and suffix.islower():
        return int(float(number) * 1000 ** ("kmgt".index(suffix) + 1))
    if "." in number:
        raise ServerStartError(f"{name}: {text!r} has decimals; write it without a binary suffix")
    power = "KMGT".index(suffix) + 1 if suffix else 0
    return int(number) << (10 * power)
