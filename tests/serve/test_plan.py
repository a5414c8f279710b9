"""plan_launch, a pure function of the checkpoint's config, the user's flags and the machine: the
flags it reads in every spelling vLLM accepts, the CPU dtype, the KV cache per engine, the exposure
warnings, Qwen3-VL, and the serving defaults (a prefix cache that hits on CPU). The user's flags
always win."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from qwen3_vllm_rerank import ServerStartError
from qwen3_vllm_rerank.serve import CpuInfo, read_cpu_info
from qwen3_vllm_rerank.serve._plan import (
    CPU_BLOCK_SIZE,
    ORIGINAL_OVERRIDES,
    UNGUARDED_PATHS,
    VL_ORIGINAL_OVERRIDES,
    plan_launch,
)

from .published_configs import PUBLISHED_CONFIGS

CONFIG = PUBLISHED_CONFIGS["0.6B"]
THROUGHPUT_FLAGS = ("--enable-prefix-caching", "--no-enable-prefix-caching", "--block-size")


def _value(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def _flag_names(args: list[str]) -> list[str]:
    return [a.split("=", 1)[0].replace("_", "-") for a in args if a.startswith("--")]


def test_cpu_gets_blocks_shorter_than_the_shared_prefix() -> None:
    args = plan_launch(CONFIG, cpu=True, env={"VLLM_CPU_KVCACHE_SPACE": "1"}).args
    # The template, instruction and a short query take ~65-80 tokens: a block must be
    # shorter for any of it to be reused, and the CPU backend takes multiples of 32 only.
    assert _value(args, "--block-size") == str(CPU_BLOCK_SIZE)
    assert CPU_BLOCK_SIZE % 32 == 0
    assert CPU_BLOCK_SIZE < 65
    # vLLM enables prefix caching for last-token pooling models by itself.
    assert "--enable-prefix-caching" not in args


def test_gpu_keeps_vllms_defaults() -> None:
    args = plan_launch(CONFIG, cpu=False).args
    assert not set(THROUGHPUT_FLAGS) & set(_flag_names(args))  # GPUs default to 16-token blocks


@pytest.mark.parametrize(
    "user",
    [
        ["--block-size", "64"],
        ["--block-size=64"],
        ["--block_size", "64"],
        ["--no-enable-prefix-caching"],
        ["--enable-prefix-caching"],
        ["--enable_prefix_caching", "--block-size", "128"],
    ],
)
@pytest.mark.parametrize("cpu", [True, False])
def test_the_users_flags_win_and_are_never_duplicated(user: list[str], cpu: bool) -> None:
    plan = plan_launch(CONFIG, cpu=cpu, extra_args=user, env={"VLLM_CPU_KVCACHE_SPACE": "1"})
    names = _flag_names(plan.args + user)
    for flag in THROUGHPUT_FLAGS:
        assert names.count(flag) <= 1, f"{flag} twice in {plan.args + user}"
    if any(arg.startswith(("--block-size", "--block_size", "--no-enable-prefix-caching")) for arg in user):
        assert "--block-size" not in plan.args  # the user's block size, or no cache to serve


def test_throughput_defaults_can_be_left_to_vllm() -> None:
    for cpu in (True, False):
        args = plan_launch(
            CONFIG, cpu=cpu, env={"VLLM_CPU_KVCACHE_SPACE": "1"}, throughput_defaults=False
        ).args
        assert not set(THROUGHPUT_FLAGS) & set(_flag_names(args))


# --- the user's flags, read as vLLM reads them ------------------------------------------------------

ORIGINAL = CONFIG
CONVERTED = {**CONFIG, "architectures": ["Qwen3ForSequenceClassification"], "num_labels": 1}
USER_KV = {"VLLM_CPU_KVCACHE_SPACE": "1"}


@pytest.mark.parametrize(
    "user",
    [
        ["--max-model-len", "2048"],
        ["--max_model_len", "2048"],
        ["--max_model_len=2048"],
        ["--max-model-len", "2K"],
    ],
)
def test_the_users_max_model_len_in_any_spelling_is_the_only_one(
    user: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: with underscores the plan added a second --max-model-len and sized the KV cache
    for 8192 tokens instead of the user's 2048."""
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    plan = plan_launch(ORIGINAL, cpu=True, extra_args=user, cpu_info=AVX512_BF16)
    assert "--max-model-len" not in _flag_names(plan.args)
    assert plan.max_model_len == 2048
    # bf16, 112 KiB per token: four 2048-token sequences need 0.875 GiB -> 1 GiB (8192 tokens: 4 GiB).
    assert plan.env == {"VLLM_CPU_KVCACHE_SPACE": "1"}


def test_human_readable_lengths_read_like_vllm() -> None:
    assert plan_launch(ORIGINAL, cpu=False, extra_args=["--max-model-len", "2k"]).max_model_len == 2000
    assert plan_launch(ORIGINAL, cpu=False, extra_args=["--max-model-len=4K"]).max_model_len == 4096
    auto = plan_launch(ORIGINAL, cpu=True, extra_args=["--max-model-len", "auto"], env=USER_KV)
    assert auto.max_model_len is None  # vLLM chooses; the plan neither adds a length nor sizes for one
    assert "--max-model-len" not in auto.args
    assert "max_model_len=vLLM's choice" in auto.describe()
    with pytest.raises(ServerStartError, match="--max-model-len must be a number"):
        plan_launch(ORIGINAL, cpu=False, extra_args=["--max-model-len", "lots"])


@pytest.mark.parametrize(
    "user",
    [
        ["--hf-overrides", json.dumps(ORIGINAL_OVERRIDES)],
        ["--hf_overrides", json.dumps(ORIGINAL_OVERRIDES)],
        [f"--hf_overrides={json.dumps(ORIGINAL_OVERRIDES)}"],
        ["--hf-overrides.is_original_qwen3_reranker", "true"],
        [
            "--hf_overrides.classifier_from_token",
            '["no","yes"]',
            "--hf-overrides.is_original_qwen3_reranker=true",
        ],
    ],
)
def test_original_overrides_on_a_converted_checkpoint_are_refused_in_any_spelling(user: list[str]) -> None:
    """Regression: ``--hf_overrides`` skipped the guard (every score 0.5 on an untied checkpoint)."""
    with pytest.raises(ServerStartError, match=r"every score becomes 0\.5"):
        plan_launch(CONVERTED, cpu=False, extra_args=user)


@pytest.mark.parametrize("spelling", ["--hf-overrides", "--hf_overrides"])
def test_the_users_overrides_replace_the_plans(spelling: str) -> None:
    plan = plan_launch(ORIGINAL, cpu=False, extra_args=[spelling, json.dumps(ORIGINAL_OVERRIDES)])
    assert "--hf-overrides" not in plan.args  # vLLM keeps the last one: the user's would win anyway
    with pytest.raises(ServerStartError, match="not valid JSON"):
        plan_launch(ORIGINAL, cpu=False, extra_args=[spelling, "{architectures: nope}"])


@pytest.mark.parametrize(
    ("user", "message"),
    [
        (["--host", "0.0.0.0"], "pass host="),
        (["--port=8001"], "pass port="),
        (["--api_key", "k"], "pass api_key="),
        (["--model", "x"], "pass the model argument"),
        (["--runner", "generate"], "served with --runner pooling"),
        (["--limit-mm-per-prompt", '{"image": 1}'], "text-only"),
    ],
)
def test_flags_the_server_must_own_are_refused(user: list[str], message: str) -> None:
    with pytest.raises(ServerStartError, match=message):
        plan_launch(ORIGINAL, cpu=False, extra_args=user)
    assert plan_launch(ORIGINAL, cpu=False, extra_args=["--runner", "pooling"]).kind == "original"


# --- dtype by CPU capability -----------------------------------------------------------------------

X86_NO_BF16 = CpuInfo("x86_64", frozenset({"avx2", "avx512f", "avx512bw", "avx512_vnni"}))
AVX512_BF16 = CpuInfo("x86_64", X86_NO_BF16.flags | {"avx512_bf16"})
AMX = CpuInfo("x86_64", X86_NO_BF16.flags | {"amx_tile", "amx_bf16"})
ARM_BF16 = CpuInfo("aarch64", frozenset({"fp", "asimd", "asimdhp", "bf16", "sve"}))
ARM_NO_BF16 = CpuInfo("aarch64", frozenset({"fp", "asimd", "asimdhp"}))
UNKNOWN = CpuInfo("ppc64le", frozenset())


@pytest.mark.parametrize(
    ("stored", "cpu_info", "expected"),
    [
        ("bfloat16", X86_NO_BF16, "float32"),
        ("bfloat16", AVX512_BF16, "bfloat16"),
        ("bfloat16", AMX, "bfloat16"),
        ("bfloat16", ARM_BF16, "bfloat16"),
        ("bfloat16", ARM_NO_BF16, "float32"),
        ("float16", X86_NO_BF16, "float32"),
        ("float16", ARM_NO_BF16, "float16"),
        ("float32", AVX512_BF16, "float32"),  # vLLM would cast a float32 pooling model to float16
        ("float32", X86_NO_BF16, "float32"),
        ("bfloat16", UNKNOWN, None),  # flags unreadable: vLLM decides
        (None, X86_NO_BF16, None),  # config.json states no dtype: vLLM reads the weights
    ],
)
def test_cpu_dtype_follows_what_the_cpu_computes_natively(
    stored: str | None, cpu_info: CpuInfo, expected: str | None
) -> None:
    config = {k: v for k, v in ORIGINAL.items() if k != "torch_dtype"}
    if stored:
        config["torch_dtype"] = stored
    plan = plan_launch(config, cpu=True, cpu_info=cpu_info, env=USER_KV)
    assert plan.dtype == expected
    given = [plan.args[i + 1] for i, a in enumerate(plan.args) if a == "--dtype"]
    assert given == ([expected] if expected else [])
    assert f"dtype={expected or 'auto'} (" in plan.describe()


def test_describe_says_why_float32_on_a_cpu_without_bf16() -> None:
    text = plan_launch(ORIGINAL, cpu=True, cpu_info=X86_NO_BF16, env=USER_KV).describe()
    assert "dtype=float32 (the checkpoint is bfloat16 but this CPU has no native bfloat16" in text
    assert "avx512_bf16 or amx_bf16" in text
    native = plan_launch(ORIGINAL, cpu=True, cpu_info=AVX512_BF16, env=USER_KV).describe()
    assert "dtype=bfloat16 (the checkpoint's; this CPU computes bfloat16 natively (avx512_bf16))" in native


@pytest.mark.parametrize("user", [["--dtype", "bfloat16"], ["--dtype=bfloat16"], ["--dtype", "auto"]])
def test_the_users_dtype_always_wins(user: list[str]) -> None:
    plan = plan_launch(ORIGINAL, cpu=True, cpu_info=X86_NO_BF16, extra_args=user, env=USER_KV)
    assert "--dtype" not in plan.args
    assert plan.dtype == (None if user[-1].endswith("auto") else "bfloat16")
    assert "yours" in plan.describe()


def test_gpu_dtype_is_left_to_vllm() -> None:
    plan = plan_launch(ORIGINAL, cpu=False, cpu_info=X86_NO_BF16)
    assert plan.dtype is None
    assert "--dtype" not in plan.args
    assert "dtype" not in plan.describe()


def test_kv_cache_is_sized_for_the_chosen_dtype(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    # 0.6B shape: 112 KiB per token in bf16, 224 KiB in float32; four 8192-token sequences.
    assert plan_launch(ORIGINAL, cpu=True, cpu_info=AVX512_BF16).env == {"VLLM_CPU_KVCACHE_SPACE": "4"}
    assert plan_launch(ORIGINAL, cpu=True, cpu_info=X86_NO_BF16).env == {"VLLM_CPU_KVCACHE_SPACE": "7"}
    fp8 = plan_launch(ORIGINAL, cpu=True, cpu_info=X86_NO_BF16, extra_args=["--kv_cache_dtype", "fp8"])
    assert fp8.env == {"VLLM_CPU_KVCACHE_SPACE": "2"}


def test_read_cpu_info_reads_x86_and_arm_flags(tmp_path: Path) -> None:
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu avx2 avx512f avx512_bf16\n\n")
    assert read_cpu_info(x86).flags == {"fpu", "avx2", "avx512f", "avx512_bf16"}
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd asimdhp bf16\n\n")
    assert read_cpu_info(arm).flags == {"fp", "asimd", "asimdhp", "bf16"}
    assert read_cpu_info(tmp_path / "missing").flags == frozenset()


# --- data parallelism --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "user", [["--data-parallel-size", "2"], ["--data_parallel_size=2"], ["-dp", "2"], ["-dp=2"]]
)
def test_data_parallel_engines_share_the_kv_budget(user: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    plan = plan_launch(ORIGINAL, cpu=True, cpu_info=X86_NO_BF16, extra_args=user)
    # float32: four 8192-token sequences need 7 GiB per engine; two engines share the 8 GiB cap.
    assert plan.env == {"VLLM_CPU_KVCACHE_SPACE": "4"}
    assert plan.max_model_len == 8192  # 4 GiB still hold 18,724 float32 tokens
    assert "KV cache 4 GiB per worker, 2 workers" in plan.describe()
    assert not {"--data-parallel-size", "-dp"} & set(plan.args)  # the user's flags pass through as given


def test_data_parallel_on_gpu_changes_nothing() -> None:
    single = plan_launch(ORIGINAL, cpu=False)
    assert plan_launch(ORIGINAL, cpu=False, extra_args=["--data-parallel-size", "4"]).args == single.args


def test_local_data_parallel_size_counts_the_engines_on_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    user = ["-dp", "4", "--data-parallel-size-local", "1"]
    plan = plan_launch(ORIGINAL, cpu=True, cpu_info=AVX512_BF16, extra_args=user)
    assert plan.env == {"VLLM_CPU_KVCACHE_SPACE": "4"}  # one engine here: the single-engine size
    assert plan.max_model_len == 8192


def test_a_kv_space_the_user_chose_is_kept_and_the_length_fits_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    plan = plan_launch(ORIGINAL, cpu=True, cpu_info=X86_NO_BF16)  # float32: 224 KiB per token
    assert plan.env == {}
    assert plan.max_model_len == 4672  # 1 GiB / 224 KiB = 4681 tokens, in blocks of 32
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE")
    flag = plan_launch(ORIGINAL, cpu=True, cpu_info=X86_NO_BF16, extra_args=["--kv-cache-memory-bytes", "1G"])
    assert flag.env == {}  # the variable would override the user's flag
    assert flag.max_model_len == 4672
    fraction = plan_launch(
        ORIGINAL, cpu=True, cpu_info=X86_NO_BF16, extra_args=["--gpu-memory-utilization", "0.3"]
    )
    assert fraction.env == {}
    assert fraction.max_model_len == 8192


# --- cores: a small machine computes on all of them -------------------------------------------------

RESERVED = "VLLM_CPU_NUM_OF_RESERVED_CPU"


def _cores(n: int | None) -> CpuInfo:
    return CpuInfo("x86_64", AVX512_BF16.flags, n)


@pytest.mark.parametrize("cores", [1, 2, 4])
def test_on_a_small_machine_no_core_is_kept_from_the_model(
    cores: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(RESERVED, raising=False)
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    plan = plan_launch(ORIGINAL, cpu=True, cpu_info=_cores(cores), env={"VLLM_CPU_KVCACHE_SPACE": "1"})
    assert plan.env == {RESERVED: "0"}
    assert f"no core reserved for vLLM's scheduler ({RESERVED}=0)" in plan.describe()
    assert f"1 of this machine's {cores}" in plan.describe()


@pytest.mark.parametrize(
    ("cores", "user_env", "extra_args"),
    [
        (8, {}, []),  # a bigger machine: one core for the scheduler is a small share
        (None, {}, []),  # unknown
        (2, {RESERVED: "1"}, []),  # the user's value
        (2, {RESERVED: ""}, []),
        (2, {"VLLM_CPU_OMP_THREADS_BIND": "0-1"}, []),  # the user's own binding: no reservation applies
        (2, {}, ["-dp", "2"]),  # several workers: each engine's scheduler needs its core
        (2, {}, ["--tensor-parallel-size", "2"]),
    ],
)
def test_vllms_core_reservation_stays_where_it_is_not_ours_to_change(
    cores: int | None, user_env: dict[str, str], extra_args: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(RESERVED, raising=False)
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    env = {"VLLM_CPU_KVCACHE_SPACE": "1", **user_env}
    plan = plan_launch(ORIGINAL, cpu=True, cpu_info=_cores(cores), env=env, extra_args=extra_args)
    assert RESERVED not in plan.env
    assert "no core reserved" not in plan.describe()


def test_a_reservation_in_this_processs_environment_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(RESERVED, "1")
    plan = plan_launch(ORIGINAL, cpu=True, cpu_info=_cores(2), env={"VLLM_CPU_KVCACHE_SPACE": "1"})
    assert RESERVED not in plan.env


def test_gpus_and_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(RESERVED, raising=False)
    assert RESERVED not in plan_launch(ORIGINAL, cpu=False, cpu_info=_cores(2)).env
    assert read_cpu_info().cores == len(os.sched_getaffinity(0))


# --- network exposure ----------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_loopback_hosts_need_no_warning(host: str) -> None:
    assert plan_launch(ORIGINAL, cpu=False, host=host, api_key=True).warnings == ()


def test_an_api_key_on_a_network_host_says_which_paths_stay_open() -> None:
    plan = plan_launch(ORIGINAL, cpu=False, host="0.0.0.0", api_key=True)
    (warning,) = plan.warnings
    assert "--api-key guards only paths under /v1, /v2, /inference, /cohere" in warning
    for path in ("/score", "/rerank", "/classify", "/pooling", "/tokenize", "/detokenize", "/metrics"):
        assert path in UNGUARDED_PATHS
        assert path in warning
    assert "\nWARNING: binding 0.0.0.0" in plan.describe()
    (open_warning,) = plan_launch(ORIGINAL, cpu=False, host="10.1.2.3").warnings
    assert "without an API key: every endpoint" in open_warning


def test_vllms_own_api_key_variable_counts_as_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_API_KEY", "k")
    (warning,) = plan_launch(ORIGINAL, cpu=False, host="0.0.0.0").warnings
    assert "guards only" in warning


# --- Qwen3-VL ---------------------------------------------------------------------------------------------

#: The fields of Qwen/Qwen3-VL-Reranker-2B's config.json that the plan reads.
VL_ORIGINAL = {
    "architectures": ["Qwen3VLForConditionalGeneration"],
    "model_type": "qwen3_vl",
    "text_config": {
        "hidden_size": 2048,
        "num_hidden_layers": 28,
        "num_attention_heads": 16,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "max_position_embeddings": 262144,
        "dtype": "bfloat16",
    },
    "vision_config": {"patch_size": 16, "spatial_merge_size": 2},
}
VL_CONVERTED = {**VL_ORIGINAL, "architectures": ["Qwen3VLForSequenceClassification"]}


def test_the_users_multimodal_cache_size_wins() -> None:
    plan = plan_launch(VL_ORIGINAL, cpu=False, extra_args=["--mm-processor-cache-gb=0"])
    assert "--mm-processor-cache-gb" not in plan.args  # the user's own flag, passed through, is the one


def test_an_original_vl_checkpoint_gets_the_vl_overrides_and_the_official_image_limits() -> None:
    plan = plan_launch(VL_ORIGINAL, cpu=False)
    assert (plan.family, plan.kind) == ("vl", "original")
    assert json.loads(_value(plan.args, "--hf-overrides")) == VL_ORIGINAL_OVERRIDES
    assert VL_ORIGINAL_OVERRIDES["architectures"] == ["Qwen3VLForSequenceClassification"]
    assert json.loads(_value(plan.args, "--mm-processor-kwargs")) == {
        "min_pixels": 4096,
        "max_pixels": 1843200,
    }
    assert json.loads(_value(plan.args, "--limit-mm-per-prompt")) == {"image": 4, "video": 0}
    assert _value(plan.args, "--allowed-media-domains") == "none.invalid"  # the server fetches no URL
    assert _value(plan.args, "--mm-processor-cache-gb") == "4"  # pages that come back are not processed again
    assert plan.max_model_len == 8192
    assert plan.describe().startswith("original Qwen3-VL checkpoint, max_model_len=8192")


def test_a_converted_vl_checkpoint_gets_no_overrides_but_the_image_limits() -> None:
    plan = plan_launch(VL_CONVERTED, cpu=False)
    assert (plan.family, plan.kind) == ("vl", "converted")
    assert "--hf-overrides" not in plan.args
    assert "--mm-processor-kwargs" in plan.args


def test_vl_on_cpu_sizes_from_the_text_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    plan = plan_launch(VL_ORIGINAL, cpu=True, cpu_info=X86_NO_BF16)
    assert plan.dtype == "float32"  # the text config's bfloat16, emulated on this CPU
    assert plan.env == {
        "VLLM_CPU_KVCACHE_SPACE": "7",
        "QWEN3_VLLM_RERANK_ENCODER_CACHE_TOKENS": "57600",
    }  # 28 layers x 8 heads x 128 x 2 x 4 bytes
    short = plan_launch(VL_ORIGINAL, cpu=False, extra_args=["--max-model-len", "2048"])
    assert json.loads(_value(short.args, "--limit-mm-per-prompt")) == {"image": 1, "video": 0}


@pytest.mark.parametrize(
    ("config", "overrides", "message"),
    [
        (VL_ORIGINAL, ORIGINAL_OVERRIDES, "for a text reranker"),
        (VL_CONVERTED, ORIGINAL_OVERRIDES, "every score becomes 0.5"),
        (ORIGINAL, VL_ORIGINAL_OVERRIDES, "for a Qwen3-VL reranker"),
        (CONVERTED, VL_ORIGINAL_OVERRIDES, "every score becomes 0.5"),
        (CONVERTED, {"architectures": ["Qwen3VLForSequenceClassification"]}, "for a Qwen3-VL reranker"),
    ],
)
def test_overrides_of_the_other_family_are_refused(
    config: dict[str, object], overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(ServerStartError, match=message):
        plan_launch(config, cpu=False, extra_args=["--hf-overrides", json.dumps(overrides)])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_pixels": 65536, "max_pixels": 1843200},
        {"max_pixels": 1843200},  # the checkpoint's min (65536) would stay
        {"size": {"shortest_edge": 4096, "longest_edge": 16777216}},
        {"do_resize": False},
    ],
)
def test_image_limits_other_than_the_official_ones_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ServerStartError, match="other pixel limits than the official"):
        plan_launch(VL_ORIGINAL, cpu=False, extra_args=["--mm-processor-kwargs", json.dumps(kwargs)])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_pixels": 4096, "max_pixels": 1843200, "fps": 1},
        {"size": {"shortest_edge": 4096, "longest_edge": 1843200}},
        {"images_kwargs": {"size": {"shortest_edge": 4096, "longest_edge": 1843200}}},
    ],
)
def test_the_users_official_image_limits_are_accepted_once(kwargs: dict[str, object]) -> None:
    user = ["--mm_processor_kwargs", json.dumps(kwargs), "--limit-mm-per-prompt", '{"image": 2}']
    user += ["--allowed_media_domains", "images.example.com"]
    plan = plan_launch(VL_ORIGINAL, cpu=False, extra_args=user, allow_server_media=True)
    assert not {"--mm-processor-kwargs", "--limit-mm-per-prompt", "--allowed-media-domains"} & set(plan.args)
