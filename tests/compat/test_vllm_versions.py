"""The compatibility tier: what depends on the server's behaviour, against each vLLM version the suite
runs, one server per version. The newest (0.32) side reuses the session's "api-key" server; the
oldest (0.27, ``$QWEN3_VLLM_RERANK_OLDEST_SERVER_PYTHON``) gets its twin, "oldest-api-key", started
by VLLMServer like any other: the launcher's version check and plan, the client's discovery and
template detection, fidelity to the reference scores, and the paths ``--api-key`` guards."""

from __future__ import annotations

import os

import httpx
import pytest

from qwen3_vllm_rerank import AsyncRerankClient, RerankClient, RerankHTTPError
from qwen3_vllm_rerank.serve._cpu import RESERVED_CPU_ENV
from tests.serve.exposure_checks import assert_exactly_the_listed_paths_are_open
from tests.support.fixtures import Served, ServerPool
from tests.support.pairs import FIDELITY_CASES
from tests.support.reference import reference_scores
from tests.support.serving import TEST_API_KEY

TOLERANCE = 1e-4
#: The version each side runs, and its server in the pool.
VERSIONS = {"0.32": "api-key", "0.27": "oldest-api-key"}
#: Unguarded paths of the newest vLLM an older one does not serve (measured).
ABSENT = {"0.32": frozenset[str](), "0.27": frozenset({"/kv_event_sources"})}


@pytest.fixture(scope="module", params=sorted(VERSIONS))
def versioned(request: pytest.FixtureRequest, server_pool: ServerPool) -> tuple[str, Served]:
    return request.param, server_pool.get(VERSIONS[request.param])


def test_the_launcher_read_the_version_the_server_runs(versioned: tuple[str, Served]) -> None:
    minor, served = versioned
    install = served.server.install
    assert install is not None
    assert install.version.startswith(f"{minor}.")
    reported = httpx.get(f"{served.base_url}/version", timeout=30).raise_for_status().json()  # unguarded
    assert reported["version"].split("+")[0] == install.version.split("+")[0]
    plan = served.server.plan
    assert plan is not None
    assert (plan.kind, plan.max_model_len) == ("original", 2048)


def test_discovery_and_template_detection(versioned: tuple[str, Served]) -> None:
    _, served = versioned
    with RerankClient(served.base_url, api_key=TEST_API_KEY) as client:
        assert client.score("q", ["a"])  # discovery runs before the first score
        profile = client._profile
        assert profile is not None
        assert client.model == served.model
        assert (profile.max_model_len, profile.family, profile.server_templates) == (2048, "text", False)
    with RerankClient(served.base_url) as keyless, pytest.raises(RerankHTTPError) as info:
        keyless.score("q", ["a"])
    assert info.value.status_code == 401


def test_the_model_computes_on_the_cores_the_plan_chose(versioned: tuple[str, Served]) -> None:
    """Each version honours the plan's core reservation: on a small machine (this one has 2 cores)
    the model's threads are bound to every core; elsewhere vLLM keeps its own reservation."""
    _, served = versioned
    plan, log_file = served.server.plan, served.server.log_file
    assert plan is not None
    assert log_file is not None
    log = log_file.read_text(errors="replace")
    assert "reserved_cpus=" in log, "vLLM logs its OpenMP binding"
    if plan.env.get(RESERVED_CPU_ENV) == "0":
        assert f"core ids={sorted(os.sched_getaffinity(0))}" in log
        assert "reserved_cpus=[]" in log
    else:
        assert "reserved_cpus=[]" not in log


async def test_scores_match_the_reference(versioned: tuple[str, Served]) -> None:
    _, served = versioned
    with RerankClient(served.base_url, api_key=TEST_API_KEY, batch_size=4) as client:
        for case in FIDELITY_CASES:
            scores = client.score(case.query, case.documents, instruction=case.instruction)
            expected = reference_scores(served.original, case.query, case.documents, case.instruction)
            assert scores == pytest.approx(expected, abs=TOLERANCE), case.query
    case = FIDELITY_CASES[0]
    async with AsyncRerankClient(served.base_url, api_key=TEST_API_KEY, batch_size=2) as aclient:
        results = await aclient.rerank(case.query, case.documents, instruction=case.instruction)
    expected = reference_scores(served.original, case.query, case.documents, case.instruction)
    assert {r.index: r.score for r in results} == pytest.approx(dict(enumerate(expected)), abs=TOLERANCE)


def test_the_api_key_guards_the_paths_the_launcher_names(versioned: tuple[str, Served]) -> None:
    minor, served = versioned
    assert_exactly_the_listed_paths_are_open(served.base_url, served.model, TEST_API_KEY, ABSENT[minor])
