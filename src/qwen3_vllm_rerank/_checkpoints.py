"""What a Qwen3 reranker checkpoint is, written once for the client, the launcher and the converter.

Two families (Qwen3-Reranker: text; Qwen3-VL-Reranker: images too), each as an original
checkpoint (the causal LM that answers "yes"/"no") or a converted one (one-logit sequence
classification); Qwen3's token facts; and the probe pair every start-up check scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "ARCHITECTURES",
    "NO_TOKEN_ID",
    "PAD_TOKEN",
    "PAD_TOKEN_ID",
    "PROBE_DOCUMENTS",
    "PROBE_QUERY",
    "QWEN3_ADDED_TOKENS",
    "VOCAB_SIZE",
    "YES_TOKEN_ID",
    "Architecture",
    "CheckpointKind",
    "Family",
    "architecture_of",
    "family_of",
]

#: ``text``: Qwen3-Reranker (0.6B/4B/8B); ``vl``: Qwen3-VL-Reranker (2B/8B).
Family = Literal["text", "vl"]
#: ``original``: the causal LM as published; ``converted``: a one-logit seq-cls checkpoint.
CheckpointKind = Literal["original", "converted"]


@dataclass(frozen=True, slots=True)
class Architecture:
    """One ``architectures`` entry of a reranker's ``config.json``."""

    name: str
    family: Family
    kind: CheckpointKind
    #: The ``model_type`` of such a config.
    model_type: str
    #: The architecture a conversion (or vLLM's on-load overrides) turns it into.
    seq_cls: str
    #: Where the language model's ``embed_tokens.weight`` lives in the weight files.
    weights_prefix: str


_TEXT_SEQ_CLS = "Qwen3ForSequenceClassification"
_VL_ORIGINAL, _VL_SEQ_CLS = "Qwen3VLForConditionalGeneration", "Qwen3VLForSequenceClassification"
_VL_PREFIX = "model.language_model."

#: Every architecture this library serves, scores or converts, by name.
ARCHITECTURES: dict[str, Architecture] = {
    arch.name: arch
    for arch in (
        Architecture("Qwen3ForCausalLM", "text", "original", "qwen3", _TEXT_SEQ_CLS, "model."),
        Architecture(_TEXT_SEQ_CLS, "text", "converted", "qwen3", _TEXT_SEQ_CLS, "model."),
        Architecture(_VL_ORIGINAL, "vl", "original", "qwen3_vl", _VL_SEQ_CLS, _VL_PREFIX),
        Architecture(_VL_SEQ_CLS, "vl", "converted", "qwen3_vl", _VL_SEQ_CLS, _VL_PREFIX),
    )
}


def architecture_of(architectures: Sequence[str] | None) -> Architecture | None:
    """The first known entry of a config's ``architectures``, or ``None``."""
    for name in architectures or ():
        if name in ARCHITECTURES:
            return ARCHITECTURES[name]
    return None


def family_of(architectures: Sequence[str] | None) -> Family | None:
    """The family of a config's ``architectures``, or ``None`` when none is a Qwen3 reranker's."""
    architecture = architecture_of(architectures)
    return architecture.family if architecture else None


#: Token ids the score is read from: softmax([no, yes])[yes] at the last token.
YES_TOKEN_ID = 9693
NO_TOKEN_ID = 2152
#: Qwen3 pads with ``<|endoftext|>``, which its config.json does not say.
PAD_TOKEN = "<|endoftext|>"  # noqa: S105 - a token, not a secret
PAD_TOKEN_ID = 151643
#: The tokenizer's vocabulary (the embedding matrix may be padded past it).
VOCAB_SIZE = 151669

#: Qwen3's added tokens (ids 151643-151668, in order; the first 14 are special): what user
#: text is neutralised against when no local tokenizer names more.
QWEN3_ADDED_TOKENS: tuple[str, ...] = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>",
    "<|object_ref_end|>", "<|box_start|>", "<|box_end|>", "<|quad_start|>",
    "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>",
    "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>",
    "<think>", "</think>",
)  # fmt: skip

#: The probe every check scores: a relevant and an irrelevant document for one query. A
#: working reranker scores the first higher; a broken one (a zero classifier, a doubled
#: template) gives equal or reversed scores.
PROBE_QUERY = "What is the capital of France?"
PROBE_DOCUMENTS = ("Paris is the capital and largest city of France.", "Bananas are rich in potassium.")
