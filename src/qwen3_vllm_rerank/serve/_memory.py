"""How much GPU memory a reranker server holds, and the vLLM flags that keep it to that (pure).

A reranker is a pooling model: no decoding, one prompt per document, each finished in the step that
computes its last token. It needs its weights, activations for one batch, and KV space for the
sequences in flight, a few GiB, not the 92% of the device vLLM reserves by default
(``--gpu-memory-utilization 0.92``), which leaves nothing for the LLM or the embedding model it
usually shares the GPU with.

vLLM (0.27 to 0.32, the same code) has two knobs, read in ``vllm/v1/worker/gpu_worker.py``:

* ``--kv-cache-memory-bytes N``: the KV cache is exactly N bytes per GPU, with no profiling against
  the utilization. The plan passes the size it computes here.
* ``--gpu-memory-utilization U``: without the bytes flag it sizes the KV cache as ``U x device``
  minus what profiling measured; with it, it is used for one thing only, the start-up check
  ``free memory >= ceil(U x device total)`` (``request_memory`` in ``vllm/v1/worker/utils.py``),
  which runs either way. Left at 0.92, that check refuses to start beside another process even when
  the reranker's few GiB fit. So the plan also passes U: the planned total over the device's memory
  when the device is known (the check then asks exactly "is what this server will hold free?"), else
  :data:`UNKNOWN_DEVICE_UTILIZATION`, a small floor that lets the server start on a shared GPU and
  leaves the fit to loading (a CUDA out-of-memory error names it then).

The user's ``--gpu-memory-utilization`` or ``--kv-cache-memory-bytes`` win: with the utilization
alone, vLLM sizes the KV cache itself (a bytes flag would override it, so none is added); with the
bytes alone, their size is used for the total and the utilization is still chosen.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ServerStartError
from ._vllm_args import UserFlags, human_int

__all__ = [
    "ACTIVATION_OVERHEAD_BYTES",
    "SEQUENCES_IN_FLIGHT",
    "UNKNOWN_DEVICE_UTILIZATION",
    "VLLM_DEFAULT_UTILIZATION",
    "GpuMemory",
    "estimate_weight_bytes",
    "size_gpu_memory",
]

_GIB = 1024**3
_MIB = 1024**2

#: Full-length sequences the KV cache holds at once (the CPU plan sizes its space the same way).
#: vLLM needs room for one to start; a pooling request leaves the cache when its last chunk is
#: computed, so more than a few only keep more prefixes cached.
SEQUENCES_IN_FLIGHT = 4

#: What a CUDA process holds besides weights, activations and KV: the CUDA context, cuBLAS and
#: attention workspaces, CUDA graphs (vLLM captures them for pooling models too).
ACTIVATION_OVERHEAD_BYTES = 1 * _GIB

#: Tokens of the batch vLLM profiles activations for when ``--max-num-batched-tokens`` is not given:
#: the largest default of vLLM's OpenAI server (16384 on devices of 160 GB or more, 8192 on
#: H100-class, 2048 elsewhere; ``EngineArgs.get_batch_defaults``), never less than the length.
_DEFAULT_BATCH_TOKENS = 16384

#: ``--gpu-memory-utilization`` when the device's memory is unknown (the Kubernetes manifests): vLLM's
#: start-up check then only asks for 5% of the device free, so a reranker starts beside an LLM that
#: took 90% of it; what it holds is set by ``--kv-cache-memory-bytes``, not by this.
UNKNOWN_DEVICE_UTILIZATION = 0.05

#: vLLM's default ``--gpu-memory-utilization`` (0.27 and 0.32): a known device is never planned fuller.
VLLM_DEFAULT_UTILIZATION = 0.92

_DTYPE_BYTES = {"float32": 4, "float": 4, "float16": 2, "half": 2, "bfloat16": 2}

#: transformers' defaults for the keys a Qwen3 / Qwen3-VL config.json may leave out.
_TEXT_DEFAULTS = {"vocab_size": 151936, "intermediate_size": 22016}
_VISION_DEFAULTS = {
    "depth": 27,
    "hidden_size": 1152,
    "intermediate_size": 4304,
    "out_hidden_size": 3584,
    "in_channels": 3,
    "patch_size": 16,
    "temporal_patch_size": 2,
    "spatial_merge_size": 2,
    "num_position_embeddings": 2304,
}
_VISION_DEEPSTACK_DEFAULT = (8, 16, 24)


def dtype_bytes(dtype: str) -> int:
    """Bytes of one element of ``dtype`` (``fp8*`` is 1; unknown names count as 16-bit)."""
    return 1 if dtype.startswith("fp8") else _DTYPE_BYTES.get(dtype, 2)


def _text_part(config: Mapping[str, Any]) -> Mapping[str, Any]:
    nested = config.get("text_config")
    return nested if isinstance(nested, Mapping) else config


def _get(part: Mapping[str, Any], key: str, defaults: Mapping[str, int]) -> int:
    return int(part.get(key) or defaults[key])


def _text_parameters(config: Mapping[str, Any]) -> int:
    """Parameters of the Qwen3 decoder: embeddings, layers (attention with q/k norms, SwiGLU MLP,
    two norms), final norm, and a separate ``lm_head`` when untied (vLLM loads it to build the score
    head, so it counts)."""
    text = _text_part(config)
    hidden = int(text["hidden_size"])
    heads = int(text["num_attention_heads"])
    kv_heads = int(text.get("num_key_value_heads") or heads)
    head_dim = int(text.get("head_dim") or hidden // heads)
    intermediate = _get(text, "intermediate_size", _TEXT_DEFAULTS)
    vocab = _get(text, "vocab_size", _TEXT_DEFAULTS)
    attention = hidden * head_dim * (2 * heads + 2 * kv_heads) + 2 * head_dim
    layer = attention + 3 * hidden * intermediate + 2 * hidden
    tied = config.get("tie_word_embeddings", text.get("tie_word_embeddings", True))
    return vocab * hidden * (1 if tied else 2) + int(text["num_hidden_layers"]) * layer + hidden


def _vision_parameters(vision: Mapping[str, Any]) -> int:
    """Parameters of the Qwen3-VL vision tower: patch and position embeddings, blocks (qkv and output
    projections, a two-layer MLP, two layer norms, with biases), the merger and the deepstack mergers."""
    hidden = _get(vision, "hidden_size", _VISION_DEFAULTS)
    intermediate = _get(vision, "intermediate_size", _VISION_DEFAULTS)
    patch = _get(vision, "patch_size", _VISION_DEFAULTS)
    patch_in = _get(vision, "in_channels", _VISION_DEFAULTS) * _get(
        vision, "temporal_patch_size", _VISION_DEFAULTS
    )
    embeddings = patch_in * patch * patch * hidden + hidden
    embeddings += _get(vision, "num_position_embeddings", _VISION_DEFAULTS) * hidden
    block = 4 * hidden * hidden + 4 * hidden + 2 * hidden * intermediate + intermediate + hidden + 4 * hidden
    merged = hidden * _get(vision, "spatial_merge_size", _VISION_DEFAULTS) ** 2
    out = _get(vision, "out_hidden_size", _VISION_DEFAULTS)
    merger = 2 * merged + merged * merged + merged + merged * out + out
    deepstack = vision.get("deepstack_visual_indexes", _VISION_DEEPSTACK_DEFAULT)
    mergers = 1 + (len(deepstack) if isinstance(deepstack, list | tuple) else 0)
    return embeddings + _get(vision, "depth", _VISION_DEFAULTS) * block + mergers * merger


def estimate_weight_bytes(config: Mapping[str, Any], dtype: str) -> int:
    """The weights' bytes in ``dtype``, from the parameter count ``config`` implies (a Qwen3-VL
    config's ``vision_config`` included; keys it leaves out take transformers' defaults)."""
    parameters = _text_parameters(config)
    vision = config.get("vision_config")
    if isinstance(vision, Mapping):
        parameters += _vision_parameters(vision)
    return parameters * dtype_bytes(dtype)


def _activation_bytes(config: Mapping[str, Any], dtype: str, batch_tokens: int) -> int:
    """Peak activations of one batch of ``batch_tokens`` tokens: the widest layer's tensors (gate and
    up projections, their product, the residual stream) per token, the vision tower's for the
    image patches those tokens may stand for (4 patches per merged token), and the fixed overhead."""
    size = dtype_bytes(dtype)
    text = _text_part(config)
    hidden = int(text["hidden_size"])
    per_token = size * (3 * _get(text, "intermediate_size", _TEXT_DEFAULTS) + 4 * hidden)
    total = per_token * batch_tokens
    vision = config.get("vision_config")
    if isinstance(vision, Mapping):
        merge = _get(vision, "spatial_merge_size", _VISION_DEFAULTS) ** 2
        vision_hidden = _get(vision, "hidden_size", _VISION_DEFAULTS)
        per_patch = size * (_get(vision, "intermediate_size", _VISION_DEFAULTS) + 4 * vision_hidden)
        total += per_patch * batch_tokens * merge
    return total + ACTIVATION_OVERHEAD_BYTES


@dataclass(frozen=True, slots=True)
class GpuMemory:
    """What the plan chose for one GPU: the flags to add, the length that fits, and the breakdown.

    ``total_bytes`` is None when vLLM sizes the KV cache itself (the user's utilization alone);
    ``kv_bytes`` then is None too.
    """

    args: list[str]
    max_model_len: int | None
    weights_bytes: int
    activation_bytes: int
    kv_bytes: int | None
    total_bytes: int | None
    utilization: float | None
    notes: list[str]


def _gib(value: int) -> str:
    return f"{value / _GIB:.1f} GiB"


def size_gpu_memory(
    config: Mapping[str, Any],
    flags: UserFlags,
    *,
    length: int | None,
    fixed_len: bool,
    dtype: str,
    kv_per_token: int,
    gpu_memory: float | None,
    device_bytes: int | None,
    weights_bytes: int | None,
    encoder_cache_bytes: int = 0,
) -> GpuMemory:
    """Size the server's GPU memory (per GPU: tensor and pipeline parallelism split the weights, and
    ``kv_per_token`` is already the share of one worker).

    Args:
        config: the checkpoint's config.json.
        flags: the user's vLLM flags (their ``--gpu-memory-utilization``, ``--kv-cache-memory-bytes``,
            ``--max-num-batched-tokens`` and parallel sizes are respected).
        length: the ``--max-model-len`` chosen (None: vLLM's choice, sized as the config's positions).
        fixed_len: whether the user chose the length (then it is never shortened).
        dtype: the dtype the weights are computed in.
        kv_per_token: KV bytes one token takes on one worker.
        gpu_memory: the cap on the total, in GiB per GPU (None: no cap).
        device_bytes: the GPU's total memory (None: unknown).
        weights_bytes: the checkpoint's weights as stored (None: estimated from ``config``).
        encoder_cache_bytes: the vision-encoder outputs vLLM keeps between requests (a Qwen3-VL
            reranker's encoder cache, :func:`~._plan.plan_launch`); counted in the total.

    KV = :data:`SEQUENCES_IN_FLIGHT` full-length sequences. The cap is ``gpu_memory`` and, on a known
    device, 92% of it (vLLM's own default share); a cap that cannot hold that KV shrinks the KV cache,
    then the length (in multiples of 32 tokens, when the user did not fix it). A cap that cannot hold
    the weights, activations and one full-length sequence is refused.
    """
    tp = max(flags.int_value("--tensor-parallel-size", 1), 1)
    pp = max(flags.int_value("--pipeline-parallel-size", 1), 1)
    stored = weights_bytes if weights_bytes is not None else estimate_weight_bytes(config, dtype)
    weights = math.ceil(stored / (tp * pp))
    positions = int(_text_part(config).get("max_position_embeddings") or 8192)
    sequence = length or positions
    batch = flags.int_value("--max-num-batched-tokens", max(_DEFAULT_BATCH_TOKENS, sequence))
    activations = _activation_bytes(config, dtype, batch)
    user_utilization = flags.value("--gpu-memory-utilization")
    user_kv = flags.value("--kv-cache-memory-bytes")
    if user_utilization is not None and user_kv is None:
        note = f"GPU memory sized by vLLM (--gpu-memory-utilization {user_utilization}, yours)"
        return GpuMemory([], length, weights, activations, None, None, None, [note])

    cap, budget = _cap(gpu_memory, device_bytes)
    notes: list[str] = []
    if user_kv is not None:
        kv = human_int("--kv-cache-memory-bytes", user_kv)
        source = "yours"
    else:
        kv = math.ceil(SEQUENCES_IN_FLIGHT * sequence * kv_per_token / _MIB) * _MIB
        source = f"{SEQUENCES_IN_FLIGHT} sequences of {sequence} tokens"
        if cap is not None and cap - weights - activations - encoder_cache_bytes < kv:
            kv = max((cap - weights - activations - encoder_cache_bytes) // _MIB * _MIB, 0)
            source = f"what {budget} leaves"
    fits = kv // kv_per_token
    if fits < sequence:
        if fixed_len or fits < 32:
            raise ServerStartError(
                f"{budget or 'the KV cache'} cannot hold one {sequence}-token sequence: weights "
                f"{_gib(weights)} + activations {_gib(activations)}{_encoder(encoder_cache_bytes)} + KV "
                f"{_gib(sequence * kv_per_token)} for one sequence. Raise gpu_memory (serve: "
                "--gpu-memory), pass a shorter --max-model-len, or serve on a larger GPU (or with "
                "--tensor-parallel-size)."
            )
        length = fits // 32 * 32
        notes.append(f"max_model_len shortened to {length} to fit the KV cache")
    total = weights + activations + encoder_cache_bytes + kv
    if cap is not None and total > cap:
        raise ServerStartError(
            f"{budget} is less than this server holds: weights {_gib(weights)} + activations "
            f"{_gib(activations)}{_encoder(encoder_cache_bytes)} + your KV cache {_gib(kv)}. Raise "
            "gpu_memory or lower --kv-cache-memory-bytes."
        )
    # In MiB (vLLM reads "3584M" as 3584 * 2**20, 0.27 and 0.32 alike): readable in logs and manifests.
    args = [] if user_kv is not None else ["--kv-cache-memory-bytes", f"{kv // _MIB}M"]
    utilization = _utilization(total, device_bytes, user_utilization)
    if user_utilization is None:
        args += ["--gpu-memory-utilization", f"{utilization:g}"]
    per_gpu = " per GPU" if tp * pp > 1 else ""
    notes.insert(
        0,
        f"GPU memory {_gib(total)}{per_gpu} = weights {_gib(weights)} + activations {_gib(activations)}"
        f"{_encoder(encoder_cache_bytes)} + KV cache {_gib(kv)} ({source})",
    )
    return GpuMemory(args, length, weights, activations, kv, total, utilization, notes)


def _encoder(encoder_cache_bytes: int) -> str:
    return f" + encoder cache {_gib(encoder_cache_bytes)}" if encoder_cache_bytes else ""


def _utilization(total: int, device_bytes: int | None, user: str | None) -> float:
    """The ``--gpu-memory-utilization`` that makes vLLM's start-up check ask for ``total`` free."""
    if user is not None:
        try:
            return float(user)
        except ValueError:
            raise ServerStartError(f"--gpu-memory-utilization must be a number, got {user!r}") from None
    if device_bytes is None:
        return UNKNOWN_DEVICE_UTILIZATION
    return min(math.ceil(100 * total / device_bytes) / 100, 1.0)


def _cap(gpu_memory: float | None, device_bytes: int | None) -> tuple[int | None, str]:
    """The most the server may hold, and how to name it: ``gpu_memory``, and never more than vLLM's
    own default share of a known device (:data:`VLLM_DEFAULT_UTILIZATION`)."""
    caps: list[tuple[int, str]] = []
    if gpu_memory is not None:
        caps.append((int(gpu_memory * _GIB), f"gpu_memory={gpu_memory:g} GiB"))
    if device_bytes is not None:
        share = int(device_bytes * VLLM_DEFAULT_UTILIZATION)
        caps.append((share, f"{VLLM_DEFAULT_UTILIZATION:.0%} of this {_gib(device_bytes)} GPU"))
    if not caps:
        return None, ""
    return min(caps)
