"""Rendezvous routing of image pages over several replicas: the hash (stable, balanced, minimal
reshuffle), the split of a call into per-replica requests and the merge of their scores, the
fallback on cool-down, and, on two real Qwen3-VL servers, each page reaching its own replica
(proved by each server's own multimodal-cache counters)."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator

import pytest

from qwen3_vllm_rerank import Content, RerankClient, RetryPolicy, VLLMServer
from qwen3_vllm_rerank.client._retry import Attempts, Endpoints
from qwen3_vllm_rerank.client._routing import rendezvous_order, route_groups
from qwen3_vllm_rerank.errors import RerankHTTPError
from tests.client.flows import QUERY, image_parts, noise, pages, run, sent_bytes
from tests.support.fixtures import Served, ServerPool
from tests.support.mm_metrics import mm_cache_counters

A, B, C = "http://10.0.0.1:8000", "http://10.0.0.2:8000", "http://10.0.0.3:8000"
KEYS = [hashlib.sha256(str(n).encode()).hexdigest() for n in range(3000)]


# -- the hash ---------------------------------------------------------------------------------


def test_the_order_is_the_same_in_another_process() -> None:
    """SHA-256, not Python's salted hash(): another interpreter with another hash seed agrees."""
    here = [rendezvous_order(key, [A, B, C]) for key in KEYS[:200]]
    program = (
        "import json, sys; from qwen3_vllm_rerank.client._routing import rendezvous_order; "
        "keys, urls = json.load(sys.stdin); print(json.dumps([rendezvous_order(k, urls) for k in keys]))"
    )
    there = subprocess.run(
        [sys.executable, "-c", program],
        input=json.dumps([KEYS[:200], [A, B, C]]),
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
        timeout=60,
    )
    assert json.loads(there.stdout) == here


def test_the_order_does_not_depend_on_how_the_replicas_are_listed() -> None:
    assert all(rendezvous_order(key, [A, B, C]) == rendezvous_order(key, [C, A, B]) for key in KEYS[:300])


def test_pages_are_spread_evenly() -> None:
    """3,000 pages over 3 replicas: each holds a third, within 10% (the binomial spread is ~2.6%)."""
    shares = Counter(rendezvous_order(key, [A, B, C])[0] for key in KEYS)
    assert set(shares) == {A, B, C}
    assert all(900 <= share <= 1100 for share in shares.values()), shares


def test_removing_a_replica_moves_only_its_pages_to_their_next_choice() -> None:
    before = {key: rendezvous_order(key, [A, B, C]) for key in KEYS}
    after = {key: rendezvous_order(key, [A, C])[0] for key in KEYS}
    moved = [key for key in KEYS if after[key] != before[key][0]]
    assert moved == [key for key in KEYS if before[key][0] == B]
    assert all(after[key] == before[key][1] for key in moved)  # where it fell back to while B was down


def test_adding_a_replica_takes_a_fair_share_from_the_others_and_nothing_else() -> None:
    before = {key: rendezvous_order(key, [A, B])[0] for key in KEYS}
    after = {key: rendezvous_order(key, [A, B, C])[0] for key in KEYS}
    moved = [key for key in KEYS if after[key] != before[key]]
    assert all(after[key] == C for key in moved)
    assert 900 <= len(moved) <= 1100


def test_route_groups_split_image_pieces_by_replica_and_keep_text_together() -> None:
    keys: list[str | None] = [KEYS[0], None, KEYS[1], KEYS[2], None, KEYS[3]]
    groups = route_groups(keys, [A, B])
    assert sorted(m for g in groups for m in g.members) == list(range(len(keys)))
    text = [g for g in groups if g.route is None]
    assert [g.members for g in text] == [(1, 4)]
    for group in groups:
        if group.route is not None:
            preferred = {rendezvous_order(keys[m], [A, B])[0] for m in group.members}  # type: ignore[arg-type]
            assert preferred == {rendezvous_order(group.route, [A, B])[0]}
            assert group.route == keys[group.members[0]]
    assert [g.members[0] for g in groups] == sorted(g.members[0] for g in groups)  # first-member order


def test_with_one_replica_there_is_one_unrouted_group() -> None:
    groups = route_groups([KEYS[0], None, KEYS[1]], [A])
    assert [(g.route, g.members) for g in groups] == [(None, (0, 1, 2))]
    assert route_groups([], [A, B]) == []


# -- where a routed request goes ----------------------------------------------------------


def test_a_routed_request_goes_to_its_replica_then_falls_back_on_cool_down() -> None:
    now = [0.0]
    endpoints = Endpoints([A, B, C], cooldown=10, clock=lambda: now[0])
    key = KEYS[7]
    first, second, third = rendezvous_order(key, [A, B, C])
    assert [endpoints.pick(key) for _ in range(3)] == [first] * 3  # no round-robin for a page
    endpoints.failed(first)
    assert endpoints.pick(key) == second
    endpoints.failed(second)
    assert endpoints.pick(key) == third
    endpoints.failed(third)
    assert endpoints.pick(key) == first  # all down: the first to recover
    now[0] = 11
    assert endpoints.pick(key) == first  # back home once its cool-down is over


def test_a_retried_routed_request_tries_the_next_replica() -> None:
    """A 503 does not cool a replica down, but the retry of that request goes to the next one."""
    endpoints = Endpoints([A, B, C], cooldown=10)
    key = KEYS[11]
    order = rendezvous_order(key, [A, B, C])
    attempts = Attempts(RetryPolicy(max_attempts=3, backoff=0), endpoints, route=key)
    tried = []
    for _ in range(2):
        url, _ = attempts.next()
        tried.append(url)
        attempts.failed(url, RerankHTTPError(url, 503, "busy"))
    url, _ = attempts.next()
    assert [*tried, url] == order
    assert endpoints.pick(key) == order[0]  # the next request of that page goes home again


# -- one call split by replica and merged back --------------------------------------------


def _replica_of_each_call(calls: list[object], replicas: list[str]) -> list[set[str]]:
    """For each score call: the replicas its image documents prefer (by the uuids sent)."""
    found = []
    for call in calls:
        documents = call.json["text_2"]  # type: ignore[attr-defined]
        keys = {
            ",".join(part["uuid"] for part in image_parts(document))
            for document in documents
            if isinstance(document, dict)
        }
        found.append({rendezvous_order(key, replicas)[0] for key in keys})
    return found


def test_a_call_is_split_by_replica_and_scores_come_back_in_the_callers_order() -> None:
    documents = [*pages(9), "a text paragraph", Content("a caption", images=[noise(50), noise(51)])]
    documents.insert(3, "another paragraph")
    routed, routed_calls = run(QUERY, documents, (A, B), batch_size=2)
    plain, plain_calls = run(QUERY, documents, (A,), batch_size=2)
    # Each document's score is the one its own request gave, put back at its index.
    assert {i: s.score for i, s in routed.scored.items()} == {i: s.score for i, s in plain.scored.items()}
    assert sorted(routed.scored) == list(range(len(documents)))
    # Every request's image documents prefer one replica, and its route says so.
    for call, preferred in zip(routed_calls, _replica_of_each_call(routed_calls, [A, B]), strict=True):
        if call.route is None:
            assert preferred == set()  # text only
        else:
            assert preferred == {rendezvous_order(call.route, [A, B])[0]}
    assert {c.route is None for c in routed_calls} == {True, False}
    assert {next(iter(p)) for p in _replica_of_each_call(routed_calls, [A, B]) if p} == {A, B}
    # Nothing sent twice, nothing left out.
    sent = Counter(json.dumps(d, sort_keys=True) for c in routed_calls for d in c.json["text_2"])  # type: ignore[index]
    assert sum(sent.values()) == len(documents)
    assert max(sent.values()) == 1
    assert all(c.route is None for c in plain_calls)


def test_a_text_only_call_is_batched_as_before() -> None:
    documents: list[object] = [f"paragraph {k}" for k in range(5)]
    routed, routed_calls = run(QUERY, documents, (A, B, C), batch_size=2)  # type: ignore[arg-type]
    plain, plain_calls = run(QUERY, documents, (A,), batch_size=2)  # type: ignore[arg-type]
    assert [c.json for c in routed_calls] == [c.json for c in plain_calls]
    assert all(c.route is None for c in routed_calls)
    assert routed.scored == plain.scored


def test_the_batch_with_the_most_images_per_pair_still_goes_first() -> None:
    """The image-limit probe (``probe_first``) sends the most images per pair first: routing
    keeps that batch first."""
    documents = [*pages(4), Content("two pages", images=[noise(60), noise(61)])]
    _, calls = run(QUERY, documents, (A, B), batch_size=1)
    assert [len(list(image_parts(call.json))) for call in calls] == [2, 1, 1, 1, 1]


# -- two real servers ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def second_vl(
    vl_served: Served, server_pool: ServerPool, server_python: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A second replica of the session's Qwen3-VL server: the same checkpoint and flags."""
    log = tmp_path_factory.mktemp("second-vl") / "server.log"
    with (
        server_pool.room(6),
        VLLMServer(
            vl_served.served_checkpoint, python=server_python, extra_args=["--dtype", "float32"], log_file=log
        ) as server,
    ):
        yield server.base_url


def _closed_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_each_page_is_scored_by_its_replica_on_two_real_servers(vl_served: Served, second_vl: str) -> None:
    replicas = [vl_served.base_url, second_vl]
    documents = pages(12, first_seed=7000)  # seeds no other test uses: neither server has seen them
    with RerankClient(vl_served.base_url) as single:
        expected = single.score(QUERY, documents)
    keys = [hashlib.sha256(sent_bytes(p)).hexdigest() for p in _sent_parts(documents)]
    share = Counter(rendezvous_order(key, replicas)[0] for key in keys)
    assert set(share) == set(replicas)  # the pages chosen do land on both
    before = {url: mm_cache_counters(url) for url in replicas}
    with RerankClient(replicas, batch_size=4) as client:
        assert client.score(QUERY, documents) == pytest.approx(expected, abs=1e-6)
        after = {url: mm_cache_counters(url, before[url]["queries"] + share[url]) for url in replicas}
        # Each server processed exactly its own pages (the first server has seen them once, from
        # the single-server call above; the second never).
        for url in replicas:
            assert after[url]["queries"] - before[url]["queries"] == share[url]
        # A new query over the same pages: every page is found in its own replica's cache.
        again = client.score("a different question about these pages", documents)
        assert len(again) == len(documents)
        final = {url: mm_cache_counters(url, after[url]["queries"] + share[url]) for url in replicas}
    for url in replicas:
        assert final[url]["queries"] - after[url]["queries"] == share[url]
        assert final[url]["hits"] - after[url]["hits"] == share[url]


def test_pages_of_a_replica_that_is_down_fall_back_to_the_live_one(vl_served: Served) -> None:
    dead = _closed_url()
    replicas = [vl_served.base_url, dead]
    documents = pages(8, first_seed=7100)
    keys = [hashlib.sha256(sent_bytes(p)).hexdigest() for p in _sent_parts(documents)]
    assert any(rendezvous_order(key, replicas)[0] == dead for key in keys)
    with RerankClient(vl_served.base_url) as single:
        expected = single.score(QUERY, documents)
    with RerankClient(replicas, batch_size=2, retry=RetryPolicy(max_attempts=2)) as client:
        assert client.score(QUERY, documents) == pytest.approx(expected, abs=1e-6)


def _sent_parts(documents: list[object]) -> list[dict[str, object]]:
    """The image parts the client sends for ``documents`` (one page each), in order."""
    _, calls = run(QUERY, documents, ())  # type: ignore[arg-type]
    return [part for call in calls for part in image_parts(call.json)]
