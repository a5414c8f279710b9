"""A converted checkpoint loads in Sentence Transformers, LangChain and LlamaIndex with Qwen3-Reranker's prompt.

The converter writes ``chat_template.jinja`` (the prompt) and the Sentence Transformers files
(``modules.json``, ...); ``CrossEncoder(path)`` then scores exactly like Qwen's reference, with no
template code on the user's side, and so do the in-process rerankers of LangChain
(``HuggingFaceCrossEncoder`` + ``CrossEncoderReranker``) and LlamaIndex
(``SentenceTransformerRerank``): they rank like ``Qwen3VLLMReranker`` against vLLM serving the same
checkpoint. The shipped template is also what vLLM would apply if it ever used it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from langchain_classic.retrievers.document_compressors import CrossEncoderReranker
from langchain_community.cross_encoders import HuggingFaceCrossEncoder
from langchain_core.documents import Document
from llama_index.core.postprocessor import SentenceTransformerRerank
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
from sentence_transformers import CrossEncoder
from transformers import AutoTokenizer

from langchain_qwen3_vllm_rerank import Qwen3VLLMReranker as LangChainReranker
from llama_index.postprocessor.qwen3_vllm_rerank import Qwen3VLLMReranker as LlamaIndexReranker
from qwen3_vllm_rerank import RerankClient, VLLMServer
from qwen3_vllm_rerank.convert import convert_checkpoint
from qwen3_vllm_rerank.prompt import format_prompt
from tests.convert.hostile import link as _link
from tests.support.fixtures import Checkpoints, ServerPool
from tests.support.pairs import FIDELITY_CASES
from tests.support.reference import reference_scores

pytestmark = pytest.mark.heavy  # loads Sentence Transformers / transformers models

CUSTOM = "Given a code search query, retrieve documentation that explains the feature"
CASE = FIDELITY_CASES[0]  # six documents with distinct scores on the tied fixture


@pytest.fixture(scope="module")
def converted(checkpoints: Checkpoints, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("st")
    return {
        name: convert_checkpoint(checkpoints.get(name), root / name, progress=False)
        for name in ("tied", "untied")
    }


@pytest.fixture(scope="module")
def cross_encoders(converted: dict[str, Path]) -> dict[str, CrossEncoder]:
    return {name: CrossEncoder(str(path), device="cpu") for name, path in converted.items()}


# --- the template ------------------------------------------------------------------------------


def _messages(query: str, document: str, system: str | None = None) -> list[dict[str, str]]:
    head = [{"role": "system", "content": system}] if system else []
    return [*head, {"role": "query", "content": query}, {"role": "document", "content": document}]


@pytest.mark.parametrize("case", FIDELITY_CASES, ids=lambda case: case.query[:20])
def test_the_shipped_template_renders_qwen3_rerankers_prompt_token_for_token(
    converted: dict[str, Path], case: Any
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(converted["tied"])
    for document in case.documents:
        expected = tokenizer(format_prompt(case.query, document, case.instruction))["input_ids"]
        # As Sentence Transformers passes it (an instruction is its prompt=, a system message) ...
        messages = _messages(case.query, document, case.instruction)
        assert tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False) == expected
        # ... and as vLLM does (the instruction as a template variable).
        kwargs = {"instruction": case.instruction} if case.instruction else {}
        text = tokenizer.apply_chat_template(_messages(case.query, document), tokenize=False, **kwargs)
        assert text == format_prompt(case.query, document, case.instruction)
        assert text.endswith("</think>\n\n")
    # No trailing newline for a loader to drop; the last two newlines are an expression.
    assert (converted["tied"] / "chat_template.jinja").read_text().endswith('</think>{{ "\\n\\n" }}')


def test_the_template_refuses_messages_that_are_not_a_pair(converted: dict[str, Path]) -> None:
    tokenizer = AutoTokenizer.from_pretrained(converted["tied"])
    with pytest.raises(Exception, match="needs a query and a document message"):
        tokenizer.apply_chat_template([{"role": "user", "content": "hello"}], tokenize=False)


def test_the_shipped_template_wins_over_a_generic_one_in_tokenizer_config(
    checkpoints: Checkpoints, tmp_path: Path
) -> None:
    # Published Qwen3 checkpoints carry the generic chat template in tokenizer_config.json.
    source = tmp_path / "source"
    source.mkdir()
    for file in checkpoints.get("tied").iterdir():
        if file.name != "tokenizer_config.json":
            _link(source / file.name, file)
    config = json.loads((checkpoints.get("tied") / "tokenizer_config.json").read_text())
    config["chat_template"] = (
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    )
    (source / "tokenizer_config.json").write_text(json.dumps(config))
    out = convert_checkpoint(source, tmp_path / "out", progress=False)
    assert json.loads((out / "tokenizer_config.json").read_text())["chat_template"] == config["chat_template"]
    text = AutoTokenizer.from_pretrained(out).apply_chat_template(_messages("q", "d"), tokenize=False)
    assert text == format_prompt("q", "d")
    [score] = CrossEncoder(str(out), device="cpu").predict([("q", "d")])
    assert score == pytest.approx(reference_scores(checkpoints.get("tied"), "q", ["d"])[0], abs=1e-4)


# --- Sentence Transformers --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tied", "untied"])
def test_cross_encoder_predict_equals_the_reference(
    checkpoints: Checkpoints, cross_encoders: dict[str, CrossEncoder], name: str
) -> None:
    model = cross_encoders[name]
    for case in FIDELITY_CASES:
        expected = reference_scores(checkpoints.get(name), case.query, case.documents, case.instruction)
        pairs = [(case.query, document) for document in case.documents]
        # The instruction is Sentence Transformers' prompt=; None means the model card's default.
        assert model.predict(pairs, prompt=case.instruction).tolist() == pytest.approx(expected, abs=1e-4)
    expected = reference_scores(checkpoints.get(name), CASE.query, CASE.documents, CUSTOM)
    assert model.predict([(CASE.query, d) for d in CASE.documents], prompt=CUSTOM).tolist() == pytest.approx(
        expected, abs=1e-4
    )
    ranked = model.rank(CASE.query, CASE.documents, prompt=CUSTOM)
    assert [hit["corpus_id"] for hit in ranked] == sorted(range(len(expected)), key=lambda i: -expected[i])


def test_a_default_prompt_sets_the_instruction_for_every_call(
    checkpoints: Checkpoints, converted: dict[str, Path]
) -> None:
    # The way to give wrappers that only call predict(pairs) (LangChain, LlamaIndex) an instruction.
    model = CrossEncoder(
        str(converted["tied"]), device="cpu", prompts={"code": CUSTOM}, default_prompt_name="code"
    )
    expected = reference_scores(checkpoints.get("tied"), CASE.query, CASE.documents, CUSTOM)
    assert model.predict([(CASE.query, d) for d in CASE.documents]).tolist() == pytest.approx(
        expected, abs=1e-4
    )


def test_the_fixture_itself_loads_like_a_published_reranker(checkpoints: Checkpoints) -> None:
    # make_fixture_checkpoint writes the same template, with LogitScore over the CausalLM's logits.
    model = CrossEncoder(str(checkpoints.get("tied")), device="cpu")
    expected = reference_scores(checkpoints.get("tied"), CASE.query, CASE.documents)
    assert model.predict([(CASE.query, d) for d in CASE.documents]).tolist() == pytest.approx(
        expected, abs=1e-4
    )


# --- LangChain and LlamaIndex, in process, against Qwen3VLLMReranker on vLLM ---------------------------


def test_langchain_huggingface_cross_encoder_ranks_like_qwen3_vllm_reranker(server_pool: ServerPool) -> None:
    served = server_pool.get("converted-tied")
    documents = [Document(page_content=text, metadata={"i": i}) for i, text in enumerate(CASE.documents)]
    for instruction in (None, CUSTOM):
        prompt = {"prompts": {"task": instruction}, "default_prompt_name": "task"} if instruction else {}
        local = HuggingFaceCrossEncoder(
            model_name=str(served.served_checkpoint), model_kwargs={"device": "cpu", **prompt}
        )
        in_process = CrossEncoderReranker(model=local, top_n=len(documents)).compress_documents(
            documents, CASE.query
        )
        kwargs = {"instruction": instruction} if instruction else {}
        remote = LangChainReranker(base_url=served.base_url, top_n=None, **kwargs)
        served_docs = remote.compress_documents(documents, CASE.query)
        assert [d.metadata["i"] for d in in_process] == [d.metadata["i"] for d in served_docs], instruction
        scores = list(local.score([(CASE.query, d.page_content) for d in served_docs]))
        assert scores == pytest.approx([d.metadata["relevance_score"] for d in served_docs], abs=1e-4)
        expected = reference_scores(
            served.original, CASE.query, [d.page_content for d in served_docs], instruction
        )
        assert scores == pytest.approx(expected, abs=1e-4)


def test_llama_index_sentence_transformer_rerank_ranks_like_qwen3_vllm_reranker(
    server_pool: ServerPool,
) -> None:
    served = server_pool.get("converted-tied")
    # SentenceTransformerRerank truncates at 512 tokens; these prompts are shorter.
    tokenizer = AutoTokenizer.from_pretrained(served.served_checkpoint)
    assert max(len(tokenizer(format_prompt(CASE.query, d))["input_ids"]) for d in CASE.documents) < 512

    def nodes() -> list[NodeWithScore]:
        return [
            NodeWithScore(node=TextNode(text=text, id_=str(i)), score=0.0)
            for i, text in enumerate(CASE.documents)
        ]

    query = QueryBundle(CASE.query)
    local = SentenceTransformerRerank(
        model=str(served.served_checkpoint), top_n=len(CASE.documents), device="cpu"
    )
    in_process = local.postprocess_nodes(nodes(), query_bundle=query)
    served_nodes = LlamaIndexReranker(base_url=served.base_url, top_n=None).postprocess_nodes(
        nodes(), query_bundle=query
    )
    assert [n.node.node_id for n in in_process] == [n.node.node_id for n in served_nodes]
    assert [n.score for n in in_process] == pytest.approx([n.score for n in served_nodes], abs=1e-4)


# --- vLLM and the shipped template -------------------------------------------------------------------


def test_vllm_does_not_apply_the_checkpoints_template_by_itself(server_pool: ServerPool) -> None:
    # Measured on vLLM 0.32: /score applies a chat template only when given --chat-template, so
    # the converted checkpoint's chat_template.jinja is inert there: "q" + "d" is one token, no prompt.
    # Should a later vLLM apply it, the test below shows the client still scores right.
    served = server_pool.get("converted-tied")
    body = {"model": served.model, "queries": "q", "documents": ["d"]}
    usage = httpx.post(f"{served.base_url}/v1/score", json=body, timeout=60).json()["usage"]
    tokens = AutoTokenizer.from_pretrained(served.served_checkpoint)("qd")["input_ids"]
    assert usage["prompt_tokens"] == len(tokens), "vLLM now applies the checkpoint's template: see test below"


@pytest.mark.usefixtures("server_room")  # it starts a vLLM server of its own
def test_vllm_applying_the_shipped_template_scores_like_the_client(
    server_pool: ServerPool, server_python: str, tmp_path: Path
) -> None:
    served = server_pool.get("converted-tied")
    checkpoint = served.served_checkpoint
    args = [
        "--dtype",
        "float32",
        "--max-model-len",
        "2048",
        "--chat-template",
        str(checkpoint / "chat_template.jinja"),
    ]
    with VLLMServer(
        checkpoint, python=server_python, extra_args=args, log_file=tmp_path / "vllm.log"
    ) as server:
        for instruction in (None, CUSTOM):
            expected = reference_scores(served.original, CASE.query, CASE.documents, instruction)
            for template in ("auto", "server"):
                with RerankClient(server.base_url, template=template, instruction=instruction) as client:  # type: ignore[arg-type]
                    scores = client.score(CASE.query, CASE.documents)
                assert scores == pytest.approx(expected, abs=1e-4), (template, instruction)
