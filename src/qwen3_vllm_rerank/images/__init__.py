"""Images as Qwen3-VL-Reranker inputs, prepared into exactly the pixels the official reranker sees.

The input types (:class:`Image`, :class:`Content`), the opt-in :class:`UrlFetcher`, and
:func:`prepare_image`, which turns an image into the official pixels as a PNG ``data:`` URL.
Decoding needs Pillow: ``pip install "qwen3-vllm-rerank[images]"``; the input types do not.
"""

from ._fetching import UrlFetcher
from ._preparing import PreparedImage, aprepare_image, prepare_image
from ._sources import Content, Image, ImageSource

__all__ = [
    "Content",
    "Image",
    "ImageSource",
    "PreparedImage",
    "UrlFetcher",
    "aprepare_image",
    "prepare_image",
]
