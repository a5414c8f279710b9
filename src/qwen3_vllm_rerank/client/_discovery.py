"""What a client learns about its server once, before its first score.

:meth:`Discovery.flow` is a flow (see ``_flow.py``) whose result, a :class:`ServerProfile`,
holds everything that depends on the server rather than on a call: the served model and
its context length, the model family (Qwen3-Reranker or Qwen3-VL-Reranker, whose prompts
differ), whether the server applies a score template itself, which strings must be
neutralised in user text, and where tokens are counted (loaded only when a document may
not fit).

Cost: one round of two requests (``GET /v1/models`` and a two-token score probe, sent
together by the async client); one more tiny probe only when the family cannot be read
from a local ``config.json``; one more pair only when a server template must be checked.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from .. import _protocol as proto
from .._checkpoints import PROBE_DOCUMENTS, PROBE_QUERY, QWEN3_ADDED_TOKENS, Family, family_of
from ..errors import FamilyMismatchError, InvalidInput, RerankHTTPError, TemplateMismatchError
from ..prompt import PROMPT_FAMILIES
from ._flow import Flow
from ._sanitize import Neutraliser
from ._tokens import LazyTokenSource, TokenizerOption, checkpoint_added_tokens

if TYPE_CHECKING:
    from tokenizers import Tokenizer

__all__ = ["Discovery", "FamilyOption", "ServerProfile", "Template"]

logger = logging.getLogger("qwen3_vllm_rerank")

FamilyOption = Literal["auto", "text", "vl"]
Template = Literal["client", "server", "auto"]

# A 2-character probe is 1-2 tokens bare and ~70 with a Qwen3 template around it.
_PROBE_TEMPLATED_ABOVE = 8
_TEMPLATE_TOLERANCE = 1e-4


@dataclass(frozen=True, slots=True)
class ServerProfile:
    """Everything learnt once about the server (see the module docstring)."""

    model: str
    max_model_len: int | None
    family: Family
    server_templates: bool
    neutralise: Neutraliser
    tokens: LazyTokenSource


def _local_config_family(*candidates: str | None) -> Family | None:
    for candidate in candidates:
        if not candidate:
            continue
        path = Path(candidate, "config.json")
        if path.is_file():
            try:
                architectures = json.loads(path.read_text(encoding="utf-8")).get("architectures")
                family = family_of(architectures if isinstance(architectures, list) else None)
            except (ValueError, AttributeError, TypeError):
                continue
            if family is not None:
                return family
    return None


def _added_tokens(option: TokenizerOption | Tokenizer, model: str) -> tuple[str, ...]:
    """The strings to neutralise: always Qwen3's own added tokens (every Qwen3 and Qwen3-VL
    reranker uses the same 26), plus whatever more the given tokenizer, or else the local
    checkpoint's ``tokenizer_config.json`` (cheap to read), declares. Never fewer: a tokenizer
    that lacks Qwen3's tokens does not make the server's tokenizer lack them."""
    found: tuple[str, ...] | None = None
    if option is not None and not isinstance(option, (str, Path)):
        found = tuple(t.content for t in option.get_added_tokens_decoder().values())
    else:
        for directory in (option, model):
            if directory is not None and directory != "server":
                path = Path(directory)
                found = checkpoint_added_tokens(path if path.is_dir() else path.parent)
                if found:
                    break
    return tuple(sorted({*(found or ()), *QWEN3_ADDED_TOKENS}))


@dataclass(frozen=True, slots=True)
class Discovery:
    """The client settings discovery depends on."""

    base_url: str
    model: str | None
    family: FamilyOption
    template: Template
    instruction: str | None
    api_key: bool
    tokenizer: TokenizerOption | Tokenizer

    def flow(self) -> Flow[ServerProfile]:
        """Learn about the server (see the module docstring)."""
        listing, probe = yield [proto.models_call(), proto.score_call(self.model, _probe_batch())]
        served = proto.parse_models(listing)
        model = self._pick_model(served)
        entry = next(m for m in served if m.name == model)
        server_templates = proto.parse_prompt_tokens(probe) > _PROBE_TEMPLATED_ABOVE
        family = _local_config_family(entry.root, model)
        if family is None:
            family = yield from self._probe_family(model)
        self._check_family(family)
        self._check_template_mode(server_templates)
        if server_templates and self.template == "auto":
            yield from self._verify_server_template(model, family)
        if self.tokenizer == "server" and self.api_key:
            raise InvalidInput(
                "tokenizer='server' needs /tokenize, which --api-key does not guard; with an API key pass "
                "tokenizer= a local checkpoint directory, tokenizer.json or hub id"
            )
        profile = ServerProfile(
            model=model,
            max_model_len=entry.max_model_len,
            family=family,
            server_templates=server_templates,
            neutralise=Neutraliser(_added_tokens(self.tokenizer, model)),
            tokens=LazyTokenSource(self.tokenizer, model, api_key=self.api_key),
        )
        logger.debug(
            "server %s: model %r (%s family), max_model_len %s, server template %s",
            self.base_url,
            model,
            family,
            entry.max_model_len,
            server_templates,
        )
        return profile

    def _pick_model(self, served: list[proto.ServedModel]) -> str:
        names = [m.name for m in served]
        if self.model is not None:
            if self.model not in names:
                raise InvalidInput(
                    f"the server at {self.base_url} does not serve {self.model!r}; it serves {names}"
                )
            return self.model
        if len(names) > 1:
            raise InvalidInput(f"the server at {self.base_url} serves several models {names}; pass model=")
        return names[0]

    def _probe_family(self, model: str) -> Flow[Family]:
        """A text reranker refuses a content-list document, a Qwen3-VL reranker scores it
        (measured with vLLM 0.32: HTTP 400 whose message names MultiModalParam; any other
        answer is raised as it is)."""
        (response,) = yield [proto.score_call(model, _probe_batch(multimodal=True), tolerate=(400,))]
        error = proto.status_error(response)
        if error is None:
            return "vl"
        if (
            isinstance(error, RerankHTTPError)
            and error.status_code == 400
            and "multimodal" in (error.server_message.lower())
        ):
            return "text"
        raise error

    def _check_family(self, served: Family) -> None:
        if self.family != "auto" and self.family != served:
            names = {"text": "Qwen3-Reranker (text)", "vl": "Qwen3-VL-Reranker"}
            raise FamilyMismatchError(
                f"model_family={self.family!r} but the server at {self.base_url} serves a {names[served]} "
                f"model, whose prompt differs: scores would be wrong. Pass model_family={served!r} or 'auto'"
            )

    def _check_template_mode(self, server_templates: bool) -> None:
        if server_templates and self.template == "client":
            raise TemplateMismatchError(
                f"the server at {self.base_url} applies a score template itself (started with "
                "--chat-template), so client-side formatting would double the template and give wrong "
                "scores: use template='server' or 'auto', or restart vLLM without --chat-template"
            )
        if not server_templates and self.template == "server":
            raise TemplateMismatchError(
                f"template='server' but the server at {self.base_url} applies no score template: pairs "
                "would be scored without the Qwen3 prompt. Use template='client' or 'auto'"
            )

    def _verify_server_template(self, model: str, family: Family) -> Flow[None]:
        """The server's template must give the client template's score, token for token."""
        if self.api_key:
            raise TemplateMismatchError(
                f"the server at {self.base_url} applies its own score template, and with an API key "
                "this client cannot check it against the Qwen3 template (that needs /classify, which "
                "--api-key does not guard). Restart vLLM without --chat-template, or pass "
                "template='server' if you are sure its template is exactly Qwen3-Reranker's"
            )
        document = PROBE_DOCUMENTS[0]
        batch = proto.ScoreBatch(0, PROBE_QUERY, [document], raw=True, instruction=self.instruction)
        reference_prompt = PROMPT_FAMILIES[family].full_prompt(PROBE_QUERY, document, self.instruction)
        served, reference = yield [
            proto.score_call(model, batch),
            proto.classify_call(model, reference_prompt),
        ]
        (server_score,) = proto.parse_scores(served, 1)
        client_score = proto.parse_classify(reference)
        if abs(server_score - client_score) > _TEMPLATE_TOLERANCE:
            raise TemplateMismatchError(
                f"the server at {self.base_url} applies a score template that differs from "
                f"Qwen3-Reranker's (probe score {server_score:.6f} vs {client_score:.6f} with the exact "
                "template); a common cause is a template file that lost its final newline. Restart "
                "vLLM without --chat-template: this client formats the prompt itself"
            )


def _probe_batch(*, multimodal: bool = False) -> proto.ScoreBatch:
    document: proto.ScoreParam = {"content": [{"type": "text", "text": "b"}]} if multimodal else "b"
    return proto.ScoreBatch(0, "a", [document])
