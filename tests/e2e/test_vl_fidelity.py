"""The Qwen3-VL request recipe against a real vLLM server: scores equal the official reference.

Raw ``/v1/score`` requests built with ``prompt.vl_query_param`` / ``prompt.vl_document_param``
and ``images.prepare_image`` (no server template: the client formats the prompt), compared
with ``tests/support/reference_vl.py`` (transformers, float32) on text-only, image-only and
text+image documents, two images in one document, image queries, images that need resizing
and a custom instruction. The session's one VL server (``vl_served``, started by ``VLLMServer`` with the flags it
chooses for a Qwen3-VL checkpoint).
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image as PILImage

from qwen3_vllm_rerank import prompt
from qwen3_vllm_rerank.images import prepare_image
from tests.support.fixtures import Served
from tests.support.reference_vl import Side, reference_score

TOLERANCE = 1e-4


def _noise(width: int, height: int, seed: int, mode: str = "RGB") -> PILImage.Image:
    rng = np.random.default_rng(seed)
    return PILImage.fromarray(rng.integers(0, 256, (height, width, 4), dtype=np.uint8), "RGBA").convert(mode)


def _gradient(width: int, height: int) -> PILImage.Image:
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 255 // (width - 1), y * 255 // (height - 1), (x + y) * 7 % 256], -1)
    return PILImage.fromarray(pixels.astype(np.uint8))


IMAGES = {
    "aligned": _noise(96, 64, 1),
    "small": _noise(30, 20, 2),
    "large": _gradient(3000, 2000),
    "odd": _noise(333, 517, 3),
    "tiny": _noise(1, 1, 4),
    "rgba": _noise(100, 80, 5, "RGBA"),
}

# (name, query, documents, instruction)
CASES: list[tuple[str, Side, list[Side], str | None]] = [
    (
        "text-only",
        Side("what is the capital of France?"),
        [Side("Paris is the capital of France."), Side("A cat sleeps.")],
        None,
    ),
    ("image-only", Side("a photo"), [Side(None, [IMAGES["aligned"]]), Side(None, [IMAGES["odd"]])], None),
    (
        "text+image",
        Side("chart of revenue"),
        [Side("Revenue by region", [IMAGES["aligned"]]), Side("Quarterly", [IMAGES["small"]])],
        None,
    ),
    ("two-images", Side("two pictures"), [Side("both", [IMAGES["aligned"], IMAGES["odd"]])], None),
    (
        "image-query",
        Side(None, [IMAGES["aligned"]]),
        [Side("a description"), Side(None, [IMAGES["small"]])],
        None,
    ),
    (
        "image+text-query",
        Side("find this", [IMAGES["odd"]]),
        [Side("a description"), Side("z", [IMAGES["aligned"]])],
        None,
    ),
    (
        "resizing",
        Side("q"),
        [
            Side(None, [IMAGES["small"]]),
            Side(None, [IMAGES["large"]]),
            Side("non-aligned", [IMAGES["odd"]]),
            Side(None, [IMAGES["tiny"]]),
            Side("transparent", [IMAGES["rgba"]]),
        ],
        None,
    ),
    (
        "instruction",
        Side("find"),
        [Side("doc", [IMAGES["aligned"]]), Side("doc2")],
        "Retrieve images or text that match the query.",
    ),
    # Neither text nor image: the official code writes "NULL" for that side.
    ("empty", Side(None), [Side(None), Side("x")], None),
]


def _urls(side: Side) -> list[str]:
    return [prepare_image(image).url for image in side.images]


def _score(served: Served, text_1: Any, text_2: list[Any]) -> dict[str, Any]:
    response = httpx.post(
        f"{served.base_url}/v1/score",
        json={"model": served.model, "text_1": text_1, "text_2": text_2},
        timeout=600,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def served_scores(served: Served, query: Side, documents: list[Side], instruction: str | None) -> list[float]:
    text_1 = prompt.vl_query_param(query.text or "", _urls(query), instruction)
    text_2 = [prompt.vl_document_param(document.text or "", _urls(document)) for document in documents]
    data = sorted(_score(served, text_1, text_2)["data"], key=lambda item: item["index"])
    return [float(item["score"]) for item in data]


@pytest.mark.parametrize(
    ("name", "query", "documents", "instruction"), CASES, ids=[case[0] for case in CASES]
)
def test_scores_equal_the_official_reference(
    vl_served: Served, name: str, query: Side, documents: list[Side], instruction: str | None
) -> None:
    served = served_scores(vl_served, query, documents, instruction)
    expected = [
        reference_score(vl_served.served_checkpoint, query, document, instruction) for document in documents
    ]
    assert served == pytest.approx(expected, abs=TOLERANCE), name


def test_prompt_token_count_includes_image_tokens(vl_served: Served) -> None:
    """usage.prompt_tokens = the text's tokens + each image's prepared.tokens (budget arithmetic)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(vl_served.served_checkpoint / "tokenizer.json"))
    prepared = [prepare_image(IMAGES["odd"]), prepare_image(IMAGES["small"])]
    text_1 = prompt.vl_query_param("what is shown?")
    text_2 = prompt.vl_document_param("a caption", [p.url for p in prepared])
    usage = _score(vl_served, text_1, [text_2])["usage"]
    text = prompt.format_vl_prompt("what is shown?", "a caption", document_images=len(prepared))
    expected = len(tokenizer.encode(text).ids) + sum(p.tokens - 1 for p in prepared)
    assert usage["prompt_tokens"] == expected


def test_models_endpoint_reports_the_checkpoint_path(vl_served: Served) -> None:
    model = httpx.get(f"{vl_served.base_url}/v1/models", timeout=30).json()["data"][0]
    assert model["id"] == model["root"] == str(vl_served.served_checkpoint)


class _Recorder(BaseHTTPRequestHandler):
    requests: list[str] = []  # noqa: RUF012

    def do_GET(self) -> None:
        _Recorder.requests.append(self.path)
        body = b"not fetched"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_server_fetches_no_url(vl_served: Served) -> None:
    """With --allowed-media-domains matching nothing, a URL smuggled into a request is refused
    and never fetched (vLLM fetches any http(s) URL by default)."""
    recorder = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=recorder.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{recorder.server_address[1]}/page.png"
        response = httpx.post(
            f"{vl_served.base_url}/v1/score",
            json={"model": vl_served.model, "text_1": "q", "text_2": [{"content": [prompt.image_part(url)]}]},
            timeout=60,
        )
        assert response.status_code >= 400
        assert _Recorder.requests == []
    finally:
        recorder.shutdown()
        recorder.server_close()
