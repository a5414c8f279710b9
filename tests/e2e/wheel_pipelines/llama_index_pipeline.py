"""A LlamaIndex query engine, run by tests/test_distributions.py with a fresh virtualenv's interpreter.

That virtualenv holds only the built wheels (and their dependencies from the registry), and the
interpreter runs isolated (``-I``), so nothing from the source tree can be imported here. Reads
``{"base_url", "query", "documents"}`` as JSON on stdin; writes the ranking of the response's source
nodes and where every package was imported from as JSON on stdout.
"""

from __future__ import annotations

import json
import sys

from llama_index.core import VectorStoreIndex
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms import MockLLM
from llama_index.core.schema import TextNode

import llama_index.postprocessor.qwen3_vllm_rerank as postprocessor
import qwen3_vllm_rerank
from llama_index.postprocessor.qwen3_vllm_rerank import Qwen3VLLMReranker


def main() -> None:
    request = json.load(sys.stdin)
    nodes = [TextNode(text=text, id_=str(i)) for i, text in enumerate(request["documents"])]
    index = VectorStoreIndex(nodes=nodes, embed_model=MockEmbedding(embed_dim=8))
    engine = index.as_query_engine(
        llm=MockLLM(),
        similarity_top_k=len(nodes),
        node_postprocessors=[Qwen3VLLMReranker(base_url=request["base_url"], top_n=None)],
    )
    response = engine.query(request["query"])
    json.dump(
        {
            "ranked": [[n.node.node_id, n.score] for n in response.source_nodes],
            "files": {m.__name__: m.__file__ for m in (qwen3_vllm_rerank, postprocessor)},
            "prefix": sys.prefix,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
