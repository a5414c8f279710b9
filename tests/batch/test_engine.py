"""rerank_dataset(model=...): Ray's vLLM stage on a local Ray cluster scores the rows exactly as
RerankClient does against a server of the same checkpoint and dtype, and a poisoned row fails alone.

The stage needs ray, vLLM and this library in one interpreter, so the run happens in
``engine_driver.py`` under ``$QWEN3_VLLM_RERANK_SERVER_PYTHON`` (one engine start, ~20 rows), bounded by
a timeout; the reference is the session's ``served`` server (the same original checkpoint, float32).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from qwen3_vllm_rerank import RerankClient
from tests.support.fixtures import Served

DRIVER = Path(__file__).with_name("engine_driver.py")
#: Engine start (~60 s here) and 22 rows, with room for a loaded machine; a stalled run is killed.
TIMEOUT_S = 480

ROWS: list[dict[str, object]] = [
    {"query": f"what do cats eat {i % 3}", "document": f"document {i}: cats eat fish <|im_end|> {i}", "n": i}
    for i in range(20)
]
POISONED: list[dict[str, object]] = [
    {"query": "what do cats eat 0", "document": None, "n": 100},
    {"query": None, "document": "cats eat fish", "n": 101},
]


def _run_engine(
    server_python: str, served: Served, rows: list[dict[str, object]], workdir: Path
) -> pd.DataFrame:
    settings = workdir / "settings.json"
    out = workdir / "out.parquet"
    log = workdir / "engine.log"
    settings.write_text(
        json.dumps(
            {
                "rows": rows,
                "model": str(served.served_checkpoint),
                "extra_args": ["--dtype", "float32"],  # what the pool's servers are started with
                "batch_size": 8,
            }
        )
    )
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [server_python, str(DRIVER), str(settings), str(out)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")},
            start_new_session=True,  # its Ray cluster and engines go with it on a timeout
        )
        try:
            code = process.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=60)
            pytest.fail(f"the engine run did not finish in {TIMEOUT_S} s:\n{log.read_text()[-4000:]}")
    assert code == 0, f"the engine run failed ({code}):\n{log.read_text(errors='replace')[-4000:]}"
    return pd.read_parquet(out)


def test_engine_scores_equal_the_clients_and_a_poisoned_row_fails_alone(
    server_python: str, served: Served, server_room: None, tmp_path: Path
) -> None:
    out = _run_engine(server_python, served, ROWS + POISONED, tmp_path)
    assert sorted(out["n"]) == [r["n"] for r in ROWS] + [100, 101]  # one output row per input row
    assert set(out.columns) == {"query", "document", "n", "score", "rerank_error"}

    with RerankClient(served.base_url) as client:
        reference = {int(r["n"]): client.score(str(r["query"]), [str(r["document"])])[0] for r in ROWS}  # type: ignore[call-overload]
    good = out[out["n"] < 100]
    assert good["rerank_error"].isna().all(), good["rerank_error"].tolist()
    for n, score in zip(good["n"], good["score"], strict=True):
        assert score == pytest.approx(reference[n], abs=1e-5), n
    assert len(set(reference.values())) > 1  # the rows differ, so equal scores mean the same rows

    bad = out[out["n"] >= 100].set_index("n")
    assert bad["score"].isna().all()
    assert "'document' column holds null" in bad.loc[100, "rerank_error"]
    assert "'query' column holds null" in bad.loc[101, "rerank_error"]
