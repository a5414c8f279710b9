"""The plan sizes a Qwen3-VL server's encoder cache (pure function, published 2B and 8B configs): its own
cache manager through ``--ec-manager-config``, never a larger ``--max-num-batched-tokens``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from qwen3_vllm_rerank import VLLMServer
from qwen3_vllm_rerank.errors import ServerStartError
from qwen3_vllm_rerank.serve._cpu import CpuInfo
from qwen3_vllm_rerank.serve._plan import (
    DEFAULT_IMAGE_CACHE_PAGES,
    ENCODER_CACHE_MANAGER,
    ENCODER_CACHE_PATH,
    ENCODER_CACHE_TOKENS_ENV,
    PAGE_EMBEDDINGS,
    LaunchPlan,
    encoder_cache_bytes_per_embedding,
    plan_launch,
)
from qwen3_vllm_rerank.serve._vllm_args import UserFlags

from .published_configs import PUBLISHED_CONFIGS

_GIB = 1024**3
_CPU = CpuInfo("x86_64", frozenset({"avx512_bf16"}), 2, 64 * _GIB)


def _cache_tokens(plan: LaunchPlan) -> int | None:
    """The embeddings the plan's cache manager holds (None: the plan passes no manager), checked
    to travel as a whole: the flag, the size, the directory the server imports the manager from."""
    assert UserFlags(plan.args).value("--max-num-batched-tokens") is None  # scheduler steps untouched
    manager = UserFlags(plan.args).json_value("--ec-manager-config")
    if manager is None:
        assert ENCODER_CACHE_TOKENS_ENV not in plan.env
        assert plan.python_path == ()
        return None
    assert manager == {"encoder_cache_manager_cls": ENCODER_CACHE_MANAGER}
    module = ENCODER_CACHE_MANAGER.rsplit(".", 1)[0]
    (directory,) = plan.python_path
    assert sorted(p.name for p in Path(directory).glob("*.py")) == [f"{module}.py"]
    return int(plan.env[ENCODER_CACHE_TOKENS_ENV])


@pytest.mark.parametrize(("name", "width"), [("VL-2B", 2048), ("VL-8B", 4096)])
def test_one_cached_embedding_carries_the_deepstack_levels(name: str, width: int) -> None:
    # out_hidden_size x (1 + 3 DeepStack levels) values of 2 bytes.
    assert encoder_cache_bytes_per_embedding(PUBLISHED_CONFIGS[name], "bfloat16") == width * 4 * 2


@pytest.mark.parametrize(("name", "gib"), [("VL-2B", "0.88"), ("VL-8B", "1.76")])
def test_cpu_plan_sizes_the_default_cache_in_pages_and_bytes(name: str, gib: str) -> None:
    plan = plan_launch(PUBLISHED_CONFIGS[name], cpu=True, cpu_info=_CPU)
    assert _cache_tokens(plan) == DEFAULT_IMAGE_CACHE_PAGES * PAGE_EMBEDDINGS
    assert f"encoder cache {DEFAULT_IMAGE_CACHE_PAGES} pages" in plan.describe()
    assert f"{gib} GiB at most" in plan.describe()


def test_cpu_plan_keeps_the_default_cache_within_an_eighth_of_ram() -> None:
    small = CpuInfo("x86_64", frozenset({"avx512_bf16"}), 2, 8 * _GIB)
    plan = plan_launch(PUBLISHED_CONFIGS["VL-8B"], cpu=True, cpu_info=small)
    per_page = PAGE_EMBEDDINGS * encoder_cache_bytes_per_embedding(PUBLISHED_CONFIGS["VL-8B"], "bfloat16")
    pages = _GIB // per_page  # 1/8 of 8 GiB
    assert _cache_tokens(plan) == pages * PAGE_EMBEDDINGS
    assert "1/8 of this machine's memory" in plan.describe()


@pytest.mark.parametrize("name", ["VL-2B", "VL-8B"])
def test_gpu_plan_counts_the_cache_and_only_the_cache_in_the_memory_plan(name: str) -> None:
    config = PUBLISHED_CONFIGS[name]
    sized = plan_launch(config, cpu=False, gpu_total_bytes=80 * _GIB)
    vllms = plan_launch(config, cpu=False, gpu_total_bytes=80 * _GIB, image_cache_pages=0)
    cache = (
        DEFAULT_IMAGE_CACHE_PAGES * PAGE_EMBEDDINGS * encoder_cache_bytes_per_embedding(config, "bfloat16")
    )
    assert _cache_tokens(sized) == DEFAULT_IMAGE_CACHE_PAGES * PAGE_EMBEDDINGS
    assert _cache_tokens(vllms) is None
    assert f"+ encoder cache {cache / _GIB:.1f} GiB" in sized.describe()
    assert "sized by vLLM (image_cache_pages=0" in vllms.describe()
    # The same batch (activations) and KV cache: the totals differ by the cache alone.
    assert _activations(sized) == _activations(vllms)
    assert UserFlags(sized.args).value("--kv-cache-memory-bytes") == UserFlags(vllms.args).value(
        "--kv-cache-memory-bytes"
    )
    sized_util = float(UserFlags(sized.args).value("--gpu-memory-utilization") or 0)
    vllms_util = float(UserFlags(vllms.args).value("--gpu-memory-utilization") or 0)
    assert sized_util == pytest.approx(vllms_util + cache / (80 * _GIB), abs=0.01)


def _activations(plan: LaunchPlan) -> str:
    (note,) = [n for n in plan.notes if n.startswith("GPU memory ")]
    return note.split("activations ", 1)[1].split(" GiB", 1)[0]


def test_gpu_cap_halves_a_default_cache_until_it_fits_beside_the_kv_cache() -> None:
    bare = plan_launch(PUBLISHED_CONFIGS["VL-2B"], cpu=False, gpu_memory=11, image_cache_pages=0)
    plan = plan_launch(PUBLISHED_CONFIGS["VL-2B"], cpu=False, gpu_memory=11)
    assert _cache_tokens(plan) == DEFAULT_IMAGE_CACHE_PAGES // 2 * PAGE_EMBEDDINGS
    assert "halved to fit the GPU memory" in plan.describe()
    # The default cache takes only what the cap leaves: the KV cache and the length stay.
    assert UserFlags(plan.args).value("--kv-cache-memory-bytes") == UserFlags(bare.args).value(
        "--kv-cache-memory-bytes"
    )
    assert plan.max_model_len == bare.max_model_len == 8192


def test_a_cap_with_no_room_leaves_the_cache_to_vllm() -> None:
    plan = plan_launch(PUBLISHED_CONFIGS["VL-2B"], cpu=False, gpu_memory=8)
    assert _cache_tokens(plan) is None
    assert "encoder cache sized by vLLM (the GPU memory leaves no room for more" in plan.describe()


def test_a_cache_the_user_sized_is_never_shrunk() -> None:
    plan = plan_launch(PUBLISHED_CONFIGS["VL-2B"], cpu=False, gpu_memory=11, image_cache_pages=64)
    assert _cache_tokens(plan) == 64 * PAGE_EMBEDDINGS
    assert "what gpu_memory=11 GiB leaves" in plan.describe()  # the KV cache gave way instead
    with pytest.raises(ServerStartError, match="gpu_memory=8 GiB"):
        plan_launch(PUBLISHED_CONFIGS["VL-2B"], cpu=False, gpu_memory=8, image_cache_pages=64)


def test_the_users_batch_flag_wins_and_describe_says_what_the_cache_holds() -> None:
    plan = plan_launch(
        PUBLISHED_CONFIGS["VL-2B"], cpu=True, cpu_info=_CPU, extra_args=["--max-num-batched-tokens", "9000"]
    )
    assert _cache_tokens(plan) is None
    assert "encoder cache 5 pages" in plan.describe()
    assert "your --max-num-batched-tokens 9000" in plan.describe()


def test_the_users_cache_manager_wins() -> None:
    theirs = json.dumps({"encoder_cache_manager_cls": "their_module.TheirManager"})
    plan = plan_launch(
        PUBLISHED_CONFIGS["VL-2B"],
        cpu=False,
        gpu_total_bytes=80 * _GIB,
        extra_args=["--ec-manager-config", theirs],
    )
    assert plan.args.count("--ec-manager-config") == 0  # theirs reaches vLLM from the user's flags
    assert ENCODER_CACHE_TOKENS_ENV not in plan.env
    assert plan.python_path == ()
    assert "encoder cache managed by your --ec-manager-config" in plan.describe()
    assert "+ encoder cache" not in plan.describe()


def test_explicit_pages_are_passed() -> None:
    plan = plan_launch(PUBLISHED_CONFIGS["VL-2B"], cpu=True, cpu_info=_CPU, image_cache_pages=64)
    assert _cache_tokens(plan) == 64 * PAGE_EMBEDDINGS


def test_text_checkpoints_get_no_cache_and_refuse_the_knob() -> None:
    plan = plan_launch(PUBLISHED_CONFIGS["8B"], cpu=True, cpu_info=_CPU)
    assert _cache_tokens(plan) is None
    assert "encoder cache" not in plan.describe()
    with pytest.raises(ServerStartError, match="image_cache_pages"):
        plan_launch(PUBLISHED_CONFIGS["8B"], cpu=True, cpu_info=_CPU, image_cache_pages=4)
    with pytest.raises(ServerStartError, match="image_cache_pages"):
        plan_launch(PUBLISHED_CONFIGS["VL-2B"], cpu=True, cpu_info=_CPU, image_cache_pages=-1)


def test_the_server_imports_the_plans_manager_before_the_users_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", "/their/path")
    plan = plan_launch(PUBLISHED_CONFIGS["VL-2B"], cpu=True, cpu_info=_CPU)
    env = VLLMServer("unused-model").environment(plan)
    assert env["PYTHONPATH"].split(os.pathsep) == [str(ENCODER_CACHE_PATH), "/their/path"]
    assert env[ENCODER_CACHE_TOKENS_ENV] == str(DEFAULT_IMAGE_CACHE_PAGES * PAGE_EMBEDDINGS)
    monkeypatch.delenv("PYTHONPATH")
    assert VLLMServer("unused-model").environment(plan)["PYTHONPATH"] == str(ENCODER_CACHE_PATH)
    text = plan_launch(PUBLISHED_CONFIGS["8B"], cpu=True, cpu_info=_CPU)
    assert "PYTHONPATH" not in VLLMServer("unused-model").environment(text)


def test_a_vllm_without_the_cache_manager_flag_gets_vllms_sizing_and_refuses_a_size() -> None:
    """vLLM 0.27's command line has no ``--ec-manager-config``: the plan passes none, says the cache is
    vLLM's, and refuses an ``image_cache_pages`` it could not honour."""
    from qwen3_vllm_rerank.errors import ServerStartError
    from qwen3_vllm_rerank.serve._install import VllmInstall, takes_ec_manager_flag

    assert not takes_ec_manager_flag(VllmInstall("0.27.0+cpu", cpu=True))
    assert takes_ec_manager_flag(VllmInstall("0.32.0", cpu=False))
    plan = plan_launch(PUBLISHED_CONFIGS["VL-2B"], cpu=False, cache_manager=False)
    assert "--ec-manager-config" not in plan.args
    assert "this vLLM has no --ec-manager-config" in plan.describe()
    with pytest.raises(ServerStartError, match="image_cache_pages=0"):
        plan_launch(PUBLISHED_CONFIGS["VL-2B"], cpu=False, cache_manager=False, image_cache_pages=8)
