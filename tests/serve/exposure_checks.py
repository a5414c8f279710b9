"""Which paths a real vLLM server answers without its API key: shared by the launcher's tests and
the compatibility tier (each vLLM version the suite runs)."""

from __future__ import annotations

import httpx

from qwen3_vllm_rerank.serve._plan import GUARDED_PATH_PREFIXES, UNGUARDED_PATHS

#: FastAPI's documentation routes, which vLLM serves but its OpenAPI document does not list.
DOCS = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}


def assert_exactly_the_listed_paths_are_open(
    url: str, model: str, key: str, absent: frozenset[str] = frozenset()
) -> None:
    """Against the server's real routes: every path outside the guarded prefixes is in UNGUARDED_PATHS
    and answers without the key (scoring included), and UNGUARDED_PATHS names nothing else but
    ``absent`` (paths an older vLLM does not have); every guarded one refuses without the key and
    accepts it."""
    auth = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=url, timeout=120.0) as http:
        routes: dict[str, dict[str, object]] = http.get("/openapi.json").json()["paths"]
        open_paths = {path for path in routes if not path.startswith(GUARDED_PATH_PREFIXES)} | DOCS
        assert open_paths == set(UNGUARDED_PATHS) - absent, open_paths ^ set(UNGUARDED_PATHS)
        for path in sorted(open_paths):
            method = "GET" if path in DOCS or "get" in routes[path] else "POST"
            assert http.request(method, path, json={}).status_code != 401, path
        pair = {"model": model, "text_1": "q", "text_2": ["a", "b"]}
        assert http.post("/score", json=pair).status_code == 200  # scoring for anyone
        rerank = {"model": model, "query": "q", "documents": ["a"]}
        assert http.post("/rerank", json=rerank).status_code == 200
        guarded = [path for path in routes if path.startswith(GUARDED_PATH_PREFIXES)]
        assert "/v1/score" in guarded
        for path in guarded:
            method = "GET" if "get" in routes[path] else "POST"
            assert http.request(method, path, json={}).status_code == 401, path
            assert http.request(method, path, json={}, headers=auth).status_code != 401, path
