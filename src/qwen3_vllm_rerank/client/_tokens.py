"""Counting and cutting tokens exactly as the server's tokenizer does.

Two sources, one interface (:class:`TokenSource`): the model's own ``tokenizer.json``
loaded locally with the ``tokenizers`` library (exact, fast, no requests), or the
server's ``/tokenize`` and ``/detokenize`` endpoints. Every method is a flow (see
``_flow.py``) so the sync and async clients drive both the same way.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from .. import _protocol as proto
from ..errors import InvalidInput
from ._flow import Flow, immediate

if TYPE_CHECKING:
    from tokenizers import Tokenizer

__all__ = [
    "LazyTokenSource",
    "LocalTokens",
    "ServerTokens",
    "TokenSource",
    "TokenizerOption",
    "checkpoint_added_tokens",
    "load_tokenizer",
]

#: The serialisable forms of the ``tokenizer`` option (the clients also take a ``Tokenizer``).
TokenizerOption = str | Path | None


class TokenSource(Protocol):
    """Token arithmetic for the prompt budget."""

    def count(self, texts: Sequence[str]) -> Flow[list[int]]:
        """Token counts of each text (no special tokens added)."""
        ...

    def windows(self, text: str, max_tokens: int) -> Flow[list[str]]:
        """Consecutive pieces of ``text`` of at most about ``max_tokens`` tokens each."""
        ...

    def head(self, text: str, max_tokens: int) -> Flow[str]:
        """The first piece :meth:`windows` would give, without computing the others."""
        ...


def checkpoint_added_tokens(directory: str | Path) -> tuple[str, ...] | None:
    """The added-token strings a local checkpoint declares in ``tokenizer_config.json``
    (a few kB, read in microseconds: no need to load the 11 MB ``tokenizer.json``), or
    ``None`` when the directory has no such file."""
    path = Path(directory, "tokenizer_config.json")
    if not path.is_file():
        return None
    try:
        decoder = json.loads(path.read_text(encoding="utf-8")).get("added_tokens_decoder") or {}
        return tuple(str(entry["content"]) for entry in decoder.values())
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def load_tokenizer(source: str | Path) -> Tokenizer:
    """A ``tokenizers.Tokenizer`` from a checkpoint directory, a tokenizer.json, or a hub id."""
    from tokenizers import Tokenizer

    path = Path(source)
    if path.is_dir():
        path = path / "tokenizer.json"
    if path.is_file():
        return Tokenizer.from_file(str(path))
    if path.exists() or str(source).startswith((".", "/")):
        raise InvalidInput(f"no tokenizer.json at {source}")
    try:
        return Tokenizer.from_pretrained(str(source))
    except Exception as exc:  # tokenizers raises plain Exception for hub failures
        raise InvalidInput(
            f"cannot load the tokenizer of {source!r} from the Hugging Face hub ({exc}); "
            "pass tokenizer= a local checkpoint directory or tokenizer.json"
        ) from exc


class LocalTokens:
    """Exact token arithmetic with the model's own tokenizer, in process."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer

    def count(self, texts: Sequence[str]) -> Flow[list[int]]:
        encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return immediate([len(e.ids) for e in encodings])

    def windows(self, text: str, max_tokens: int) -> Flow[list[str]]:
        offsets = self.tokenizer.encode(text, add_special_tokens=False).offsets
        starts = [offsets[i][0] for i in range(max_tokens, len(offsets), max_tokens)]
        bounds = [0, *starts, len(text)]
        return immediate([text[a:b] for a, b in itertools.pairwise(bounds) if b > a] or [""])

    def head(self, text: str, max_tokens: int) -> Flow[str]:
        offsets = self.tokenizer.encode(text, add_special_tokens=False).offsets
        return immediate(text[: offsets[max_tokens][0]] if len(offsets) > max_tokens else text)


class ServerTokens:
    """Token arithmetic through the server's ``/tokenize`` and ``/detokenize``.

    These endpoints sit outside ``/v1``, which is all ``--api-key`` guards (measured with
    vLLM 0.32), so the client never uses this source when it has an API key.
    """

    def __init__(self, model: str) -> None:
        self.model = model

    def count(self, texts: Sequence[str]) -> Flow[list[int]]:
        responses = yield [proto.tokenize_call(self.model, t) for t in texts]
        return [len(proto.parse_tokenize(r)) for r in responses]

    def windows(self, text: str, max_tokens: int) -> Flow[list[str]]:
        (response,) = yield [proto.tokenize_call(self.model, text)]
        ids = proto.parse_tokenize(response)
        chunks = [ids[i : i + max_tokens] for i in range(0, len(ids), max_tokens)] or [[]]
        pieces = yield [proto.detokenize_call(self.model, chunk) for chunk in chunks]
        # A cut inside a multi-byte character decodes to U+FFFD at the seam; drop it.
        return [proto.parse_detokenize(r).strip("\ufffd") for r in pieces]

    def head(self, text: str, max_tokens: int) -> Flow[str]:
        (response,) = yield [proto.tokenize_call(self.model, text)]
        ids = proto.parse_tokenize(response)
        if len(ids) <= max_tokens:
            return text
        (piece,) = yield [proto.detokenize_call(self.model, ids[:max_tokens])]
        return proto.parse_detokenize(piece).strip("\ufffd")


class LazyTokenSource:
    """The :class:`TokenSource` the budget uses, chosen and loaded on first need, then kept.

    Loading Qwen3's ``tokenizer.json`` takes about half a second; most calls never need
    it (the byte-length check proves their documents fit), so nothing is loaded until a
    document may not fit.

    Args:
        option: the client's ``tokenizer`` option (a path, a hub id, ``"server"``, a
            ``tokenizers.Tokenizer`` or ``None``: see the client's docs).
        model: the served model, a local directory when it is served from one.
        api_key: whether the client has an API key (then ``/tokenize`` is never used).
    """

    def __init__(self, option: TokenizerOption | Tokenizer, model: str, *, api_key: bool) -> None:
        self._option = option
        self._model = model
        self._api_key = api_key
        self._source: TokenSource | None = None
        self._resolved = False
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        """Whether the source was resolved (a tokenizer loaded, if there is one)."""
        return self._resolved

    def get(self) -> TokenSource | None:
        """The source, or ``None`` when none may be used (an API key and no local tokenizer)."""
        with self._lock:
            if not self._resolved:
                self._source = self._resolve()
                self._resolved = True
            return self._source

    def _resolve(self) -> TokenSource | None:
        option, model = self._option, self._model
        if option == "server":
            return ServerTokens(model)
        if option is not None and not isinstance(option, (str, Path)):
            return LocalTokens(option)
        if option is not None:
            return LocalTokens(load_tokenizer(option))
        if Path(model, "tokenizer.json").is_file():  # served from a local directory
            return LocalTokens(load_tokenizer(model))
        if self._api_key:
            return None  # /tokenize is outside --api-key's guard: never used with a key
        return ServerTokens(model)
