"""plan_launch's serving defaults: a prefix cache that hits on CPU, and the user's flags always win."""

from __future__ import annotations

import pytest

from qwen3_vllm_rerank.server import CPU_BLOCK_SIZE, plan_launch

CONFIG = {
    "architectures": ["Qwen3ForCausalLM"],
    "num_hidden_layers": 28,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "hidden_size": 1024,
    "max_position_embeddings": 40960,
    "torch_dtype": "bfloat16",
}
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
