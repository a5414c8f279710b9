"""The fleet mode: rows scored by an existing set of servers through
:class:`~qwen3_vllm_rerank.AsyncRerankClient`, one client per Ray actor.

Each actor holds one client (its connection pools, what it learnt about the servers, the replicas'
cool-down) for its life and scores the queries of a batch concurrently: the client keeps at most
``max_concurrency`` requests in flight per actor, so a fleet of N actors sends at most N times that.
A document the client cannot use (over the budget with ``long_documents="error"``, ...) fails its row;
a query the servers refuse, or a server that stays unreachable through the client's retries, fails the
rows of that query in that batch; any other exception fails the batch, which Ray retries.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..client import AsyncRerankClient
from ..client._inputs import Input
from ..errors import Qwen3RerankError
from ._columns import ERROR, SCORE, document_input
from ._rows import Outcome, by_query, text_rows

__all__ = ["FleetScorer", "Secret"]


@dataclass(frozen=True, slots=True)
class Secret:
    """An API key on its way to the actors: its repr (in Ray's logs and errors) shows nothing."""

    value: str = field(repr=False)


class FleetScorer:
    """A Ray Data ``map_batches`` class: adds the score and error columns to a pandas batch.

    ``client_options``: keyword arguments of :class:`~qwen3_vllm_rerank.AsyncRerankClient`; ``api_key``:
    its key (None: the client reads ``$QWEN3_VLLM_RERANK_API_KEY`` on the worker).
    """

    def __init__(
        self,
        *,
        query: str,
        document: str,
        client_options: Mapping[str, Any],
        api_key: Secret | None = None,
        image: str | None = None,
    ) -> None:
        self.query = query
        self.document = document
        self.image = image
        key = api_key.value if api_key is not None else None
        self.client = AsyncRerankClient(**client_options, api_key=key)
        self.loop = asyncio.new_event_loop()  # one loop per actor: the client's pools stay bound to it

    def __call__(self, batch: Any) -> Any:
        pairs, outcomes = text_rows(
            list(batch[self.query]),
            list(batch[self.document]),
            query_column=self.query,
            document_column=self.document,
        )
        images = list(batch[self.image]) if self.image else [None] * len(pairs)
        inputs: list[Input | None] = [None] * len(pairs)
        for position, (pair, image) in enumerate(zip(pairs, images, strict=True)):
            if pair is not None:
                inputs[position], reason = document_input(pair[1], image, self.image or "")
                if reason is not None:
                    pairs[position], outcomes[position] = None, (None, reason)
        groups = by_query(pairs)
        scored = self.loop.run_until_complete(
            self._score_all(
                {q: [d for p in rows if (d := inputs[p]) is not None] for q, rows in groups.items()}
            )
        )
        for query, rows in groups.items():
            for position, outcome in zip(rows, scored[query], strict=True):
                outcomes[position] = outcome
        batch = batch.copy()
        batch[SCORE] = [score for score, _ in outcomes]
        batch[ERROR] = [error for _, error in outcomes]
        return batch

    async def _score_all(self, groups: dict[str, list[Input]]) -> dict[str, list[Outcome]]:
        async with asyncio.TaskGroup() as tasks:
            running = {query: tasks.create_task(self._score(query, docs)) for query, docs in groups.items()}
        return {query: task.result() for query, task in running.items()}

    async def _score(self, query: str, documents: list[Input]) -> list[Outcome]:
        try:
            ranking = await self.client.rerank_usable(query, documents)
        except Qwen3RerankError as error:
            return [(None, str(error))] * len(documents)
        outcomes: list[Outcome] = [(None, None)] * len(documents)
        for result in ranking.results:
            outcomes[result.index] = (result.score, None)
        for index, reason in ranking.unusable.items():
            outcomes[index] = (None, f"the document cannot be scored: {reason}")
        return outcomes
