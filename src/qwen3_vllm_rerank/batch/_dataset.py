"""``rerank_dataset``: every row of a Ray Dataset scored, by a vLLM stage on the workers or by a fleet of
servers, one output row per input row."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..client._budget import LONG_DOCUMENT_POLICIES, LongDocuments
from ..errors import InvalidInput
from ..images import UrlFetcher
from ._columns import ERROR, KEY, SCORE, check_columns
from ._engine_rows import STAGE_COLUMNS, PromptSettings, prompt_batch, score_batch
from ._fleet import FleetScorer, Secret
from ._resume import KeyRows, MissingRows, done_keys

if TYPE_CHECKING:
    from ray.data import Dataset

__all__ = ["rerank_dataset"]

_INSTALL = "rerank_dataset needs Ray Data: pip install 'qwen3-vllm-rerank[ray]'"


def _positive(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInput(f"{name} must be a positive integer, got {value!r}")
    return value


def rerank_dataset(
    ds: Dataset,
    *,
    query: str = "query",
    document: str = "document",
    image: str | None = None,
    model: str | Path | None = None,
    base_url: str | Sequence[str] | None = None,
    instruction: str | None = None,
    write_to: str | Path | None = None,
    id_column: str | None = None,
    long_documents: LongDocuments = "truncate",
    max_length: int | None = None,
    tokenizer: str | None = None,
    batch_size: int = 64,
    concurrency: int = 1,
    max_concurrency: int = 8,
    api_key: str | None = None,
    extra_args: Sequence[str] = (),
    engine_kwargs: Mapping[str, Any] | None = None,
    gpu_memory: float | None = None,
    image_fetcher: UrlFetcher | None = None,
) -> Dataset:
    """Score every ``(query, document)`` row of ``ds`` with Qwen3-Reranker.

    The result has every input column plus ``score`` (p(yes), a float, or None) and ``rerank_error``
    (why that row was not scored, or None): one output row per input row. A row whose content cannot be
    scored (not text, too long with ``long_documents="error"``, refused by vLLM) gets its reason and the
    others go on. Each row is prepared exactly as :class:`~qwen3_vllm_rerank.RerankClient` prepares it
    (the family's template, the suffix-preserving token budget, neutralised special tokens).

    Two engines, exactly one of:

    * ``model``: a checkpoint directory or hub id scored by Ray's vLLM stage on ``concurrency`` workers,
      with the flags :func:`~qwen3_vllm_rerank.serve.plan_launch` chooses for it on this machine (dtype,
      length, KV cache, cores, overrides for an original checkpoint); ``extra_args`` are more vLLM engine
      flags (they win), ``engine_kwargs`` the last word on the stage's engine arguments. Needs vLLM in this
      interpreter; Qwen3-Reranker (text) checkpoints only.
    * ``base_url``: running servers (one URL, a comma-separated list or a sequence: replicas with the
      client's retries and cool-down), scored by ``concurrency`` actors, each with one
      :class:`~qwen3_vllm_rerank.AsyncRerankClient` keeping at most ``max_concurrency`` requests in flight.

    ``image`` (``base_url`` only, a Qwen3-VL reranker): a column holding each row's page, as the encoded
    image's bytes or a path / URL; the document is then ``Content(text, images=[page])`` and the client
    gives the model the official reranker's pixels. A path or URL there is a reference a retrieved
    document names: it is read only as ``image_fetcher`` allows (a path only inside its ``file_roots``, a
    URL only with a fetcher, public addresses only unless ``allowed_hosts`` says otherwise); a row whose
    page cannot be read gets its ``rerank_error``. A null cell scores the text alone.

    ``write_to``: a directory the scored rows are written to as Parquet, with a ``rerank_key`` column; a
    later call with the same directory scores only the rows it does not hold yet, and the call returns
    the directory's rows (run eagerly). The key is a hash of the instruction, the query, the document and
    the ``id_column`` value when one is named: name one when identical pairs must stay separate rows
    across an interrupted run. Without ``write_to`` the result is lazy, like any Dataset.
    """
    try:
        import ray.data
    except ImportError as exc:
        raise ImportError(_INSTALL) from exc
    if (model is None) == (base_url is None):
        raise InvalidInput("pass exactly one of model= (a vLLM stage on the workers) or base_url= (servers)")
    if long_documents not in LONG_DOCUMENT_POLICIES:
        raise InvalidInput(f"long_documents must be one of {LONG_DOCUMENT_POLICIES}, got {long_documents!r}")
    _positive("batch_size", batch_size)
    _positive("concurrency", concurrency)
    if model is not None and (image is not None or image_fetcher is not None):
        raise InvalidInput(
            "image= scores pages on Qwen3-VL servers: the batch engine scores text rerankers only so far; "
            "serve the Qwen3-VL reranker (qwen3-vllm-rerank serve) and pass base_url= instead"
        )
    added = {SCORE, ERROR, KEY} | (set(STAGE_COLUMNS) if model is not None else set())
    needed = [query, document, *([id_column] if id_column else []), *([image] if image else [])]
    check_columns(ds.columns() or [], needed=needed, reserved=added, where="the dataset")

    todo = ds
    directory = Path(write_to) if write_to is not None else None
    if directory is not None:
        key = KeyRows(
            query=query, document=document, id_column=id_column, instruction=instruction, image=image
        )
        todo = ds.map_batches(key, batch_format="pandas")
        done = done_keys(directory)
        if done:
            todo = todo.map_batches(MissingRows(done), batch_format="pandas")

    if model is not None:
        scored = _engine(
            todo,
            str(model),
            query=query,
            document=document,
            instruction=instruction,
            long_documents=long_documents,
            max_length=max_length,
            tokenizer=tokenizer,
            batch_size=batch_size,
            concurrency=concurrency,
            extra_args=extra_args,
            engine_kwargs=engine_kwargs,
            gpu_memory=gpu_memory,
        )
    else:
        options: dict[str, Any] = {
            "base_url": base_url,
            "instruction": instruction,
            "long_documents": long_documents,
            "max_length": max_length,
            "max_concurrency": max_concurrency,
            "tokenizer": tokenizer,
            "image_fetcher": image_fetcher,
        }
        scored = todo.map_batches(
            FleetScorer,
            fn_constructor_kwargs={
                "query": query,
                "document": document,
                "image": image,
                "client_options": options,
                "api_key": Secret(api_key) if api_key is not None else None,
            },
            concurrency=concurrency,
            batch_size=batch_size,
            batch_format="pandas",
        )
    if directory is None:
        return scored
    scored.write_parquet(str(directory))
    return ray.data.read_parquet(str(directory))


def _engine(
    ds: Dataset,
    model: str,
    *,
    query: str,
    document: str,
    instruction: str | None,
    long_documents: LongDocuments,
    max_length: int | None,
    tokenizer: str | None,
    batch_size: int,
    concurrency: int,
    extra_args: Sequence[str],
    engine_kwargs: Mapping[str, Any] | None,
    gpu_memory: float | None,
) -> Dataset:
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig

    from ._engine import plan_engine

    setup = plan_engine(model, extra_args=extra_args, gpu_memory=gpu_memory, engine_kwargs=engine_kwargs)
    if setup.family != "text":
        raise InvalidInput(
            f"{model} is a Qwen3-VL reranker: the batch engine scores text rerankers only so far; serve it "
            "(qwen3-vllm-rerank serve) and pass base_url= instead"
        )
    limits = [n for n in (setup.max_model_len, max_length) if n is not None]
    settings = PromptSettings(
        model=model,
        family=setup.family,
        max_tokens=min(limits) if limits else None,
        long_documents=long_documents,
        instruction=instruction,
        tokenizer=tokenizer,
        query=query,
        document=document,
    )
    config = vLLMEngineProcessorConfig(
        model_source=model,
        task_type="classify",
        engine_kwargs=setup.engine_kwargs,
        runtime_env={"env_vars": setup.env},
        placement_group_config=setup.placement_group_config,
        log_engine_metrics=False,
        batch_size=batch_size,
        concurrency=concurrency,
        chat_template_stage=False,
        tokenize_stage=False,
        detokenize_stage=False,
        should_continue_on_error=True,
    )
    prompts = ds.map_batches(functools.partial(prompt_batch, settings=settings), batch_format="pandas")
    return build_processor(config)(prompts).map_batches(score_batch, batch_format="pandas")
