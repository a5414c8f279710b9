"""The engine mode's preparation of rows: exactly what :class:`~qwen3_vllm_rerank.RerankClient` sends,
rendered as the one prompt string Ray's vLLM stage scores.

The client's own pieces do the work, in the client's order: its input checks (``score_request`` and
``prepare``: a lone surrogate in a document repaired, an empty or broken query refused), its neutraliser
(the checkpoint's added tokens and Qwen3's own), the family's template, and its suffix-preserving token
budget (``fit_documents``) with the checkpoint's own tokenizer. vLLM tokenises the score API's ``text_1 +
text_2`` as one string, so the concatenation is the prompt the server would have scored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from .._checkpoints import Family
from ..client._budget import LongDocuments, PreparedDocument, fit_documents
from ..client._discovery import _added_tokens
from ..client._flow import Flow
from ..client._inputs import prepare, score_request
from ..client._sanitize import Neutraliser
from ..client._tokens import LocalTokens, TokenSource, load_tokenizer
from ..errors import InvalidInput, Qwen3RerankError
from ..prompt import PROMPT_FAMILIES

if TYPE_CHECKING:
    from tokenizers import Tokenizer

__all__ = ["Prompt", "PromptBuilder"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Prompt:
    """One row as sent: the full prompt, or ``None`` and why the row cannot be scored."""

    text: str | None
    error: str | None = None
    truncated: bool = False


def _without_io(flow: Flow[T]) -> T:
    """The result of a flow that needs no request (the budget with a local tokenizer)."""
    try:
        next(flow)
    except StopIteration as stop:
        result: T = stop.value
        return result
    raise Qwen3RerankError("internal error: the batch preparation asked for a request; please report it")


class PromptBuilder:
    """Renders rows for one checkpoint (``model``: its directory or hub id; ``tokenizer``: where its
    ``tokenizer.json`` is, the checkpoint itself by default), within ``max_tokens`` per prompt."""

    def __init__(
        self,
        model: str,
        *,
        family: Family,
        max_tokens: int | None,
        long_documents: LongDocuments,
        instruction: str | None,
        tokenizer: str | None = None,
    ) -> None:
        if long_documents == "chunk":
            raise InvalidInput(
                "long_documents='chunk' scores several windows per row; the batch engine gives one score per "
                "row: use 'truncate' (the default) or 'error'"
            )
        self.family = PROMPT_FAMILIES[family]
        self.instruction = instruction if instruction is not None else self.family.default_instruction
        self.max_tokens = max_tokens
        self.long_documents = long_documents
        self._tokenizer_source = tokenizer or model
        self._tokenizer: Tokenizer | None = None
        self.neutralise = Neutraliser(_added_tokens(tokenizer, model))

    def _tokens(self) -> TokenSource:
        if self._tokenizer is None:  # loaded on first need: most batches fit without counting
            self._tokenizer = load_tokenizer(self._tokenizer_source)
        return LocalTokens(self._tokenizer)

    def build(self, query: str, documents: Sequence[str]) -> list[Prompt]:
        """The prompt of each document for one query (a query that cannot be used fails its rows only)."""
        try:
            request = score_request(query, list(documents), self.instruction)
        except InvalidInput as error:
            return [Prompt(None, str(error)) for _ in documents]
        prepared = prepare(request, None, None)  # text only: nothing is read or fetched
        clean = self.neutralise
        instruction = clean(self.instruction)
        query_text = clean(prepared.query.text)
        texts = [clean(prepared.documents[i].text) for i in range(len(documents))]
        try:
            fitted = _without_io(
                fit_documents(
                    self.family.query_text(query_text, instruction),
                    texts,
                    max_tokens=self.max_tokens,
                    policy=self.long_documents,
                    tokens=self._tokens,
                    format_document=self.family.document_text,
                )
            )
        except InvalidInput as error:  # the query leaves no room for any document
            return [Prompt(None, str(error)) for _ in documents]
        head = self.family.query_param(query_text, [], instruction)
        prompts = []
        for fit in fitted:
            if isinstance(fit, PreparedDocument):
                (piece,) = fit.pieces
                prompts.append(Prompt(f"{head}{self.family.document_param(piece, [])}", None, fit.truncated))
            else:
                prompts.append(Prompt(None, f"the document cannot be scored: {fit.reason}"))
        return prompts
