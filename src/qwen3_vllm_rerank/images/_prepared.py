"""What a prepared image is: :class:`PreparedImage`, the official pixels as they are sent."""

from __future__ import annotations

from dataclasses import dataclass

from ._geometry import image_tokens

__all__ = ["PreparedImage"]


@dataclass(frozen=True, slots=True)
class PreparedImage:
    """An image as it is sent: the official pixels, PNG-encoded in a ``data:`` URL."""

    #: ``data:image/png;base64,...``: exactly the pixels the official reranker uses.
    url: str
    #: The prepared (resized) size.
    width: int
    height: int
    #: The size of the decoded original.
    original_width: int
    original_height: int
    #: SHA-256 of the prepared pixels' PNG, a cache key.
    sha256: str

    @property
    def tokens(self) -> int:
        """Image tokens the model reads for it (its ``<|image_pad|>`` count)."""
        return image_tokens(self.height, self.width)

    @property
    def prompt_tokens(self) -> int:
        """Tokens it adds to the prompt: :attr:`tokens` plus ``<|vision_start|>`` and ``<|vision_end|>``."""
        return self.tokens + 2
