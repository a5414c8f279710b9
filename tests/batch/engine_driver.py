"""Run ``rerank_dataset(model=...)`` on a local Ray cluster of its own and write the result as Parquet.

Ray's vLLM stage needs ray, vLLM and this library in one interpreter: the tests run this script under
``$QWEN3_VLLM_RERANK_SERVER_PYTHON`` (the vLLM virtualenv, where scripts/setup installs all three)::

    python tests/batch/engine_driver.py SETTINGS.json OUT.parquet

``SETTINGS.json``: ``{"rows": [...], "model": PATH, "extra_args": [...], "batch_size": N}``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main(settings_path: str, out_path: str) -> int:
    import ray

    from qwen3_vllm_rerank.batch import rerank_dataset

    settings = json.loads(Path(settings_path).read_text())
    # address="local": a cluster of its own, never one the calling process (or anyone else) runs.
    ray.init(address="local", num_cpus=2, object_store_memory=300 * 1024**2, include_dashboard=False)
    try:
        start = time.perf_counter()
        out = rerank_dataset(
            ray.data.from_items(settings["rows"]),
            model=settings["model"],
            extra_args=settings.get("extra_args", []),
            batch_size=settings.get("batch_size", 64),
        ).to_pandas()
        seconds = time.perf_counter() - start
    finally:
        ray.shutdown()
    out.to_parquet(out_path)
    Path(out_path).with_suffix(".seconds").write_text(f"{seconds}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
