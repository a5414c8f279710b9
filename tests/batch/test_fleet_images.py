"""rerank_dataset(base_url=..., image=...) against the session's real Qwen3-VL server: a page given as
bytes or as a path scores what RerankClient scores for the same Content, and a path outside the fetcher's
roots (a retrieved reference) fails only its row."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import ray

from qwen3_vllm_rerank import Content, Image, RerankClient, UrlFetcher
from qwen3_vllm_rerank.batch import rerank_dataset
from tests.client.flows import noise, png
from tests.support.fixtures import Served

QUERY = "which page shows the chart"


def test_pages_as_bytes_or_paths_score_like_the_client_and_a_path_outside_the_roots_fails_alone(
    vl_served: Served, cluster: None, tmp_path: Path
) -> None:
    roots = tmp_path / "pages"
    roots.mkdir()
    pages = [png(noise(seed, 96, 128)) for seed in range(4)]
    paths = []
    for n, page in enumerate(pages[:2]):
        path = roots / f"page{n}.png"
        path.write_bytes(page)
        paths.append(str(path))
    outside = tmp_path / "secret.png"
    outside.write_bytes(pages[3])
    # A column holds one type (Arrow's): paths in one dataset, bytes in another.
    path_rows = [
        {"query": QUERY, "document": "page zero", "page": paths[0], "n": 0},
        {"query": QUERY, "document": "page one", "page": paths[1], "n": 1},
        {"query": QUERY, "document": "text alone", "page": None, "n": 3},
        {"query": QUERY, "document": "outside the roots", "page": str(outside), "n": 4},
    ]
    byte_rows = [{"query": QUERY, "document": "page two", "page": pages[2], "n": 2}]
    fetcher = UrlFetcher(allowed_hosts=(), file_roots=(str(roots),))
    out = pd.concat(
        [
            rerank_dataset(
                ray.data.from_items(rows), image="page", base_url=vl_served.base_url, image_fetcher=fetcher
            ).to_pandas()[["n", "score", "rerank_error"]]
            for rows in (path_rows, byte_rows)
        ]
    )
    out = out.set_index("n").sort_index()
    assert list(out.index) == [0, 1, 2, 3, 4]

    documents = [
        Content("page zero", images=[Image(pages[0])]),
        Content("page one", images=[Image(pages[1])]),
        Content("page two", images=[Image(pages[2])]),
        "text alone",
    ]
    with RerankClient(vl_served.base_url) as client:
        expected = client.score(QUERY, documents)
    assert out.loc[[0, 1, 2, 3], "rerank_error"].isna().all()
    assert list(out.loc[[0, 1, 2, 3], "score"]) == pytest.approx(expected, abs=1e-5)
    assert pd.isna(out.loc[4, "score"])
    assert "cannot read image file" in out.loc[4, "rerank_error"]
    # The one message a missing or unreadable file gets too: nothing says the file exists outside.
    assert "missing, not a readable regular file" in out.loc[4, "rerank_error"]


@pytest.mark.heavy  # starts a local Ray cluster
def test_the_engine_mode_refuses_an_image_column_saying_what_to_use(cluster: None, tmp_path: Path) -> None:
    from qwen3_vllm_rerank.errors import InvalidInput

    with pytest.raises(InvalidInput, match="base_url="):
        rerank_dataset(
            ray.data.from_items([{"query": "q", "document": "d", "page": None}]),
            image="page",
            model=str(tmp_path),
        )
