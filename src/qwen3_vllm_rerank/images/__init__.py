"""Images as Qwen3-VL-Reranker inputs, prepared into exactly the pixels the official reranker sees.

The input types (:class:`Image`, :class:`Content`), the opt-in :class:`UrlFetcher`, and
:func:`prepare_image`, which turns an image into the official pixels as a PNG ``data:`` URL,
and :class:`PreparedImageCache`, which keeps prepared images for pages that come back.
Decoding needs Pillow: ``pip install "qwen3-vllm-rerank[images]"``; the input types do not.
"""

from ._fetching import UrlFetcher
from ._image_cache import IMAGE_CACHE_BYTES, ImageCacheInfo, PreparedImageCache, shared_image_cache
from ._prepared import PreparedImage
from ._preparing import aprepare_image, prepare_image
from ._sources import Content, Image, ImageSource

__all__ = [
    "IMAGE_CACHE_BYTES",
    "Content",
    "Image",
    "ImageCacheInfo",
    "ImageSource",
    "PreparedImage",
    "PreparedImageCache",
    "UrlFetcher",
    "aprepare_image",
    "prepare_image",
    "shared_image_cache",
]
