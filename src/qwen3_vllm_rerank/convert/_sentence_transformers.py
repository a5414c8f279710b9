"""The files Sentence Transformers (6.x) needs to load a checkpoint as a Qwen3-Reranker ``CrossEncoder``.

It renders a ``(query, document)`` pair through ``chat_template.jinja`` as ``query`` and ``document``
messages, after a ``system`` message with the ``prompt=`` of ``predict``/``rank`` if given: the
template makes that Qwen3-Reranker's prompt, the prompt being the instruction. The score is the
converted checkpoint's logit (or ``LogitScore``'s ``logit(yes) - logit(no)`` for an original
CausalLM, like the test fixture) through a sigmoid: p(yes).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..prompt import DEFAULT_INSTRUCTION, PREFIX, SUFFIX

#: Every file this module writes: a converter never copies a source's own versions of them.
FILES = (
    "chat_template.jinja",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
)
_ST = "sentence_transformers"


def chat_template() -> str:
    """Qwen3-Reranker's prompt as a chat template over ``system``, ``query`` and ``document`` messages.

    The final ``"\\n\\n"`` is an expression and the text ends there, so no jinja loader can drop a
    trailing newline (jinja drops one: ``</think>\\n\\n`` would become ``</think>\\n``).
    """
    return (
        "{#- Qwen3-Reranker's prompt (qwen3-vllm-rerank). The instruction: the variable `instruction`\n"
        "    (vLLM), else a system message (Sentence Transformers' prompt=), else the default. -#}\n"
        f'{{%- set ns = namespace(instruction="{DEFAULT_INSTRUCTION}", query=none, document=none) -%}}\n'
        "{%- for message in messages -%}\n"
        '{%- if message.role == "system" -%}{%- set ns.instruction = message.content -%}\n'
        '{%- elif message.role == "query" -%}{%- set ns.query = message.content -%}\n'
        '{%- elif message.role == "document" -%}{%- set ns.document = message.content -%}\n'
        "{%- endif -%}\n"
        "{%- endfor -%}\n"
        "{%- if instruction is defined and instruction -%}\n"
        "{%- set ns.instruction = instruction -%}\n"
        "{%- endif -%}\n"
        "{%- if ns.query is none or ns.document is none -%}\n"
        '{{- raise_exception("a Qwen3-Reranker prompt needs a query and a document message") -}}\n'
        "{%- endif -%}\n"
        f"{PREFIX}<Instruct>: {{{{ ns.instruction }}}}\n<Query>: {{{{ ns.query }}}}\n"
        f'<Document>: {{{{ ns.document }}}}{SUFFIX.removesuffix(chr(10) * 2)}{{{{ "\\n\\n" }}}}'
    )


def files(*, logit_score: tuple[int, int] | None = None) -> dict[str, str]:
    """Relative path -> content; ``logit_score=(yes_id, no_id)`` for an original CausalLM checkpoint."""
    causal = logit_score is not None
    forward = {"method": "forward", "method_output_name": "logits"}  # text pairs become messages too
    written: dict[str, Any] = {"sentence_bert_config.json": {
        "transformer_task": "text-generation" if causal else "sequence-classification",
        "modality_config": {"text": forward, "message": {**forward, "format": "flat"}},
        "module_output_name": "causal_logits" if causal else "scores",
    }, "config_sentence_transformers.json": {
        "model_type": "CrossEncoder", "activation_fn": "torch.nn.modules.activation.Sigmoid", "prompts": {},
        "default_prompt_name": None, "requirements": {"sentence_transformers": ">=6"},
    }}  # fmt: skip
    modules = [f"{_ST}.base.modules.transformer.Transformer"]
    if logit_score is not None:
        modules.append(f"{_ST}.cross_encoder.modules.logit_score.LogitScore")
        yes, no = logit_score
        written["1_LogitScore/config.json"] = {"true_token_id": yes, "false_token_id": no}
        written["1_LogitScore/config.json"]["module_input_name"] = "causal_logits"
    written["modules.json"] = [
        {"idx": i, "name": str(i), "path": f"{i}_LogitScore" if i else "", "type": kind}
        for i, kind in enumerate(modules)
    ]
    return {FILES[0]: chat_template()} | {name: json.dumps(v, indent=2) + "\n" for name, v in written.items()}


def write(directory: Path, *, logit_score: tuple[int, int] | None = None) -> None:
    """Write :func:`files` into ``directory``."""
    for name, content in files(logit_score=logit_score).items():
        (directory / name).parent.mkdir(exist_ok=True)
        (directory / name).write_text(content)
