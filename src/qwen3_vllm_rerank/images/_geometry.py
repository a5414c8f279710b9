"""The official reranker's pixel geometry: the resize rule and the image-token count.

Pure arithmetic (no Pillow): the launcher sizes the server's limits from it without the
image pipeline.
"""

from __future__ import annotations

import math

__all__ = ["IMAGE_FACTOR", "MAX_ASPECT_RATIO", "MAX_PIXELS", "MIN_PIXELS", "image_tokens", "smart_resize"]

#: Both sides of a prepared image are multiples of this (patch 16 x spatial merge 2).
IMAGE_FACTOR = 32
#: The official reranker's pixel limits: 4 and 1800 image tokens.
MIN_PIXELS = 4 * IMAGE_FACTOR * IMAGE_FACTOR
MAX_PIXELS = 1800 * IMAGE_FACTOR * IMAGE_FACTOR
#: Longer side / shorter side beyond which the official code refuses an image.
MAX_ASPECT_RATIO = 200


def smart_resize(
    height: int,
    width: int,
    *,
    factor: int = IMAGE_FACTOR,
    min_pixels: int = MIN_PIXELS,
    max_pixels: int = MAX_PIXELS,
) -> tuple[int, int]:
    """``(height, width)`` an image is resized to, as ``qwen_vl_utils.smart_resize`` computes it
    for the reranker: sides rounded to multiples of ``factor``, then scaled (keeping the aspect
    ratio) down under ``max_pixels`` or up over ``min_pixels``.

    Raises ``ValueError`` for a side under 1 or an aspect ratio over 200:1."""
    if height < 1 or width < 1:
        raise ValueError(f"image sides must be >= 1, got {width}x{height}")
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        ratio = max(height, width) / min(height, width)
        raise ValueError(f"aspect ratio must be at most {MAX_ASPECT_RATIO}:1, got {ratio:.0f}:1")
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = math.floor(height / beta / factor) * factor
        w_bar = math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def image_tokens(height: int, width: int) -> int:
    """Image tokens for a prepared ``height`` x ``width`` image: one per 32x32 block."""
    return (height // IMAGE_FACTOR) * (width // IMAGE_FACTOR)
