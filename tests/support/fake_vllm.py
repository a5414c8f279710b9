"""A stand-in vLLM installation for tests of the launcher that need no real server.

:func:`fake_vllm` writes a directory for ``PYTHONPATH`` holding a ``vllm`` distribution of a given
version (what :class:`~qwen3_vllm_rerank.VLLMServer` reads before planning) and a fake
``vllm.entrypoints.openai.api_server`` that records how it was started, as the kernel shows it to
every local user (``/proc/self/cmdline``) and its environment's ``VLLM_API_KEY``, into
``$FAKE_VLLM_RECORD`` when that is set, then exits with code :data:`FAKE_EXIT_CODE`.
"""

from __future__ import annotations

from pathlib import Path

FAKE_EXIT_CODE = 3

FAKE_API_SERVER = f"""
import json, os, sys
with open("/proc/self/cmdline", "rb") as handle:
    cmdline = handle.read().split(b"\\0")
record = {{"cmdline": [part.decode() for part in cmdline], "key": os.environ.get("VLLM_API_KEY")}}
if os.environ.get("FAKE_VLLM_RECORD"):
    with open(os.environ["FAKE_VLLM_RECORD"], "w") as handle:
        json.dump(record, handle)
sys.exit({FAKE_EXIT_CODE})
"""


def fake_vllm(root: Path, version: str = "0.32.0") -> Path:
    """The directory to put on ``PYTHONPATH`` (created under ``root``)."""
    package = root / "fake" / "vllm" / "entrypoints" / "openai"
    package.mkdir(parents=True)
    for level in (package.parent.parent, package.parent, package):
        (level / "__init__.py").write_text("")
    (package / "api_server.py").write_text(FAKE_API_SERVER)
    metadata = root / "fake" / f"vllm-{version}.dist-info"
    metadata.mkdir()
    (metadata / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\n")
    return root / "fake"
