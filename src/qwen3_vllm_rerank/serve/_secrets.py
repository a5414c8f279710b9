"""Secrets in the user's extra vLLM arguments: moved to vLLM's environment, or refused.

A process's command line is readable by every local user (``/proc/PID/cmdline``, ``ps``), and the
launcher logs it; a secret must not be on it. :data:`~._vllm_args.SECRET_FLAGS` names every vLLM 0.32
option whose value is a secret (vLLM's own list, ``_SENSITIVE_ARG_FIELDS`` in
``entrypoints/serve/utils/api_utils.py``: ``api_key``, ``hf_token``, ``watermark_config``):

* ``--hf-token VALUE`` becomes ``HF_TOKEN=VALUE`` in vLLM's environment: vLLM hands ``hf_token`` to
  ``huggingface_hub``, which reads ``$HF_TOKEN`` when it is not given. A bare ``--hf-token`` (use the
  stored login) holds no secret and stays.
* ``--api-key`` is refused (``api_key=`` reaches vLLM as ``$VLLM_API_KEY``).
* ``--watermark-config`` holds a watermarking key and has no environment equivalent: refused.

A JSON value (``--model-loader-extra-config '{"s3_secret_access_key": ...}'``, dotted keys included) with
a key named like a secret (:data:`SECRET_KEY_NAME`) is refused too, naming the key. A ``--config`` YAML
file is not on the command line and is left as it is.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ServerStartError
from ._vllm_args import SECRET_FLAGS, UserFlags, token_option

__all__ = ["SECRET_FLAGS", "SECRET_KEY_NAME", "LiftedSecrets", "lift_secrets"]

#: A key of a JSON flag value that names a secret (``s3_secret_access_key``, ``password``, ``hf_token``,
#: ``api_key``, ...). Token *counts* and ``classifier_from_token`` are not secrets.
SECRET_KEY_NAME = re.compile(
    r"secret|passw|credential|private[_-]?key|access[_-]?key|api[_-]?key|"
    r"(^|[_-])(access|auth|bearer|hf|api|refresh|session|id)[_-]?token$|^token$",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class LiftedSecrets:
    """The extra arguments with every secret value taken out, and the environment that carries them."""

    args: list[str]
    env: dict[str, str] = field(repr=False)


def _no_config(path: str) -> list[str]:
    """A ``--config`` file's flags are not on the command line: read as none."""
    return []


def _others(flags: UserFlags) -> list[tuple[str, object]]:
    """What vLLM reads apart from the secret flags."""
    return [(name, value) for name, value in flags.readings() if name not in SECRET_FLAGS]


def _secret_keys(value: Any, path: str = "") -> list[str]:
    """The dotted paths of the keys in a JSON value that name secrets."""
    found: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if SECRET_KEY_NAME.search(str(key)):
                found.append(where)
            found += _secret_keys(item, where)
    elif isinstance(value, list):
        for item in value:
            found += _secret_keys(item, path)
    return found


def _refuse_secret_json(args: Sequence[str]) -> None:
    """Refuse any JSON value, or dotted key (``--x.api_key v``), whose keys name a secret."""
    flag = "a JSON argument"
    for token in args:
        if token.startswith("-"):
            name, _, text = token.partition("=")
            flag, *dotted = name.split(".")
            keys = [part for part in dotted if SECRET_KEY_NAME.search(part)]
        else:
            text, keys = token, []
        if text.lstrip().startswith(("{", "[")):
            with contextlib.suppress(json.JSONDecodeError):  # not JSON: no keys
                keys += _secret_keys(json.loads(text))
        if keys:
            raise ServerStartError(
                f"{flag} holds a secret ({', '.join(keys)}): vLLM's command line is readable by every "
                "local user and is logged. Pass it through the environment variable the component reads "
                "(env={...}; e.g. S3_ACCESS_KEY_ID / S3_SECRET_ACCESS_KEY for tensorizer), never as a flag."
            )


def lift_secrets(args: Sequence[str]) -> LiftedSecrets:
    """``args`` without the values of :data:`SECRET_FLAGS`, and the environment that carries them.

    The value taken is the one vLLM would use (the last occurrence wins, in any spelling vLLM reads:
    ``--hf_token=x``, ``--hf-tok x``); earlier occurrences are dropped too. Raises
    :class:`ServerStartError` for a secret that has no environment equivalent, or that this function
    cannot take out of the command line exactly as vLLM would read it.
    """
    original = list(args)
    flags = UserFlags(original, config_reader=_no_config)
    if flags.given("--api-key"):
        raise ServerStartError(
            "do not pass --api-key in the extra vLLM arguments: pass api_key=... (serve: --api-key or "
            "$VLLM_API_KEY); it reaches vLLM through its environment, never its argv"
        )
    for flag, variable in SECRET_FLAGS.items():
        if variable is None and flags.given(flag):
            raise ServerStartError(
                f"do not pass {flag}: it holds a secret that would sit on vLLM's command line (readable "
                "by every local user, and logged), and vLLM reads it from no environment variable. A "
                "reranker does not need it: drop the flag."
            )
    _refuse_secret_json(original)
    env: dict[str, str] = {}
    kept: list[str] = []
    i = 0
    while i < len(original):
        token = original[i]
        option = token_option(token)
        i += 1
        if option is None or option.name not in SECRET_FLAGS:
            kept.append(token)
        elif option.inline is None and i < len(original) and token_option(original[i]) is None:
            i += 1  # --hf-token VALUE: both go
        elif option.inline is None:
            kept.append(token)  # a bare --hf-token: the stored login, no secret
    for flag, variable in SECRET_FLAGS.items():
        values = flags.values(flag)
        if variable is not None and values:
            env[variable] = values[0]
    left = UserFlags(kept, config_reader=_no_config)
    if any(left.values(flag) for flag in SECRET_FLAGS) or _others(left) != _others(flags):
        raise ServerStartError(
            "a secret flag (" + ", ".join(SECRET_FLAGS) + ") is written in a way this launcher cannot take "
            "off vLLM's command line without changing how vLLM reads the rest: pass the secret through "
            "env= (HF_TOKEN for --hf-token) instead"
        )
    return LiftedSecrets(kept, env)
