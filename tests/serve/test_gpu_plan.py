"""The GPU launch plan as a pure function, for each published checkpoint shape: the server holds its
weights, activations for one batch and a KV cache for the sequences in flight (a few GiB), through
vLLM's byte-sized KV flag and a start-up utilization consistent with that total; ``gpu_memory``
caps it; the user's memory flags win."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qwen3_vllm_rerank import ServerStartError, VLLMServer
from qwen3_vllm_rerank.serve import plan_launch
from qwen3_vllm_rerank.serve._memory import (
    SEQUENCES_IN_FLIGHT,
    UNKNOWN_DEVICE_UTILIZATION,
    VLLM_DEFAULT_UTILIZATION,
    estimate_weight_bytes,
)
from qwen3_vllm_rerank.serve._plan import kv_bytes_per_token
from qwen3_vllm_rerank.serve._server import checkpoint_weight_bytes
from qwen3_vllm_rerank.serve._vllm_args import human_int

from .published_configs import CARD_BILLIONS, PUBLISHED_CONFIGS, VL_BILLIONS

GIB = 1024**3
SHAPES = sorted(PUBLISHED_CONFIGS)
MEMORY_FLAGS = ("--kv-cache-memory-bytes", "--gpu-memory-utilization")


def _value(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def _total_gib(notes: tuple[str, ...]) -> float:
    """The total the plan says the server holds, in GiB."""
    (note,) = [n for n in notes if n.startswith("GPU memory ")]
    match = re.match(r"GPU memory ([\d.]+) GiB", note)
    assert match, note
    return float(match[1])


def _encoder_cache_gib(notes: tuple[str, ...]) -> float:
    """The encoder cache the plan's total includes, in GiB (0 for a text checkpoint)."""
    (note,) = [n for n in notes if n.startswith("GPU memory ")]
    match = re.search(r"\+ encoder cache ([\d.]+) GiB", note)
    return float(match[1]) if match else 0.0


def test_the_published_shapes_imply_the_published_parameter_counts() -> None:
    for size, (total, non_embedding) in CARD_BILLIONS.items():
        config = PUBLISHED_CONFIGS[size]
        parameters = estimate_weight_bytes(config, "float32") / 4
        embedding = config["vocab_size"] * config["hidden_size"]  # type: ignore[operator]
        untied = 0 if config["tie_word_embeddings"] else embedding
        assert parameters / 1e9 == pytest.approx(total, abs=0.05), size
        decimals = len(str(non_embedding).split(".")[1])  # as rounded on the card
        half_unit = 0.5 * 10**-decimals
        assert (parameters - embedding - untied) / 1e9 == pytest.approx(non_embedding, abs=half_unit), size
    for size, total in VL_BILLIONS.items():
        parameters = estimate_weight_bytes(PUBLISHED_CONFIGS[size], "bfloat16") / 2
        assert parameters / 1e9 == pytest.approx(total, abs=0.05), size


@pytest.mark.parametrize("shape", SHAPES)
def test_each_shape_gets_a_kv_cache_for_the_sequences_in_flight(shape: str) -> None:
    config = PUBLISHED_CONFIGS[shape]
    plan = plan_launch(config, cpu=False)
    args = plan.args
    assert plan.max_model_len == 8192
    kv = human_int("--kv-cache-memory-bytes", _value(args, "--kv-cache-memory-bytes"))
    per_token = kv_bytes_per_token(config, "bfloat16")
    assert kv == math.ceil(SEQUENCES_IN_FLIGHT * 8192 * per_token / 2**20) * 2**20
    assert kv // per_token >= SEQUENCES_IN_FLIGHT * 8192
    # The device is unknown here: the start-up check asks for little; the bytes flag sizes the cache.
    assert float(_value(args, "--gpu-memory-utilization")) == UNKNOWN_DEVICE_UTILIZATION
    # A Qwen3-VL plan also holds its encoder cache (tests/serve/test_encoder_cache_plan.py).
    total = _total_gib(plan.notes) - _encoder_cache_gib(plan.notes)
    weights = estimate_weight_bytes(config, "bfloat16") / GIB
    assert weights + kv / GIB < total < weights + kv / GIB + 5  # activations: a few GiB at most
    assert total < 26  # a few GiB beyond the weights, never "most of the device"
    assert plan.summary().count("GPU memory") == 1


@pytest.mark.parametrize("shape", SHAPES)
def test_on_a_known_device_the_start_up_check_asks_for_the_total(shape: str) -> None:
    """vLLM refuses to start unless utilization x device memory is free, even with the bytes flag:
    the plan's utilization is its total over the device, rounded up to a hundredth."""
    config = PUBLISHED_CONFIGS[shape]
    device = 80 * GIB
    plan = plan_launch(config, cpu=False, gpu_total_bytes=device)
    utilization = float(_value(plan.args, "--gpu-memory-utilization"))
    total = _total_gib(plan.notes) * GIB
    assert utilization * device >= total - 0.05 * GIB
    assert utilization <= math.ceil(100 * (total + 0.05 * GIB) / device) / 100
    assert utilization < 0.35  # ~6-25 GiB of 80


@pytest.mark.parametrize("shape", SHAPES)
def test_gpu_memory_caps_the_total(shape: str) -> None:
    config = PUBLISHED_CONFIGS[shape]
    full = _total_gib(plan_launch(config, cpu=False).notes)
    cap = full - 2
    plan = plan_launch(config, cpu=False, gpu_memory=cap)
    assert _total_gib(plan.notes) <= cap
    assert f"what gpu_memory={cap:g} GiB leaves" in plan.summary()
    kv = human_int("", _value(plan.args, "--kv-cache-memory-bytes"))
    assert plan.max_model_len is not None
    assert kv // kv_bytes_per_token(config, "bfloat16") >= plan.max_model_len  # vLLM starts


def test_a_cap_too_small_for_full_length_shortens_the_length_or_is_refused() -> None:
    config = PUBLISHED_CONFIGS["0.6B"]
    per_token = kv_bytes_per_token(config, "bfloat16")
    floor = _total_gib(plan_launch(config, cpu=False).notes) - 3.5  # weights + activations
    plan = plan_launch(config, cpu=False, gpu_memory=floor + 0.5)
    assert plan.max_model_len is not None
    assert plan.max_model_len < 8192
    assert plan.max_model_len % 32 == 0
    assert _value(plan.args, "--max-model-len") == str(plan.max_model_len)
    assert "max_model_len shortened to" in plan.summary()
    kv = human_int("", _value(plan.args, "--kv-cache-memory-bytes"))
    assert kv // per_token >= plan.max_model_len
    with pytest.raises(ServerStartError, match=r"gpu_memory=2 GiB cannot hold one 8192-token sequence"):
        plan_launch(config, cpu=False, gpu_memory=2)
    with pytest.raises(ServerStartError, match="cannot hold one 8192-token sequence"):
        plan_launch(config, cpu=False, gpu_memory=floor + 0.5, extra_args=["--max-model-len", "8192"])


def test_a_known_device_is_never_planned_fuller_than_vllms_default_share() -> None:
    """The VL-8B's 24.5 GiB on a 24 GiB GPU: the KV cache shrinks to fit 92% of it."""
    config = PUBLISHED_CONFIGS["VL-8B"]
    plan = plan_launch(config, cpu=False, gpu_total_bytes=24 * GIB)
    assert _total_gib(plan.notes) <= 24 * VLLM_DEFAULT_UTILIZATION + 0.05
    assert float(_value(plan.args, "--gpu-memory-utilization")) <= VLLM_DEFAULT_UTILIZATION
    with pytest.raises(ServerStartError, match=r"of this 16\.0 GiB GPU cannot hold"):
        plan_launch(config, cpu=False, gpu_total_bytes=16 * GIB)


@pytest.mark.parametrize(
    "user",
    [
        ["--gpu-memory-utilization", "0.5"],
        ["--gpu_memory_utilization=0.5"],
        ["--gpu-memory-util", "0.5"],
    ],
)
def test_the_users_utilization_alone_lets_vllm_size_the_kv_cache(user: list[str]) -> None:
    plan = plan_launch(PUBLISHED_CONFIGS["4B"], cpu=False, extra_args=user, gpu_memory=8)
    assert not set(MEMORY_FLAGS) & set(plan.args)  # a bytes flag would override the user's fraction
    assert "GPU memory sized by vLLM (--gpu-memory-utilization 0.5, yours)" in plan.summary()


@pytest.mark.parametrize("user", [["--kv-cache-memory-bytes", "2G"], ["--kv-cache-memory=2G"]])
def test_the_users_kv_size_is_kept_and_the_utilization_still_chosen(user: list[str]) -> None:
    plan = plan_launch(PUBLISHED_CONFIGS["0.6B"], cpu=False, extra_args=user, gpu_total_bytes=40 * GIB)
    assert "--kv-cache-memory-bytes" not in plan.args
    assert "KV cache 2.0 GiB (yours)" in plan.summary()
    utilization = float(_value(plan.args, "--gpu-memory-utilization"))
    assert utilization * 40 == pytest.approx(_total_gib(plan.notes), abs=0.45)  # rounded up to 0.01
    with pytest.raises(ServerStartError, match="gpu_memory=3 GiB is less than this server holds"):
        plan_launch(PUBLISHED_CONFIGS["0.6B"], cpu=False, extra_args=user, gpu_memory=3)


def test_tensor_parallel_splits_weights_and_kv_per_gpu() -> None:
    config = PUBLISHED_CONFIGS["8B"]
    single = plan_launch(config, cpu=False)
    split = plan_launch(config, cpu=False, extra_args=["--tensor-parallel-size", "2"])
    kv = human_int("", _value(split.args, "--kv-cache-memory-bytes"))
    assert kv * 2 == human_int("", _value(single.args, "--kv-cache-memory-bytes"))
    assert "per GPU" in split.summary()
    assert _total_gib(split.notes) < _total_gib(single.notes) - 7


def test_the_checkpoints_own_weights_replace_the_estimate(tmp_path: Path) -> None:
    (tmp_path / "model-00001-of-00002.safetensors").write_bytes(b"\0" * 3000)
    (tmp_path / "model-00002-of-00002.safetensors").write_bytes(b"\0" * 1000)
    assert checkpoint_weight_bytes(tmp_path) == 4000
    assert checkpoint_weight_bytes("Qwen/Qwen3-Reranker-0.6B") is None
    config = PUBLISHED_CONFIGS["0.6B"]
    stated = plan_launch(config, cpu=False, weights_bytes=20 * GIB)
    assert "weights 20.0 GiB" in stated.summary()


def test_gpu_memory_is_refused_where_it_means_nothing() -> None:
    with pytest.raises(ServerStartError, match="VLLM_CPU_KVCACHE_SPACE"):
        plan_launch(PUBLISHED_CONFIGS["0.6B"], cpu=True, gpu_memory=8, env={"VLLM_CPU_KVCACHE_SPACE": "1"})
    with pytest.raises(ServerStartError, match="a positive number"):
        plan_launch(PUBLISHED_CONFIGS["0.6B"], cpu=False, gpu_memory=0)
    assert VLLMServer("unused", gpu_memory=8).gpu_memory == 8


@settings(max_examples=60, deadline=None)
@given(
    shape=st.sampled_from(SHAPES),
    cap=st.floats(min_value=1, max_value=80),
    device=st.one_of(st.none(), st.integers(min_value=8, max_value=192)),
    length=st.sampled_from([None, 512, 2048, 8192, 32768]),
)
def test_a_plan_always_fits_its_caps_and_its_longest_sequence(
    shape: str, cap: float, device: int | None, length: int | None
) -> None:
    """Invariant: a GPU plan either is refused with ServerStartError or holds at most gpu_memory (and
    at most 92% of a known device) and a KV cache with room for one max_model_len sequence."""
    config = PUBLISHED_CONFIGS[shape]
    try:
        plan = plan_launch(
            config,
            cpu=False,
            gpu_memory=cap,
            gpu_total_bytes=None if device is None else device * GIB,
            max_model_len=length,
        )
    except ServerStartError as exc:
        refused = str(exc)
        assert "cannot hold one" in refused
        return
    total = _total_gib(plan.notes)
    assert total <= cap + 0.05
    if device is not None:
        assert total <= device * VLLM_DEFAULT_UTILIZATION + 0.05
        assert float(_value(plan.args, "--gpu-memory-utilization")) * device >= total - 0.06
    kv = human_int("", _value(plan.args, "--kv-cache-memory-bytes"))
    assert plan.max_model_len is not None
    assert kv // kv_bytes_per_token(config, "bfloat16") >= plan.max_model_len
