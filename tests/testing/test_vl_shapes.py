"""The Qwen3-VL fixture's shapes: the published Qwen3-VL-Reranker-2B widths, and depth cuts that keep them.

The published values are written out here as numbers (from Qwen/Qwen3-VL-2B-Instruct's config.json,
which Qwen3-VL-Reranker-2B fine-tunes), not read from the module under test.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qwen3_vllm_rerank.errors import InvalidInput
from qwen3_vllm_rerank.testing import (
    QWEN3_VL_2B_SHAPE,
    TINY_VL_SHAPE,
    VLFixtureShape,
    make_vl_fixture_checkpoint,
)

#: Qwen3-VL-2B-Instruct's config.json, the fields a shape decides.
PUBLISHED_TEXT = {
    "vocab_size": 151936,
    "hidden_size": 2048,
    "intermediate_size": 6144,
    "num_hidden_layers": 28,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "hidden_act": "silu",
    "rms_norm_eps": 1e-6,
    "max_position_embeddings": 262144,
    "tie_word_embeddings": True,
}
PUBLISHED_ROPE = {"rope_theta": 5_000_000.0, "mrope_section": [24, 20, 20], "mrope_interleaved": True}
PUBLISHED_VISION = {
    "depth": 24,
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_heads": 16,
    "in_channels": 3,
    "patch_size": 16,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "out_hidden_size": 2048,
    "num_position_embeddings": 2304,
    "deepstack_visual_indexes": [5, 11, 17],
    "hidden_act": "gelu_pytorch_tanh",
}
WIDTHS = (
    "hidden_size",
    "num_attention_heads",
    "num_key_value_heads",
    "intermediate_size",
    "vision_hidden_size",
    "vision_intermediate_size",
    "vision_num_heads",
)


def test_2b_shape_has_the_published_config() -> None:
    text = QWEN3_VL_2B_SHAPE.text_config(tied=True)
    assert {key: text[key] for key in PUBLISHED_TEXT} == PUBLISHED_TEXT
    assert {key: text["rope_parameters"][key] for key in PUBLISHED_ROPE} == PUBLISHED_ROPE
    vision = QWEN3_VL_2B_SHAPE.vision_config()
    assert {key: vision[key] for key in PUBLISHED_VISION} == PUBLISHED_VISION


def test_tiny_shape_is_the_tests_fixture() -> None:
    """The default shape is the one the suite's fixture always had (its scores are pinned elsewhere)."""
    text, vision = TINY_VL_SHAPE.text_config(tied=True), TINY_VL_SHAPE.vision_config()
    assert (text["hidden_size"], text["num_hidden_layers"], text["num_attention_heads"]) == (256, 2, 2)
    assert (text["num_key_value_heads"], text["intermediate_size"], text["head_dim"]) == (1, 512, 128)
    assert (vision["depth"], vision["hidden_size"], vision["intermediate_size"], vision["num_heads"]) == (
        2,
        128,
        256,
        2,
    )
    assert (vision["out_hidden_size"], vision["deepstack_visual_indexes"]) == (256, [0])


def test_a_depth_cut_keeps_the_widths() -> None:
    cut = QWEN3_VL_2B_SHAPE.with_depth(text_layers=4, vision_layers=4)
    assert (cut.num_hidden_layers, cut.vision_depth) == (4, 4)
    assert cut.deepstack_visual_indexes == (0, 1, 2)
    for width in WIDTHS:
        assert getattr(cut, width) == getattr(QWEN3_VL_2B_SHAPE, width)
    assert cut.vision_config()["out_hidden_size"] == 2048
    assert QWEN3_VL_2B_SHAPE.with_depth(text_layers=6) == QWEN3_VL_2B_SHAPE.with_depth(
        text_layers=6, vision_layers=24
    )
    assert QWEN3_VL_2B_SHAPE.with_depth(text_layers=6).deepstack_visual_indexes == (5, 11, 17)
    assert QWEN3_VL_2B_SHAPE.with_depth(vision_layers=1).deepstack_visual_indexes == (0,)


@settings(max_examples=60, deadline=None)
@given(text=st.integers(1, 28), vision=st.integers(1, 24))
def test_every_cut_is_a_valid_shape_of_the_same_widths(text: int, vision: int) -> None:
    """Any cut of the 2B has the 2B's widths, the layers asked, and DeepStack indexes inside its tower."""
    cut = QWEN3_VL_2B_SHAPE.with_depth(text_layers=text, vision_layers=vision)
    assert (cut.num_hidden_layers, cut.vision_depth) == (text, vision)
    assert all(getattr(cut, width) == getattr(QWEN3_VL_2B_SHAPE, width) for width in WIDTHS)
    indexes = cut.deepstack_visual_indexes
    assert indexes
    assert list(indexes) == sorted(set(indexes))
    assert all(0 <= i < vision for i in indexes)


@pytest.mark.parametrize(
    ("text_layers", "vision_layers", "named"),
    [
        (0, None, "text_layers"),
        (29, None, "text_layers"),
        (None, 0, "vision_layers"),
        (None, 25, "vision_layers"),
    ],
)
def test_a_cut_cannot_add_or_remove_every_layer(
    text_layers: int | None, vision_layers: int | None, named: str
) -> None:
    with pytest.raises(InvalidInput, match=f"{named} must be between 1 and"):
        QWEN3_VL_2B_SHAPE.with_depth(text_layers=text_layers, vision_layers=vision_layers)


def test_an_inconsistent_shape_is_refused() -> None:
    with pytest.raises(InvalidInput, match="deepstack_visual_indexes"):
        VLFixtureShape(256, 2, 2, 1, 512, 2, 128, 256, 2, deepstack_visual_indexes=(2,))
    with pytest.raises(InvalidInput, match="multiple of num_key_value_heads"):
        VLFixtureShape(256, 2, 3, 2, 512, 2, 128, 256, 2, deepstack_visual_indexes=(0,))
    with pytest.raises(InvalidInput, match="positive sizes, got vision_depth=0"):
        VLFixtureShape(256, 2, 2, 1, 512, 0, 128, 256, 2, deepstack_visual_indexes=())


@pytest.mark.heavy  # builds a checkpoint of the 2B's widths (~1.5 GB of float32 while building)
def test_a_cut_2b_checkpoint_builds_and_loads_in_transformers(tmp_path: Path) -> None:
    import torch
    from transformers import AutoTokenizer, Qwen3VLForConditionalGeneration

    shape = QWEN3_VL_2B_SHAPE.with_depth(text_layers=1, vision_layers=1)
    path = make_vl_fixture_checkpoint(tmp_path / "vl-2b-cut", shape=shape, dtype="bfloat16")
    config = json.loads((path / "config.json").read_text())
    text, vision = config["text_config"], config["vision_config"]
    published = {**PUBLISHED_TEXT, "num_hidden_layers": 1}
    assert {key: text[key] for key in published} == published
    expected_vision = {**PUBLISHED_VISION, "depth": 1, "deepstack_visual_indexes": [0]}
    assert {key: vision[key] for key in expected_vision} == expected_vision
    assert config["architectures"] == ["Qwen3VLForConditionalGeneration"]

    model = Qwen3VLForConditionalGeneration.from_pretrained(path, dtype=torch.bfloat16).eval()
    assert model.model.language_model.embed_tokens.weight.shape == (151936, 2048)
    assert len(model.model.language_model.layers) == 1
    assert len(model.model.visual.blocks) == 1
    layer = model.model.language_model.layers[0]
    assert layer.self_attn.k_proj.weight.shape == (8 * 128, 2048)
    assert layer.mlp.gate_proj.weight.shape == (6144, 2048)
    assert model.model.visual.blocks[0].mlp.linear_fc1.weight.shape == (4096, 1024)
    tokenizer = AutoTokenizer.from_pretrained(path)
    ids = tokenizer("<|im_start|>user\nhello<|im_end|>\n", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        hidden = model.model(input_ids=ids).last_hidden_state
    assert hidden.shape == (1, ids.shape[1], 2048)
    assert bool(torch.isfinite(hidden).all())
