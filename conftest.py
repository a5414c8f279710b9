"""pytest plumbing shared by the repository's four test trees.

``tests/`` (the core), ``integrations/langchain/tests/``, ``integrations/llama-index/tests/`` and
``integrations/haystack/tests/`` run in one pytest session (``scripts/test``), so the session fixtures
of ``tests/support/fixtures.py`` (fixture checkpoints, the pool of real vLLM servers) are registered
here, once, for all four: an adapter test asking for ``served`` gets the very server the core's tests
use. The adapters' tests import the shared helpers from ``tests.support`` (the core's test package;
the adapters' test directories have no ``__init__.py``, so they never shadow it).

Every test that needs a vLLM server is marked ``vllm`` here: all of them reach one through the
``server_python`` fixture (directly, or through ``server_pool`` / ``served`` / ``serving_path`` /
``server_room``), so the mark follows the fixture and no test can forget it. ``scripts/test -m "not
vllm"`` runs the rest: the fast tier (and ``tests/support/fixtures.py`` hides the vLLM interpreter
from unmarked tests, so a test that starts a server some other way fails in either tier instead of
slowing the fast one).
"""

from __future__ import annotations

import os

import pytest

# Haystack reads this once, when it is first imported, and otherwise sends usage telemetry over the
# network; a test may use loopback only. Subprocesses (examples, wheel pipelines) inherit it.
os.environ["HAYSTACK_TELEMETRY_ENABLED"] = "False"

pytest_plugins = ["tests.support.fixtures"]

#: The fixture every server-backed test depends on (see tests/support/fixtures.py).
SERVER_FIXTURE = "server_python"


@pytest.hookimpl(tryfirst=True)  # before pytest's own -m selection reads the marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SERVER_FIXTURE in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.vllm)
