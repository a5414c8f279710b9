"""The plan: the original checkpoint checked, and what the converted one holds, before a byte is written."""

from __future__ import annotations

import logging
import math
import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._checkpoints import ARCHITECTURES, PAD_TOKEN, Architecture
from ..errors import ConversionError
from . import _sentence_transformers as st
from ._reading import INDEX, Shard, Tensor, read_json, read_rows, read_shards, short

logger = logging.getLogger("qwen3_vllm_rerank.convert")

LM_HEAD, SCORE = "lm_head.weight", "score.weight"
#: model_type -> the original architecture this converter turns into its ``seq_cls``.
ORIGINALS = {arch.model_type: arch for arch in ARCHITECTURES.values() if arch.kind == "original"}
#: Keys of the original reranker's vLLM overrides: harmful in a converted config.
ORIGINAL_KEYS = ("classifier_from_token", "method", "is_original_qwen3_reranker", "use_pad_token")
# Other weight formats are never copied: they would hold the original CausalLM.
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf", ".onnx")


@dataclass(frozen=True, slots=True)
class Source:
    """An original Qwen3(-VL)-Reranker checkpoint, inspected (headers and tokenizer only): every tensor
    by name with its shard, and the output layer ``head`` (``embed_tokens`` when tied, else ``lm_head``)."""

    architecture: Architecture  # an original one: the converted checkpoint is its seq_cls
    root: Path
    config: dict[str, Any]
    shards: list[Shard]
    index: dict[str, Any] | None
    tensors: dict[str, tuple[Shard, Tensor]]
    head: Tensor
    yes_id: int
    no_id: int
    pad_id: int

    @property
    def tied(self) -> bool:
        return self.head.name != LM_HEAD

    @property
    def vl(self) -> bool:
        """A Qwen3-VL reranker: no transformers class and no Sentence Transformers files for it."""
        return self.architecture.family == "vl"

    def kept(self) -> dict[str, tuple[Shard, Tensor]]:
        """The tensors a converted checkpoint keeps: all but ``lm_head.weight``."""
        return {name: located for name, located in self.tensors.items() if name != LM_HEAD}


def resolve_source(src: str | Path) -> Path:
    """A local checkpoint directory, or a hub id downloaded with ``snapshot_download``."""
    local = Path(src).expanduser()
    if local.is_dir() or local.exists() or str(src).startswith((".", "/", "~")) or str(src).count("/") != 1:
        if not local.is_dir():
            raise ConversionError(f"{src} is not a directory (nor a hub id like Qwen/Qwen3-Reranker-0.6B)")
        return local
    from huggingface_hub import snapshot_download

    logger.info("downloading %s from the Hugging Face hub", src)
    patterns = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "*.jinja", "LICENSE*"]
    try:
        return Path(snapshot_download(str(src), allow_patterns=patterns))
    except Exception as exc:  # huggingface_hub raises many types; all mean "cannot get it"
        raise ConversionError(f"cannot download {src} from the Hugging Face hub: {exc}") from exc


def _head(root: Path, config: dict[str, Any], embed: str, tensors: dict[str, tuple[Shard, Tensor]]) -> Tensor:
    if SCORE in tensors:
        raise ConversionError(f"{root} already has a {SCORE} tensor: it looks converted already")
    # A missing tie_word_embeddings means untied: Qwen3Config's default (transformers 4.51 to 5.x).
    tied = config.get("tie_word_embeddings", False)
    if not isinstance(tied, bool):
        raise ConversionError(f"{root / 'config.json'}: tie_word_embeddings is {tied!r}, not true or false")
    if (embed if tied else LM_HEAD) not in tensors:
        raise ConversionError(
            f"{root} has no {embed}: is it a complete Qwen3 checkpoint?"
            if tied
            else f"config.json of {root} says the output layer is untied (tie_word_embeddings false/absent) "
            f'but there is no {LM_HEAD}; if it is tied (like the 0.6B/4B), set "tie_word_embeddings": true'
        )
    if tied and LM_HEAD in tensors:
        logger.warning("%s ties its embeddings but also stores %s; it is ignored", root, LM_HEAD)
    head = tensors[embed if tied else LM_HEAD][1]
    text = config.get("text_config") or config  # Qwen3-VL keeps the language model's sizes there
    if not isinstance(text, dict):
        raise ConversionError(f"{root / 'config.json'}: text_config is {short(text)}, not an object")
    shape = [_size(root, text, "vocab_size", head.shape[0]), _size(root, text, "hidden_size", 0)]
    if len(head.shape) != 2 or head.shape[1] != shape[1] or head.shape[0] < shape[0]:
        raise ConversionError(f"{head.name} has shape {list(head.shape)}; config.json says {shape}")
    if head.dtype not in ("F16", "BF16", "F32"):
        raise ConversionError(f"{head.name} is {head.dtype}: only F16, BF16 and F32 heads can be converted")
    return head


def _size(root: Path, config: dict[str, Any], key: str, default: int) -> int:
    """A size of ``config.json`` (``default`` when absent or 0): an integer, else ConversionError."""
    value = config.get(key) or default
    if type(value) is not int or value < 0:
        raise ConversionError(f"{root / 'config.json'}: {key} is {short(value)}, not an integer >= 0")
    return value


def _token_id(tokenizer: Any, token: str, role: str, vocab_size: int) -> int:
    token_id = tokenizer.token_to_id(token)
    if token_id is None or not 0 <= token_id < vocab_size:
        raise ConversionError(
            f"the {role} token {token!r} is not a single token of this checkpoint's vocabulary (it tokenises "
            f"as {tokenizer.encode(token, add_special_tokens=False).tokens}); pass one such as 'yes' or 'no'"
        )
    return int(token_id)


def inspect(root: Path, yes_token: str, no_token: str) -> Source:
    """Check that ``root`` is an original Qwen3 reranker in safetensors and find what converting needs."""
    if not (root / "config.json").is_file():
        raise ConversionError(f"{root} has no config.json: is it a checkpoint directory?")
    config = read_json(root / "config.json")
    architectures, model_type = config.get("architectures") or [], config.get("model_type")
    if not isinstance(architectures, list) or not all(isinstance(name, str) for name in architectures):
        raise ConversionError(
            f"{root / 'config.json'}: architectures is {short(architectures)}, not a list of class names"
        )
    if any(ARCHITECTURES[name].kind == "converted" for name in architectures if name in ARCHITECTURES):
        raise ConversionError(f"{root} is already converted ({architectures}); serve it as it is")
    original = ORIGINALS.get(model_type) if isinstance(model_type, str) else None
    if original is None or original.name not in architectures:
        expected = " or ".join(f"[{a.name!r}], {a.model_type!r}" for a in ORIGINALS.values())
        raise ConversionError(
            f"{root} is not an original Qwen3(-VL)-Reranker: config.json says {short(architectures)} "
            f"{short(model_type)}; expected {expected}"
        )
    shards, index, tensors = read_shards(root)
    head = _head(root, config, original.weights_prefix + "embed_tokens.weight", tensors)
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(root / "tokenizer.json"))
    except Exception as exc:  # tokenizers raises a bare Exception, for a missing file too
        raise ConversionError(f"cannot read {root / 'tokenizer.json'} (for the yes/no ids): {exc}") from exc
    vocab = head.shape[0]
    yes_id, no_id = _token_id(tokenizer, yes_token, "yes", vocab), _token_id(tokenizer, no_token, "no", vocab)
    if yes_id == no_id:
        raise ConversionError(f"the yes and no tokens are the same token (id {yes_id})")
    pad_id = config.get("pad_token_id")
    if pad_id is None:  # Qwen3 pads with <|endoftext|>, which its config.json does not say
        pad_id = _token_id(tokenizer, PAD_TOKEN, "padding", vocab)
    elif type(pad_id) is not int or pad_id < 0:
        raise ConversionError(f"{root / 'config.json'}: pad_token_id is {short(pad_id)}, not a token id")
    return Source(original, root, config, shards, index, tensors, head, yes_id, no_id, pad_id)


def _to_bfloat16_bits(float32_bits: int) -> int:
    """Round a finite float32 (as its bits) to bfloat16 bits, to nearest even, like torch."""
    return ((float32_bits + 0x7FFF + ((float32_bits >> 16) & 1)) >> 16) & 0xFFFF


def score_values(w_yes: Sequence[float], w_no: Sequence[float], dtype: str) -> tuple[list[float], bytes]:
    """``W[yes] - W[no]`` in float32, unrounded, and its bytes in ``dtype``, as torch computes it: a
    double subtraction of two float32 values, rounded once to float32, is float32's subtraction."""
    n = len(w_yes)
    if not all(math.isfinite(v) for v in (*w_yes, *w_no)):
        raise ConversionError("the yes/no output rows hold NaN or infinities: the checkpoint is broken")
    try:
        as_float32 = struct.pack(f"<{n}f", *(a - b for a, b in zip(w_yes, w_no, strict=True)))
        exact = list(struct.unpack(f"<{n}f", as_float32))
        if dtype == "BF16":
            return exact, struct.pack(f"<{n}H", *map(_to_bfloat16_bits, struct.unpack(f"<{n}I", as_float32)))
        return exact, as_float32 if dtype == "F32" else struct.pack(f"<{n}e", *exact)
    except (OverflowError, struct.error) as exc:
        raise ConversionError(f"W[yes] - W[no] does not fit in {dtype}: {exc}") from exc


def score(source: Source) -> tuple[list[float], bytes]:
    """:func:`score_values` of the source's yes/no rows, read from disk."""
    if sys.byteorder != "little":  # pragma: no cover - safetensors is little-endian
        raise ConversionError("this converter needs a little-endian machine")
    head_file = source.tensors[source.head.name][0].path
    w_yes, w_no = read_rows(head_file, source.head, (source.yes_id, source.no_id))
    return score_values(w_yes, w_no, source.head.dtype)


def is_copied(path: Path, vl: bool) -> bool:
    """Whether a source file is copied as it is (tokenizer, generation config, a VL chat template, ...)."""
    replaced = ("config.json", INDEX, *(() if vl else st.FILES))
    if path.name.startswith(".") or not path.is_file() or path.name in replaced:
        return False
    return not path.name.endswith((*_WEIGHT_SUFFIXES, ".bin.index.json"))


@dataclass(frozen=True, slots=True)
class Plan:
    """The converted checkpoint: ``score.weight`` goes into ``home``, the shard that held ``lm_head.weight``
    (else the smallest); the ``rewritten`` shards are written tensor by tensor, the others copied whole."""

    source: Source
    score: bytes
    home: Shard
    rewritten: frozenset[Path]
    config: dict[str, Any]
    index: dict[str, Any] | None


def plan(source: Source) -> Plan:
    lm_head_shard = source.tensors[LM_HEAD][0] if LM_HEAD in source.tensors else None
    home = lm_head_shard or min(source.shards, key=lambda s: s.size)
    data = score(source)[1]
    index = None
    if source.index is not None:
        kept = source.kept()
        sizes = [(t.nbytes, math.prod(t.shape)) for _, t in kept.values()]
        metadata = dict(source.index.get("metadata") or {})
        metadata["total_size"] = sum(n for n, _ in sizes) + len(data)
        if "total_parameters" in metadata:
            metadata["total_parameters"] = sum(p for _, p in sizes) + source.head.shape[1]
        weight_map = {name: shard.path.name for name, (shard, _) in kept.items()} | {SCORE: home.path.name}
        index = {**source.index, "metadata": metadata, "weight_map": dict(sorted(weight_map.items()))}
    config = {k: v for k, v in source.config.items() if k not in ORIGINAL_KEYS}
    config |= {"architectures": [source.architecture.seq_cls], "num_labels": 1, "pad_token_id": source.pad_id}
    config |= {"id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}
    # vLLM's score API joins text_1 and text_2 with the tokenizer's pair template unless this is
    # false (ModelConfig.use_sep_token defaults to true for converted checkpoints).
    config["use_sep_token"] = False
    return Plan(source, data, home, frozenset({home.path, (lm_head_shard or home).path}), config, index)
