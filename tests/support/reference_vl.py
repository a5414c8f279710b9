"""An independent transformers reference for Qwen3-VL-Reranker scores.

Written from the official implementation (``Qwen3VLReranker`` in QwenLM/Qwen3-VL-Embedding,
with ``qwen_vl_utils.fetch_image`` for the pixels), not from ``qwen3_vllm_rerank``: the
messages are built the way the official code builds them and rendered by the checkpoint's
own chat template through its processor; images are converted and resized here again, so
a mistake in the library's prompt or image code shows up as a fidelity failure instead of
being copied into the reference.

What the official code does, and this file does again:

* system turn: the judge prompt; user turn: ``"<Instruct>: " + instruction``, then
  ``"<Query>:"``, the query's images, the query's text, then ``"\\n<Document>:"``, the
  document's images, the document's text (a side with neither becomes the text ``"NULL"``);
  the chat template joins the parts with nothing in between and adds
  ``<|im_start|>assistant\\n``.
* each image: converted to RGB (an RGBA image composited on white), resized with PIL's
  default (bicubic) filter to ``smart_resize(h, w, factor=32, min_pixels=4096,
  max_pixels=1843200)``, then given to the processor with ``do_resize=False``.
* score: sigmoid((w_yes - w_no) . h_last), h_last the last token's final hidden state,
  float32. (The official code's token truncation at 10240 is not reproduced: inputs here are
  short.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from transformers import AutoTokenizer, Qwen2VLImageProcessor, Qwen3VLForConditionalGeneration

SYSTEM = (
    "Judge whether the Document meets the requirements based on the Query and the Instruct provided. "
    'Note that the answer can only be "yes" or "no".'
)
DEFAULT_INSTRUCTION = "Given a search query, retrieve relevant candidates that answer the query."
FACTOR = 32
MIN_PIXELS = 4 * FACTOR * FACTOR
MAX_PIXELS = 1800 * FACTOR * FACTOR
MAX_RATIO = 200


@dataclass(frozen=True)
class Side:
    """A query or a document as the official ``process`` takes it: text and/or images."""

    text: str | None = None
    images: Sequence[Image.Image] = field(default_factory=tuple)


def smart_resize(height: int, width: int) -> tuple[int, int]:
    """qwen_vl_utils.smart_resize with the reranker's factor and pixel limits."""
    if max(height, width) / min(height, width) > MAX_RATIO:
        raise ValueError("aspect ratio over 200")
    h_bar = max(FACTOR, round(height / FACTOR) * FACTOR)
    w_bar = max(FACTOR, round(width / FACTOR) * FACTOR)
    if h_bar * w_bar > MAX_PIXELS:
        beta = math.sqrt((height * width) / MAX_PIXELS)
        h_bar = math.floor(height / beta / FACTOR) * FACTOR
        w_bar = math.floor(width / beta / FACTOR) * FACTOR
    elif h_bar * w_bar < MIN_PIXELS:
        beta = math.sqrt(MIN_PIXELS / (height * width))
        h_bar = math.ceil(height * beta / FACTOR) * FACTOR
        w_bar = math.ceil(width * beta / FACTOR) * FACTOR
    return h_bar, w_bar


def official_pixels(image: Image.Image) -> Image.Image:
    """What qwen_vl_utils.fetch_image hands the processor for this image."""
    if image.mode == "RGBA":
        rgb = Image.new("RGB", image.size, (255, 255, 255))
        rgb.paste(image, mask=image.split()[3])
    else:
        rgb = image.convert("RGB")
    width, height = rgb.size
    new_height, new_width = smart_resize(height, width)
    return rgb.resize((new_width, new_height))


def _content(side: Side, prefix: str) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = [{"type": "text", "text": prefix}]
    if side.text is None and not side.images:
        parts.append({"type": "text", "text": "NULL"})
        return parts
    parts.extend({"type": "image", "image": image} for image in side.images)
    if side.text is not None:
        parts.append({"type": "text", "text": side.text})
    return parts


def messages(query: Side, document: Side, instruction: str | None = None) -> list[dict[str, Any]]:
    """The official format_mm_instruction's conversation for one pair."""
    user = [{"type": "text", "text": "<Instruct>: " + (instruction or DEFAULT_INSTRUCTION)}]
    user += _content(query, "<Query>:")
    user += _content(document, "\n<Document>:")
    return [
        {"role": "system", "content": [{"type": "text", "text": SYSTEM}]},
        {"role": "user", "content": user},
    ]


@cache
def _load(checkpoint: str) -> tuple[Any, Any, Any, torch.Tensor]:
    # What the official code's AutoProcessor does for text and images, done here with its two
    # parts (its video part needs torchvision, which the test environment does not have).
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    image_processor = Qwen2VLImageProcessor.from_pretrained(checkpoint)
    model = Qwen3VLForConditionalGeneration.from_pretrained(checkpoint, dtype=torch.float32).eval()
    vocab = tokenizer.get_vocab()
    head = model.lm_head.weight.data
    direction = (head[vocab["yes"]] - head[vocab["no"]]).to(torch.float32)
    return tokenizer, image_processor, model, direction


def prompt_text(checkpoint: Path | str, query: Side, document: Side, instruction: str | None = None) -> str:
    """The prompt the official code renders (image placeholders not yet expanded)."""
    tokenizer, _, _, _ = _load(str(checkpoint))
    template = (Path(checkpoint) / "chat_template.jinja").read_text()
    text: str = tokenizer.apply_chat_template(
        messages(query, document, instruction),
        chat_template=template,
        tokenize=False,
        add_generation_prompt=True,
    )
    return text


def reference_score(
    checkpoint: Path | str, query: Side, document: Side, instruction: str | None = None
) -> float:
    """p(yes) for one pair, as the official Qwen3VLReranker computes it (float32)."""
    tokenizer, image_processor, model, direction = _load(str(checkpoint))
    text = prompt_text(checkpoint, query, document, instruction)
    images = [official_pixels(image) for image in (*query.images, *document.images)]
    vision: dict[str, Any] = {}
    if images:
        vision = dict(image_processor(images=images, do_resize=False, return_tensors="pt"))
        # Each <|image_pad|> becomes one token per merged 2x2 patch group, as the processor does.
        merge = image_processor.merge_size**2
        pieces = text.split("<|image_pad|>")
        assert len(pieces) == len(images) + 1
        text = pieces[0] + "".join(
            "<|image_pad|>" * (int(grid.prod()) // merge) + piece
            for grid, piece in zip(vision["image_grid_thw"], pieces[1:], strict=True)
        )
    input_ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    image_pad = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    inputs = {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        # transformers 5 needs the modality of every token (1 = image) for M-RoPE.
        "mm_token_type_ids": (input_ids == image_pad).to(torch.int32),
        **vision,
    }
    with torch.no_grad():
        hidden = model.model(**inputs).last_hidden_state[:, -1]
        return float(torch.sigmoid(hidden.to(torch.float32) @ direction).item())


def reference_scores(
    checkpoint: Path | str, query: Side, documents: Sequence[Side], instruction: str | None = None
) -> list[float]:
    return [reference_score(checkpoint, query, document, instruction) for document in documents]
