"""Choose vLLM's flags for a Qwen3-Reranker checkpoint: a pure function of its config, the user's flags
and the machine (no process, no file).

:func:`plan_launch` decides:

* the architecture overrides: an original text checkpoint (``Qwen3ForCausalLM``) gets vLLM's Qwen3
  ``--hf-overrides`` that turn its yes/no logits into one score; an original Qwen3-VL reranker
  (``Qwen3VLForConditionalGeneration``) gets the VL equivalent; a converted checkpoint
  (``...ForSequenceClassification``) gets none: the overrides on a converted untied checkpoint zero
  the classifier and every score becomes 0.5, so they are never combined;
* for Qwen3-VL, the image preprocessing limits of the official reranker, the multimodal limits and
  no fetching of image URLs by the server;
* the dtype on the CPU build (:func:`choose_dtype`), ``--max-model-len``, the CPU KV-cache size per
  engine (data, tensor and pipeline parallelism respected) and the CPU block size;
* on a GPU, the memory the server holds (weights + activations for one batch + a KV cache for the
  sequences in flight) through ``--kv-cache-memory-bytes`` and a consistent
  ``--gpu-memory-utilization``, within ``gpu_memory`` when given (:mod:`._memory`);
* what the user must know about the network exposure (``--api-key`` guards only some paths).

The user's own flags are read the way vLLM's parser reads them (``--max_model_len`` is
``--max-model-len``, ``--flag=value``, abbreviations such as ``--max-model`` and ``-dp``, dotted JSON
keys such as ``--hf-overrides.architectures``, the flags of a ``--config`` YAML file) and always win;
flags this plan must own are refused with a message.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._checkpoints import ARCHITECTURES, CheckpointKind, Family, architecture_of
from ..errors import ServerStartError
from ..images._geometry import IMAGE_FACTOR, MAX_PIXELS, MIN_PIXELS
from ._cpu import CpuInfo, choose_dtype, choose_reserved_cpus
from ._exposure import GUARDED_PATH_PREFIXES, UNGUARDED_PATHS, exposure_warnings
from ._memory import GpuMemory, dtype_bytes, size_gpu_memory
from ._secrets import lift_secrets
from ._vllm_args import VLLM_API_KEY_ENV, UserFlags, human_int

__all__ = [
    "CPU_BLOCK_SIZE",
    "DEFAULT_IMAGE_CACHE_PAGES",
    "DEFAULT_MAX_MODEL_LEN",
    "ENCODER_CACHE_MANAGER",
    "ENCODER_CACHE_PATH",
    "ENCODER_CACHE_TOKENS_ENV",
    "GUARDED_PATH_PREFIXES",
    "NO_MEDIA_DOMAIN",
    "ORIGINAL_OVERRIDES",
    "PAGE_EMBEDDINGS",
    "SERVER_MEDIA_FLAGS",
    "UNGUARDED_PATHS",
    "VL_ORIGINAL_OVERRIDES",
    "Checkpoint",
    "CheckpointKind",
    "Family",
    "LaunchPlan",
    "checkpoint_dtype",
    "encoder_cache_bytes_per_embedding",
    "identify_checkpoint",
    "kv_bytes_per_token",
    "plan_launch",
]

#: What vLLM needs to serve an original Qwen3-Reranker (CausalLM) as a one-logit scorer.
ORIGINAL_OVERRIDES: dict[str, Any] = {
    "architectures": [ARCHITECTURES["Qwen3ForCausalLM"].seq_cls],
    "classifier_from_token": ["no", "yes"],
    "is_original_qwen3_reranker": True,
}
#: The same for an original Qwen3-VL-Reranker (``Qwen3VLForConditionalGeneration``).
VL_ORIGINAL_OVERRIDES: dict[str, Any] = {
    **ORIGINAL_OVERRIDES,
    "architectures": [ARCHITECTURES["Qwen3VLForConditionalGeneration"].seq_cls],
}

#: The model card's maximum length; real configs declare 40,960 positions.
DEFAULT_MAX_MODEL_LEN = 8192

#: KV-cache block on the CPU backend. vLLM reuses (prefix-caches) only whole blocks, and
#: its CPU default, 128 tokens, is longer than the prompt prefix every document of one
#: query shares (~65 tokens of template and instruction plus the query), so nothing was
#: reused; the CPU backend accepts multiples of 32 only. GPUs default to 16 tokens.
CPU_BLOCK_SIZE = 32

_GIB = 1024**3
_KV_SPACE_ENV = "VLLM_CPU_KVCACHE_SPACE"
#: The plan never gives the CPU KV caches of one server more than this in total.
_CPU_KV_SPACE_MAX_GIB = 8


# --- the checkpoint -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """What a config.json says the checkpoint is: text or Qwen3-VL, original or converted, and the
    one-logit architecture vLLM serves it as."""

    family: Family
    kind: CheckpointKind
    seq_cls: str

    def describe(self) -> str:
        return self.kind if self.family == "text" else f"{self.kind} Qwen3-VL"


def identify_checkpoint(config: Mapping[str, Any]) -> Checkpoint:
    """The checkpoint's family and kind, from its ``architectures``."""
    architectures = config.get("architectures") or []
    architecture = architecture_of(architectures if isinstance(architectures, list) else [])
    if architecture is None:
        raise ServerStartError(
            f"not a Qwen3-Reranker checkpoint: architectures {architectures!r}; expected one of "
            + ", ".join(ARCHITECTURES)
            + " (original or converted, text or Qwen3-VL)"
        )
    return Checkpoint(architecture.family, architecture.kind, architecture.seq_cls)


def _text_config(config: Mapping[str, Any]) -> Mapping[str, Any]:
    """The language model's part of the config (Qwen3-VL nests it under ``text_config``)."""
    nested = config.get("text_config")
    return nested if isinstance(nested, Mapping) else config


def checkpoint_dtype(config: Mapping[str, Any]) -> str | None:
    """The dtype the weights are stored in, as config.json states it (None when it does not)."""
    for part in (config, _text_config(config)):
        value = part.get("torch_dtype") or part.get("dtype")
        if isinstance(value, str):
            return value.removeprefix("torch.")
    return None


def kv_bytes_per_token(
    config: Mapping[str, Any], dtype: str | None = None, *, tp: int = 1, pp: int = 1
) -> int:
    """Bytes of K and V cache one token takes across the layers one worker holds."""
    text = _text_config(config)
    attention_heads = int(text["num_attention_heads"])
    heads = math.ceil(int(text.get("num_key_value_heads") or attention_heads) / tp)
    head_dim = int(text.get("head_dim") or int(text["hidden_size"]) // attention_heads)
    layers = math.ceil(int(text["num_hidden_layers"]) / pp)
    dtype = dtype or checkpoint_dtype(config) or "bfloat16"
    return 2 * layers * heads * head_dim * dtype_bytes(dtype)


#: Flags VLLMServer must own: it connects to the server with them.
_OWNED_FLAGS = {
    "--host": "host=... (serve: --host)",
    "--port": "port=... (serve: --port)",
    "--api-key": (
        "api_key=... (serve: --api-key or $VLLM_API_KEY; it reaches vLLM through its environment, "
        "never its argv)"
    ),
    "--model": "the model argument",
}
_MULTIMODAL_FLAGS = ("--limit-mm-per-prompt", "--mm-processor-kwargs")
#: Flags that make vLLM fetch or read what a request names: http(s) image URLs from these domains
#: (vLLM fetches from every domain when the list is empty, the plan passes :data:`NO_MEDIA_DOMAIN`),
#: ``file:`` URLs under this directory. Refused unless ``allow_server_media=True``.
SERVER_MEDIA_FLAGS = ("--allowed-media-domains", "--allowed-local-media-path")


# --- the plan --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LaunchPlan:
    """The vLLM arguments and environment chosen for a checkpoint, and why.

    ``max_model_len`` is None when the user asked vLLM to choose (``--max-model-len auto``);
    ``dtype`` is None when vLLM chooses. ``notes`` explain the choices; ``warnings`` are what the
    user must act on (VLLMServer logs them as warnings). ``chat_template``: the user's
    ``--chat-template`` (the server then applies the score template itself), else None.
    ``python_path``: directories the server's interpreter must import from first (the plan's encoder
    cache manager, :data:`ENCODER_CACHE_MANAGER`), prepended to its ``PYTHONPATH``.
    """

    kind: CheckpointKind
    args: list[str]
    env: dict[str, str]
    max_model_len: int | None
    family: Family = "text"
    dtype: str | None = None
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    chat_template: str | None = None
    python_path: tuple[str, ...] = ()

    def summary(self) -> str:
        """One line: what is served, with which length, dtype and KV cache, and why."""
        checkpoint = self.kind if self.family == "text" else f"{self.kind} Qwen3-VL"
        length = "vLLM's choice" if self.max_model_len is None else str(self.max_model_len)
        parts = [f"{checkpoint} checkpoint, max_model_len={length}"]
        parts += [f"{key}={value}" for key, value in self.env.items()]
        return ", ".join(parts + list(self.notes))

    def describe(self) -> str:
        """The summary, then one ``WARNING:`` line per warning."""
        return self.summary() + "".join(f"\nWARNING: {warning}" for warning in self.warnings)


def _check_overrides(checkpoint: Checkpoint, overrides: Mapping[str, Any] | None) -> None:
    """Refuse user overrides that cannot serve this checkpoint correctly."""
    if overrides is None:
        return
    if checkpoint.kind == "converted" and "is_original_qwen3_reranker" in overrides:
        raise ServerStartError(
            "refusing to serve a converted checkpoint with the original-model --hf-overrides: "
            "on untied checkpoints every score becomes 0.5. Drop --hf-overrides."
        )
    architectures = overrides.get("architectures")
    expected = checkpoint.seq_cls
    if architectures is not None and architectures != [expected]:
        other = "Qwen3-VL" if checkpoint.family == "text" else "text"
        raise ServerStartError(
            f"refusing --hf-overrides architectures {architectures!r} for a {checkpoint.describe()} "
            f"checkpoint: it needs [{expected!r}] (the overrides given are for a {other} reranker?). "
            "Drop --hf-overrides: VLLMServer chooses them."
        )


def plan_launch(
    config: Mapping[str, Any],
    *,
    cpu: bool,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    max_model_len: int | None = None,
    throughput_defaults: bool = True,
    cpu_info: CpuInfo | None = None,
    host: str = "127.0.0.1",
    api_key: bool = False,
    gpu_memory: float | None = None,
    gpu_total_bytes: int | None = None,
    weights_bytes: int | None = None,
    allow_server_media: bool = False,
    image_cache_pages: int | None = None,
    cache_manager: bool = True,
) -> LaunchPlan:
    """Choose vLLM's flags for ``config`` (pure: no process, no file).

    ``cpu``: whether the server runs vLLM's CPU build; ``cpu_info``: its CPU (:func:`read_cpu_info`;
    None means unknown). ``env``: the environment the server gets (``VLLM_CPU_KVCACHE_SPACE`` in it,
    or in this process's environment, is respected). ``max_model_len``: the caller's default length.
    ``throughput_defaults=False`` leaves the KV-cache block size to vLLM's own default (see
    :func:`_throughput_args`). ``host`` / ``api_key``: where the server listens and whether it has a
    key, for the exposure warnings. On a GPU (``cpu=False``): ``gpu_memory`` caps what the server
    holds on each GPU (GiB; None: no cap), ``gpu_total_bytes`` is the GPU's memory (None: unknown, as
    in the Kubernetes manifests), ``weights_bytes`` the checkpoint's weights as stored (None:
    estimated from ``config``); see :func:`~._memory.size_gpu_memory`. Flags in ``extra_args``
    always win, except those it refuses: the flags it owns, secrets that cannot travel by environment
    (:func:`~._secrets.lift_secrets`), and :data:`SERVER_MEDIA_FLAGS` unless ``allow_server_media``
    (the server then fetches or reads what requests name: a warning says so).

    ``cache_manager``: whether the server's vLLM takes ``--ec-manager-config`` (0.32 does, 0.27 does
    not): without it a Qwen3-VL cache is left to vLLM's sizing, and an ``image_cache_pages`` above 0 is
    refused.

    ``image_cache_pages`` (Qwen3-VL only): full-size pages vLLM's encoder cache holds
    (:func:`_size_image_cache`; None: :data:`DEFAULT_IMAGE_CACHE_PAGES`, fewer where memory is short;
    0: vLLM's own sizing). The user's ``--ec-manager-config`` or ``--max-num-batched-tokens`` wins (the
    plan then passes none of its own); the notes say what the cache then holds.
    """
    if gpu_memory is not None and (cpu or not gpu_memory > 0):
        raise ServerStartError(
            f"gpu_memory={gpu_memory!r}: it caps a GPU server's memory in GiB (a positive number); "
            "on vLLM's CPU build size the KV cache with VLLM_CPU_KVCACHE_SPACE instead"
        )
    checkpoint = identify_checkpoint(config)
    if image_cache_pages is not None and (image_cache_pages < 0 or checkpoint.family == "text"):
        raise ServerStartError(
            f"image_cache_pages={image_cache_pages!r}: it sizes a Qwen3-VL reranker's encoder cache in "
            "pages (0 or more; 0 leaves it to vLLM); a text checkpoint has none. Drop it."
        )
    flags = UserFlags(extra_args)
    where = f" (here in --config {flags.config_file})" if flags.config_file else ""
    for owned, instead in _OWNED_FLAGS.items():
        if flags.given(owned):
            raise ServerStartError(
                f"do not pass {owned} in the extra vLLM arguments{where}; pass {instead} instead"
            )
    lift_secrets(extra_args)
    media_warnings = _server_media(flags, allow=allow_server_media, where=where)
    if checkpoint.family == "text" and flags.given(*_MULTIMODAL_FLAGS):
        raise ServerStartError(
            "this is a text-only Qwen3-Reranker checkpoint: --limit-mm-per-prompt / --mm-processor-kwargs "
            "apply to Qwen3-VL rerankers only. Drop them."
        )
    runner = flags.value("--runner")
    if runner not in (None, "pooling"):
        raise ServerStartError(
            f"--runner {runner}: a reranker is served with --runner pooling; drop the flag"
        )
    user_overrides = flags.json_value("--hf-overrides")
    _check_overrides(checkpoint, user_overrides)

    args = ["--runner", "pooling"]
    if checkpoint.kind == "original" and user_overrides is None:
        overrides = ORIGINAL_OVERRIDES if checkpoint.family == "text" else VL_ORIGINAL_OVERRIDES
        args += ["--hf-overrides", json.dumps(overrides, separators=(",", ":"))]

    stored = checkpoint_dtype(config)
    dtype = choose_dtype(stored, cpu=cpu, user_dtype=flags.value("--dtype"), cpu_info=cpu_info)
    if dtype.flag and dtype.dtype is not None:
        args += ["--dtype", dtype.dtype]
    notes = [f"dtype={dtype.dtype or 'auto'} ({dtype.reason})"] if cpu or dtype.dtype else []

    user_len = flags.value("--max-model-len")
    chosen_len = _model_len(config, user_len, default=max_model_len)
    new_env: dict[str, str] = {}
    gpu_args: list[str] = []
    compute = dtype.dtype or stored or "bfloat16"
    cache = ImageCache.none()
    if checkpoint.family == "vl" and cache_manager:
        cache = _size_image_cache(
            config, flags, image_cache_pages, compute, memory=_cpu_memory(cpu, cpu_info)
        )
    elif checkpoint.family == "vl":
        if image_cache_pages:
            raise ServerStartError(
                f"image_cache_pages={image_cache_pages}: this vLLM has no --ec-manager-config, through which "
                "the plan sizes the encoder cache (vLLM 0.32 has it); pass image_cache_pages=0 (vLLM's own "
                "sizing) or upgrade vLLM"
            )
        cache = ImageCache.sized(0, 0, shrinkable=False, why="this vLLM has no --ec-manager-config")
    if cpu:
        chosen_len, kv_env, kv_notes = _size_cpu_kv_cache(
            config, flags, env or {}, chosen_len, fixed_len=user_len is not None, dtype=dtype.dtype
        )
        new_env.update(kv_env)
        notes += kv_notes
        cores_env, cores_notes = choose_reserved_cpus(cpu_info, env or {}, workers=_workers(flags))
        new_env.update(cores_env)
        notes += cores_notes
    else:
        memory, cache = _size_gpu_with_cache(
            config,
            flags,
            chosen_len,
            user_len is not None,
            dtype.dtype,
            stored,
            cache,
            gpu_memory=gpu_memory,
            device_bytes=gpu_total_bytes,
            weights_bytes=weights_bytes,
        )
        chosen_len = memory.max_model_len
        gpu_args = memory.args
        notes += memory.notes
    if user_len is None and chosen_len is not None:
        args += ["--max-model-len", str(chosen_len)]
    if checkpoint.family == "vl":
        args += _multimodal_args(flags, chosen_len) + cache.args
        new_env.update(cache.env)
        notes.append(cache.note)
    if throughput_defaults:
        args += _throughput_args(cpu=cpu, flags=flags)
    args += gpu_args
    warnings = exposure_warnings(
        host, api_key or bool((env or {}).get(VLLM_API_KEY_ENV) or os.environ.get(VLLM_API_KEY_ENV))
    )
    warnings += media_warnings
    return LaunchPlan(
        checkpoint.kind,
        args,
        new_env,
        chosen_len,
        family=checkpoint.family,
        dtype=dtype.dtype,
        notes=tuple(notes),
        warnings=tuple(warnings),
        chat_template=flags.value("--chat-template"),
        python_path=cache.python_path,
    )


def _server_media(flags: UserFlags, *, allow: bool, where: str) -> list[str]:
    """Refuse :data:`SERVER_MEDIA_FLAGS` unless allowed; when allowed, the warning that says what the
    server will fetch or read."""
    given = [flag for flag in SERVER_MEDIA_FLAGS if flags.given(flag)]
    if not given:
        return []
    if not allow:
        raise ServerStartError(
            f"{' and '.join(given)}{where} would make vLLM fetch image URLs or read files that a request "
            "names, and retrieved documents are attacker-controlled (internal URLs, local files). This "
            "library's client prepares images itself (image_fetcher=UrlFetcher(...) fetches under its own "
            "policy) and sends them inline. Drop the flag, or pass allow_server_media=True "
            "(serve: --allow-server-media) if every request to this server comes from trusted code."
        )
    domains = flags.values("--allowed-media-domains")
    local = flags.value("--allowed-local-media-path")
    opened = []
    if domains is not None:
        opened.append(f"http(s) image URLs on {', '.join(domains) or 'any domain'}")
    if local:
        opened.append(f"files under {local}")
    what = "; ".join(opened) or "nothing"
    return [
        f"allow_server_media: vLLM will fetch or read what a request names ({what}). "
        "Retrieved documents are attacker-controlled: never send their image references to this server."
    ]


def _model_len(config: Mapping[str, Any], user: str | None, *, default: int | None) -> int | None:
    """The length to serve: the user's ``--max-model-len`` (None for ``auto`` / ``-1``: vLLM's choice),
    else ``default``, else the config's positions capped at :data:`DEFAULT_MAX_MODEL_LEN`."""
    if user is not None:
        return None if user.strip() in ("-1", "auto") else human_int("--max-model-len", user)
    positions = int(_text_config(config).get("max_position_embeddings") or DEFAULT_MAX_MODEL_LEN)
    return default or min(positions, DEFAULT_MAX_MODEL_LEN)


def _size_gpu(
    config: Mapping[str, Any],
    flags: UserFlags,
    length: int | None,
    fixed_len: bool,
    dtype: str | None,
    stored: str | None,
    *,
    gpu_memory: float | None,
    device_bytes: int | None,
    weights_bytes: int | None,
    encoder_cache_bytes: int = 0,
) -> GpuMemory:
    """The GPU memory plan, for the dtype vLLM computes in (the user's, else the checkpoint's)."""
    tp = max(flags.int_value("--tensor-parallel-size", 1), 1)  # vLLM refuses sizes below 1
    pp = max(flags.int_value("--pipeline-parallel-size", 1), 1)
    compute = dtype or stored or "bfloat16"
    kv_dtype = flags.value("--kv-cache-dtype")
    per_token = kv_bytes_per_token(
        config, kv_dtype if kv_dtype not in (None, "auto") else compute, tp=tp, pp=pp
    )
    return size_gpu_memory(
        config,
        flags,
        length=length,
        fixed_len=fixed_len,
        dtype=compute,
        kv_per_token=per_token,
        gpu_memory=gpu_memory,
        device_bytes=device_bytes,
        weights_bytes=weights_bytes,
        encoder_cache_bytes=encoder_cache_bytes,
    )


def _size_gpu_with_cache(
    config: Mapping[str, Any],
    flags: UserFlags,
    length: int | None,
    fixed_len: bool,
    dtype: str | None,
    stored: str | None,
    cache: ImageCache,
    *,
    gpu_memory: float | None,
    device_bytes: int | None,
    weights_bytes: int | None,
) -> tuple[GpuMemory, ImageCache]:
    """The GPU memory plan with the encoder cache in it. A default-sized cache takes only what the
    cap leaves beside the plan without it: while it would shrink the KV cache or the length (or not
    fit), it is halved, down to vLLM's own sizing. A cache the user sized is kept, and a cap that
    cannot hold it is refused by :func:`~._memory.size_gpu_memory`."""

    def plan(cache: ImageCache) -> GpuMemory:
        return _size_gpu(
            config,
            flags,
            length,
            fixed_len,
            dtype,
            stored,
            gpu_memory=gpu_memory,
            device_bytes=device_bytes,
            weights_bytes=weights_bytes,
            encoder_cache_bytes=cache.bytes if cache.tokens else 0,
        )

    if not cache.shrinkable:
        return plan(cache), cache
    bare = plan(ImageCache.none())
    while cache.tokens:
        try:
            memory = plan(cache)
        except ServerStartError:
            cache = cache.halved()
            continue
        if (memory.kv_bytes, memory.max_model_len) == (bare.kv_bytes, bare.max_model_len):
            return memory, cache
        cache = cache.halved()
    return bare, cache


def _size_cpu_kv_cache(
    config: Mapping[str, Any],
    flags: UserFlags,
    env: Mapping[str, str],
    length: int | None,
    *,
    fixed_len: bool,
    dtype: str | None,
) -> tuple[int | None, dict[str, str], list[str]]:
    """The CPU KV-cache space per worker (``VLLM_CPU_KVCACHE_SPACE``, GiB) and a length that fits it.

    Every engine (``--data-parallel-size``, or ``--data-parallel-size-local`` on this node) and
    every tensor/pipeline-parallel worker of an engine allocates its own space, holding the heads
    and layers it computes; the total across workers stays within 8 GiB. A space the user chose
    (the variable, ``--kv-cache-memory-bytes``) is kept, and a length the user did not choose is
    shortened to fit it; with ``--gpu-memory-utilization`` vLLM sizes the cache itself.
    """
    tp = flags.int_value("--tensor-parallel-size", 1)
    pp = flags.int_value("--pipeline-parallel-size", 1)
    workers = _workers(flags)
    kv_dtype = flags.value("--kv-cache-dtype")
    per_token = kv_bytes_per_token(
        config, kv_dtype if kv_dtype not in (None, "auto") else dtype, tp=tp, pp=pp
    )
    per_worker = f" per worker, {workers} workers" if workers > 1 else ""

    # The server's environment is this process's, updated with ``env``; an empty value is "unset" to
    # vLLM, so a user who sets it empty asks for vLLM's own sizing (a fraction of the memory).
    user_space = (env if _KV_SPACE_ENV in env else os.environ).get(_KV_SPACE_ENV)
    user_bytes = flags.value("--kv-cache-memory-bytes")
    if not user_bytes and (user_space == "" or (flags.given("--gpu-memory-utilization") and not user_space)):
        return length, {}, ["KV cache sized by vLLM (--gpu-memory-utilization)"]
    new_env: dict[str, str] = {}
    if user_space:
        if not user_space.strip().isdigit():
            raise ServerStartError(f"{_KV_SPACE_ENV}={user_space!r}: vLLM expects a whole number of GiB")
        space_bytes = int(user_space) * _GIB
    elif user_bytes:
        space_bytes = human_int("--kv-cache-memory-bytes", user_bytes)
    elif length is None:
        return length, {}, []
    else:
        # Room for four full-length sequences per worker, within [1, 8 / workers] GiB.
        cap = max(1, _CPU_KV_SPACE_MAX_GIB // workers)
        space = min(max(1, math.ceil(4 * per_token * length / _GIB)), cap)
        new_env[_KV_SPACE_ENV] = str(space)
        space_bytes = space * _GIB
    notes = [f"KV cache {space_bytes / _GIB:g} GiB{per_worker}"] if workers > 1 else []
    fits = space_bytes // per_token
    if length is not None and fits < length and not fixed_len:
        length = int(fits // 32 * 32)
        notes.append(f"max_model_len shortened to {length} to fit the KV cache")
    return length, new_env, notes


def _workers(flags: UserFlags) -> int:
    """vLLM's worker processes on this machine: each engine (``--data-parallel-size``, or
    ``--data-parallel-size-local`` on this node) times its tensor- and pipeline-parallel workers."""
    tp = flags.int_value("--tensor-parallel-size", 1)
    pp = flags.int_value("--pipeline-parallel-size", 1)
    engines = flags.int_value("--data-parallel-size-local", flags.int_value("--data-parallel-size", 1))
    return max(engines, 1) * max(tp, 1) * max(pp, 1)


#: Image tokens of the largest image the official reranker sends (its ``max_pixels``), plus the
#: vision start/end tokens around it.
_MAX_IMAGE_PROMPT_TOKENS = MAX_PIXELS // (IMAGE_FACTOR * IMAGE_FACTOR) + 2
#: Images per pair (query and document together) when the length leaves room for them, with
#: this many tokens left for the template and the texts.
_MAX_IMAGES_PER_PAIR = 4
_TEXT_ROOM = 512


# --- the encoder cache (Qwen3-VL) ------------------------------------------------------------------

#: Image embeddings of the largest page the official reranker sends: its ``max_pixels`` over one
#: merged 32 x 32 patch (a 1240x1754 render is 1,800).
PAGE_EMBEDDINGS = MAX_PIXELS // (IMAGE_FACTOR * IMAGE_FACTOR)

#: Full-size pages vLLM's encoder cache holds by default: a RAG app's working set of popular pages
#: (the top 32 of a retriever for one query fit, so a second query over them encodes nothing again).
#: vLLM's own sizing holds ``--max-num-batched-tokens`` embeddings: 2,048 on its CPU build (one
#: page), 8,192 on an H100 (four).
DEFAULT_IMAGE_CACHE_PAGES = 32

#: The encoder cache manager the plan passes (``--ec-manager-config``): vLLM's own, with the slots
#: :data:`ENCODER_CACHE_TOKENS_ENV` asks for. It is a top-level module in :data:`ENCODER_CACHE_PATH`
#: (a directory holding only it), since the server's interpreter need not have this library installed.
ENCODER_CACHE_MANAGER = "qwen3_vllm_rerank_encoder_cache.SizedEncoderCacheManager"
ENCODER_CACHE_PATH = Path(__file__).parent / "vllm_path"
#: The image embeddings that manager holds (read by it in vLLM's engine process, which inherits it).
ENCODER_CACHE_TOKENS_ENV = "QWEN3_VLLM_RERANK_ENCODER_CACHE_TOKENS"

#: On vLLM's CPU build the encoder cache lives in RAM: a default-sized one never takes more than this
#: share of the machine's memory.
_CPU_IMAGE_CACHE_RAM_SHARE = 8


def encoder_cache_bytes_per_embedding(config: Mapping[str, Any], dtype: str) -> int:
    """Bytes one cached image embedding takes: vLLM's Qwen3-VL vision tower returns, per merged
    patch, the merger's output and one per DeepStack level (``out_hidden_size x (1 +
    len(deepstack_visual_indexes))`` values, ``vllm/model_executor/models/qwen3_vl.py``), in the
    dtype the model computes in."""
    vision = config.get("vision_config")
    vision = vision if isinstance(vision, Mapping) else {}
    width = int(vision.get("out_hidden_size") or _text_config(config)["hidden_size"])
    deepstack = vision.get("deepstack_visual_indexes")
    levels = 1 + (len(deepstack) if isinstance(deepstack, list | tuple) else 0)
    return width * levels * dtype_bytes(dtype)


@dataclass(frozen=True, slots=True)
class ImageCache:
    """The encoder cache chosen: ``tokens`` is the image embeddings the plan's cache manager holds
    (:data:`ENCODER_CACHE_MANAGER`; None: the plan passes nothing and vLLM, or the user's flags, size
    it), ``pages`` the full-size pages it holds, ``bytes`` their size at most; ``shrinkable``: the
    plan's default, which a GPU cap may halve."""

    pages: int
    bytes: int
    tokens: int | None
    note: str
    shrinkable: bool = False
    per_embedding: int = 0

    @property
    def args(self) -> list[str]:
        if self.tokens is None:
            return []
        manager = {"encoder_cache_manager_cls": ENCODER_CACHE_MANAGER}
        return ["--ec-manager-config", json.dumps(manager, separators=(",", ":"))]

    @property
    def env(self) -> dict[str, str]:
        return {} if self.tokens is None else {ENCODER_CACHE_TOKENS_ENV: str(self.tokens)}

    @property
    def python_path(self) -> tuple[str, ...]:
        return () if self.tokens is None else (str(ENCODER_CACHE_PATH),)

    @classmethod
    def none(cls) -> ImageCache:
        return cls(0, 0, None, "")

    @classmethod
    def sized(cls, pages: int, per_embedding: int, *, shrinkable: bool, why: str = "") -> ImageCache:
        """A cache of ``pages`` pages (0: vLLM's own sizing, nothing passed)."""
        if pages == 0:
            why = why.strip(" ()") or "image_cache_pages=0"
            note = f"encoder cache sized by vLLM ({why}: --max-num-batched-tokens embeddings)"
            return cls(0, 0, None, note)
        tokens = pages * PAGE_EMBEDDINGS
        size = tokens * per_embedding
        note = (
            f"encoder cache {pages} pages of {PAGE_EMBEDDINGS} image embeddings, {size / _GIB:.2f} GiB at "
            f"most{why} (--ec-manager-config {ENCODER_CACHE_MANAGER})"
        )
        return cls(pages, size, tokens, note, shrinkable, per_embedding)

    def halved(self) -> ImageCache:
        pages = self.pages // 2
        why = " (halved to fit the GPU memory)" if pages else " (the GPU memory leaves no room for more)"
        return ImageCache.sized(pages, self.per_embedding, shrinkable=pages > 0, why=why)


def _cpu_memory(cpu: bool, cpu_info: CpuInfo | None) -> int | None:
    return cpu_info.memory_bytes if cpu and cpu_info is not None else None


def _size_image_cache(
    config: Mapping[str, Any],
    flags: UserFlags,
    pages: int | None,
    dtype: str,
    *,
    memory: int | None,
) -> ImageCache:
    """The encoder cache for a Qwen3-VL server.

    vLLM sizes its encoder cache (vision-encoder outputs shared between requests by the image's hash,
    the oldest unreferenced evicted first) as ``max(max_num_batched_tokens, the largest image's
    embeddings)`` (``SchedulerConfig``, ``compute_mm_encoder_budget``): one page on its CPU build.
    Raising ``--max-num-batched-tokens`` grows it but also the scheduler's steps, which slowed a first
    pass by ~10% (``benchmarks/results/vl_encoder_cache.md``). So the plan passes its own manager
    class instead (:data:`ENCODER_CACHE_MANAGER`, vLLM's with more slots, through
    ``--ec-manager-config``; vLLM 0.27 to 0.32 build it from the scheduler), sized to ``pages x``
    :data:`PAGE_EMBEDDINGS` embeddings by :data:`ENCODER_CACHE_TOKENS_ENV`. ``memory``: the machine's
    RAM on vLLM's CPU build (a default-sized cache takes at most 1/8 of it), else None. The user's
    ``--ec-manager-config`` or ``--max-num-batched-tokens`` wins: the plan then passes nothing.
    """
    per_embedding = encoder_cache_bytes_per_embedding(config, dtype)
    if flags.given("--ec-manager-config"):
        return ImageCache(0, 0, None, "encoder cache managed by your --ec-manager-config")
    user = flags.value("--max-num-batched-tokens")
    if user is not None:
        tokens = max(human_int("--max-num-batched-tokens", user), PAGE_EMBEDDINGS)
        held = tokens // PAGE_EMBEDDINGS
        note = (
            f"encoder cache {held} pages of {PAGE_EMBEDDINGS} image embeddings, "
            f"{tokens * per_embedding / _GIB:.2f} GiB at most (vLLM's sizing: your --max-num-batched-tokens "
            f"{user})"
        )
        return ImageCache(held, tokens * per_embedding, None, note)
    if pages is not None:
        return ImageCache.sized(pages, per_embedding, shrinkable=False)
    pages, why = DEFAULT_IMAGE_CACHE_PAGES, ""
    if memory is not None:
        fits = memory // _CPU_IMAGE_CACHE_RAM_SHARE // (PAGE_EMBEDDINGS * per_embedding)
        if fits < pages:
            pages, why = max(int(fits), 1), f" (1/{_CPU_IMAGE_CACHE_RAM_SHARE} of this machine's memory)"
    return ImageCache.sized(pages, per_embedding, shrinkable=True, why=why)


#: The only host a Qwen3-VL server may fetch images from: none (``.invalid`` never resolves, RFC 2606).
#: vLLM fetches any http(s) image URL in a request by default (an empty allow-list means "all"); a
#: retrieved document is attacker-controlled, so a server fetching what it names is an SSRF hole.
#: The client sends images inline; users who want server-side fetching pass their own domains.
NO_MEDIA_DOMAIN = "none.invalid"


#: GiB of vLLM's multimodal processor cache for a Qwen3-VL server (a full-size page is ~44 MB there).
MM_PROCESSOR_CACHE_GB = 4


def _multimodal_args(flags: UserFlags, length: int | None) -> list[str]:
    """Qwen3-VL's image flags: the official reranker's pixel limits, images per pair, no URL fetching.

    The checkpoint's own processor config upsizes every image under 65,536 pixels; a client that
    prepared the image exactly as the official reranker does (:mod:`qwen3_vllm_rerank.images`) would
    then be scored on other pixels (measured: 0.49 off for a 64x64 image). With the official limits,
    vLLM's resize of an already-prepared image is the identity, and start-up profiles 1,800-token
    images instead of 16,384-token ones. Up to 4 images per pair, fewer when the length cannot hold 4 of the
    largest; no video (the client never sends one).

    The multimodal processor cache is passed explicitly (``--mm-processor-cache-gb 4``, vLLM 0.32's
    own default, made visible and kept on): the client sends byte-identical data URLs for identical
    pixels, so a page that comes back under another query is not processed again (measured with vLLM
    0.32: the second call's ``vllm:mm_cache_hits`` +1, ``tests/e2e/test_mm_cache.py``). A user's own
    value wins.
    """
    args: list[str] = []
    if not flags.given("--mm-processor-cache-gb"):
        args += ["--mm-processor-cache-gb", str(MM_PROCESSOR_CACHE_GB)]
    user_kwargs = flags.json_value("--mm-processor-kwargs")
    if user_kwargs is None:
        limits = {"min_pixels": MIN_PIXELS, "max_pixels": MAX_PIXELS}
        args += ["--mm-processor-kwargs", json.dumps(limits, separators=(",", ":"))]
    else:
        _check_pixel_limits(user_kwargs)
    if not flags.given("--limit-mm-per-prompt"):
        room = ((length or DEFAULT_MAX_MODEL_LEN) - _TEXT_ROOM) // _MAX_IMAGE_PROMPT_TOKENS
        images = min(max(room, 1), _MAX_IMAGES_PER_PAIR)
        limits = {"image": images, "video": 0}
        args += ["--limit-mm-per-prompt", json.dumps(limits, separators=(",", ":"))]
    if not flags.given("--allowed-media-domains"):
        args += ["--allowed-media-domains", NO_MEDIA_DOMAIN]
    return args


def _check_pixel_limits(kwargs: Mapping[str, Any]) -> None:
    """Refuse ``--mm-processor-kwargs`` whose image limits differ from the official reranker's,
    resolved as vLLM resolves them (``size`` edges, then ``min_pixels`` / ``max_pixels``)."""
    scoped = kwargs.get("images_kwargs")
    effective: dict[str, Any] = {}
    for source in (kwargs, scoped if isinstance(scoped, Mapping) else {}):
        size = source.get("size")
        if isinstance(size, Mapping):
            effective.update(size)
        for key, edge in (("min_pixels", "shortest_edge"), ("max_pixels", "longest_edge")):
            if key in source:
                effective[edge] = source[key]
    wanted = {"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS}
    if {edge: effective.get(edge) for edge in wanted} != wanted:
        raise ServerStartError(
            f"--mm-processor-kwargs {json.dumps(dict(kwargs))} gives images other pixel limits than the "
            f"official Qwen3-VL reranker (min_pixels {MIN_PIXELS}, max_pixels {MAX_PIXELS}): vLLM would "
            "resize the images the client prepared and the scores would differ from the model's. "
            f'Include "min_pixels": {MIN_PIXELS}, "max_pixels": {MAX_PIXELS}, or drop the flag.'
        )


def _throughput_args(*, cpu: bool, flags: UserFlags) -> list[str]:
    """Flags that make vLLM reuse the shared query prefix, unless the user set them.

    Every document of a query is scored as ``prefix + document`` with the same prefix.
    vLLM turns prefix caching on by default for last-token pooling models such as this
    one (``ModelConfig.is_prefix_caching_supported``), so only the CPU block size needs
    changing; ``benchmarks/prefix_cache.py`` measures the gain and the hit rate against vLLM's
    default block size (its report: ``benchmarks/results/prefix_cache.md``).
    vLLM's batch budget (``--max-num-batched-tokens``/``--max-num-seqs``) is left alone:
    no measurement showed a gain.
    """
    if not cpu or flags.given("--block-size", "--no-enable-prefix-caching"):
        return []
    return ["--block-size", str(CPU_BLOCK_SIZE)]
