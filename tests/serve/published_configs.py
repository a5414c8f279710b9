"""The config.json fields the launch plan reads, for each published Qwen3 reranker checkpoint.

From the published configs of Qwen/Qwen3-Reranker-{0.6B,4B,8B} (the Qwen3 base models' shapes) and
Qwen/Qwen3-VL-Reranker-{2B,8B} (Qwen3-VL-2B/8B's). ``test_gpu_plan`` checks that the parameter
counts they imply are the model cards' figures.
"""

from __future__ import annotations

from typing import Any

_QWEN3 = {
    "architectures": ["Qwen3ForCausalLM"],
    "head_dim": 128,
    "num_key_value_heads": 8,
    "vocab_size": 151936,
    "max_position_embeddings": 40960,
    "torch_dtype": "bfloat16",
}
_VL_TEXT = {
    "head_dim": 128,
    "num_key_value_heads": 8,
    "vocab_size": 151936,
    "max_position_embeddings": 262144,
    "dtype": "bfloat16",
}
_VISION = {
    "num_heads": 16,
    "in_channels": 3,
    "patch_size": 16,
    "temporal_patch_size": 2,
    "spatial_merge_size": 2,
    "num_position_embeddings": 2304,
}

PUBLISHED_CONFIGS: dict[str, dict[str, Any]] = {
    "0.6B": {
        **_QWEN3,
        "hidden_size": 1024,
        "intermediate_size": 3072,
        "num_hidden_layers": 28,
        "num_attention_heads": 16,
        "tie_word_embeddings": True,
    },
    "4B": {
        **_QWEN3,
        "hidden_size": 2560,
        "intermediate_size": 9728,
        "num_hidden_layers": 36,
        "num_attention_heads": 32,
        "tie_word_embeddings": True,
    },
    "8B": {
        **_QWEN3,
        "hidden_size": 4096,
        "intermediate_size": 12288,
        "num_hidden_layers": 36,
        "num_attention_heads": 32,
        "tie_word_embeddings": False,
    },
    "VL-2B": {
        "architectures": ["Qwen3VLForConditionalGeneration"],
        "model_type": "qwen3_vl",
        "tie_word_embeddings": True,
        "text_config": {
            **_VL_TEXT,
            "hidden_size": 2048,
            "intermediate_size": 6144,
            "num_hidden_layers": 28,
            "num_attention_heads": 16,
            "tie_word_embeddings": True,
        },
        "vision_config": {
            **_VISION,
            "depth": 24,
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "out_hidden_size": 2048,
            "deepstack_visual_indexes": [5, 11, 17],
        },
    },
    "VL-8B": {
        "architectures": ["Qwen3VLForConditionalGeneration"],
        "model_type": "qwen3_vl",
        "tie_word_embeddings": False,
        "text_config": {
            **_VL_TEXT,
            "hidden_size": 4096,
            "intermediate_size": 12288,
            "num_hidden_layers": 36,
            "num_attention_heads": 32,
            "tie_word_embeddings": False,
        },
        "vision_config": {
            **_VISION,
            "depth": 27,
            "hidden_size": 1152,
            "intermediate_size": 4304,
            "out_hidden_size": 4096,
            "deepstack_visual_indexes": [8, 16, 24],
        },
    },
}

#: The Qwen3 model cards' "Number of Parameters" and "Number of Parameters (Non-Embedding)", in
#: billions, rounded as the cards round them (the rerankers are these models with the same shapes).
CARD_BILLIONS = {"0.6B": (0.6, 0.44), "4B": (4.0, 3.6), "8B": (8.2, 6.95)}
#: Qwen3-VL-2B / 8B: about 2.1B and 8.8B parameters with the vision tower (Hugging Face's counts).
VL_BILLIONS = {"VL-2B": 2.1, "VL-8B": 8.8}
