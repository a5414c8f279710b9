"""Every image part the client sends carries vLLM's ``uuid``: the SHA-256 of exactly the bytes
it sends, so two different images never share one and no document can choose one; on a real
Qwen3-VL server the id is what the server keys its caches by, and scores do not change."""

from __future__ import annotations

import base64
import hashlib
import io
from typing import Any

import httpx
import pytest

from qwen3_vllm_rerank import Content, Image, InvalidInput, RerankClient
from qwen3_vllm_rerank.prompt import vl_document_param, vl_query_param
from tests.client.flows import QUERY, image_parts, noise, pages, png, run, sent_bytes
from tests.support.fixtures import Served
from tests.support.mm_metrics import mm_cache_counters


def test_every_image_part_carries_the_sha256_of_the_bytes_it_sends() -> None:
    documents: list[Any] = [
        *pages(3),
        Content("two pages", images=[noise(20), noise(21, 96, 64)]),
        "text only",
    ]
    _, calls = run(Content("this chart", images=[noise(30)]), documents, ())
    parts = [part for call in calls for part in image_parts(call.json)]
    assert len(parts) == len(calls) * 1 + 5  # the query's image in every request, and each document's
    assert all(part["uuid"] == hashlib.sha256(sent_bytes(part)).hexdigest() for part in parts)


def test_different_images_never_share_a_uuid_and_the_same_image_always_does() -> None:
    one_pixel_off = noise(1)
    one_pixel_off.putpixel((0, 0), (0, 0, 0) if one_pixel_off.getpixel((0, 0)) != (0, 0, 0) else (1, 1, 1))
    documents: list[Any] = [Image(noise(1)), Image(one_pixel_off), Image(png(noise(1))), Image(noise(2))]
    _, calls = run(QUERY, documents, (), batch_size=10)
    uuids = [part["uuid"] for part in image_parts(calls[0].json)]
    assert uuids[0] == uuids[2]  # the same pixels, given as PIL and as PNG bytes
    assert len({uuids[0], uuids[1], uuids[3]}) == 3


def test_a_document_cannot_choose_its_uuid() -> None:
    """A document is text, an image or a Content, never request JSON: a content-part dict with its
    own ``uuid`` is refused, and a data: URL image is prepared again, so its uuid is the hash of
    the client's own PNG of its pixels, whatever the URL held."""
    forged = {"content": [{"type": "image_url", "image_url": {"url": "data:,"}, "uuid": "x"}]}
    with pytest.raises(InvalidInput, match="documents\\[0\\] must be a str, an Image or a Content"):
        run(QUERY, [forged], ())
    buffer = io.BytesIO()
    noise(3).save(buffer, format="PNG", compress_level=0)  # other file bytes, the same pixels
    assert buffer.getvalue() != png(noise(3))
    data_url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    _, calls = run(QUERY, [Image(data_url), Image(noise(3))], (), batch_size=10)
    first, second = image_parts(calls[0].json)
    assert first["uuid"] == second["uuid"] == hashlib.sha256(sent_bytes(first)).hexdigest()


def test_text_is_sent_without_any_uuid() -> None:
    _, calls = run(QUERY, ["one paragraph", "another"], ())
    assert all(isinstance(d, str) for call in calls for d in call.json["text_2"])  # type: ignore[index]


def test_a_server_template_gets_the_uuids_too() -> None:
    """With a server that applies the template, the raw queries/documents carry them as well."""
    from qwen3_vllm_rerank.client._scoring import score_flow
    from tests.client.flows import drive, options, prepared, vl_profile

    flow = score_flow(
        vl_profile(server_templates=True),
        prepared(QUERY, pages(2)),
        "an instruction",
        options(()),
        None,
        strict=True,
    )
    _, calls = drive(flow)
    parts = [part for call in calls for part in image_parts(call.json["documents"])]  # type: ignore[index]
    assert len(parts) == 2
    assert all(part["uuid"] == hashlib.sha256(sent_bytes(part)).hexdigest() for part in parts)


# -- a real server ---------------------------------------------------------------------------


def test_the_server_keys_its_caches_by_the_uuid_and_scores_do_not_change(vl_served: Served) -> None:
    """The client's request with the uuid, again (a hit), then the same pixels sent by hand
    without one: vLLM hashes those pixels itself, a key the client's entry does not have (a
    miss), which shows that the server read the uuid. The scores agree."""
    page = noise(8000)  # a seed no other test uses: the server has not seen this image
    base = vl_served.base_url
    start = mm_cache_counters(base)
    with RerankClient(base) as client:
        (with_uuid,) = client.score(QUERY, [Image(page)])
        first = mm_cache_counters(base, start["queries"] + 1)
        (again,) = client.score("another question", [Image(page)])
        second = mm_cache_counters(base, first["queries"] + 1)
    assert (first["queries"] - start["queries"], first["hits"] - start["hits"]) == (1, 0)
    assert (second["queries"] - first["queries"], second["hits"] - first["hits"]) == (1, 1)
    url = "data:image/png;base64," + base64.b64encode(png(page)).decode()
    body = {
        "model": vl_served.model,
        "text_1": vl_query_param(QUERY),
        "text_2": [vl_document_param("", [url])],
    }
    answer = httpx.post(f"{base}/v1/score", json=body, timeout=300.0)
    answer.raise_for_status()
    third = mm_cache_counters(base, second["queries"] + 1)
    assert (third["queries"] - second["queries"], third["hits"] - second["hits"]) == (1, 0)
    assert answer.json()["data"][0]["score"] == pytest.approx(with_uuid, abs=1e-6)
    assert 0 <= again <= 1
