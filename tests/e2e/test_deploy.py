"""deploy/kubernetes: the manifests are what they claim to be.

Offline (no server): every object of both variants validates against the Kubernetes API schemas
bundled by ``kubernetes-validate`` (strict: an unknown field fails), and a broken copy fails too;
vLLM gets exactly the flags ``plan_launch`` chooses for GPU; the objects refer to each other
correctly; the proxy's start script refuses a missing or weak key.

Against a real vLLM server: the api-key variant's proxy, taken from the manifests and run with
Debian's nginx, refuses every path vLLM serves without the key (not only the ``/v1`` ones vLLM's
own ``--api-key`` guards), leaves only ``GET /health`` open, and passes everything with the key.
"""

from __future__ import annotations

import copy
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml

from qwen3_vllm_rerank import RerankClient, RerankHTTPError
from qwen3_vllm_rerank.serve import plan_launch
from qwen3_vllm_rerank.serve._plan import UNGUARDED_PATHS
from tests.support.fixtures import Served

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
VARIANTS = ("no-key", "api-key")
#: The oldest Kubernetes the manifests claim (README) and the newest schemas bundled.
K8S_VERSIONS = ("1.28", kubernetes_validate.latest_version())

#: The fields of Qwen/Qwen3-Reranker-{0.6B,4B,8B}/config.json that plan_launch reads.
QWEN3_RERANKER_CONFIGS: dict[str, dict[str, Any]] = {
    "0.6B": {
        "architectures": ["Qwen3ForCausalLM"],
        "hidden_size": 1024,
        "num_hidden_layers": 28,
        "num_attention_heads": 16,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "max_position_embeddings": 40960,
        "torch_dtype": "bfloat16",
        "tie_word_embeddings": True,
    },
    "4B": {
        "architectures": ["Qwen3ForCausalLM"],
        "hidden_size": 2560,
        "num_hidden_layers": 36,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "max_position_embeddings": 40960,
        "torch_dtype": "bfloat16",
        "tie_word_embeddings": True,
    },
    "8B": {
        "architectures": ["Qwen3ForCausalLM"],
        "hidden_size": 4096,
        "num_hidden_layers": 36,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "max_position_embeddings": 40960,
        "torch_dtype": "bfloat16",
        "tie_word_embeddings": False,
    },
}
DEFAULT_MODEL = "Qwen/Qwen3-Reranker-0.6B"
VLLM_PORT = "8000"
SECRET = {"name": "qwen3-reranker-api-key", "key": "api-key"}

Manifest = dict[str, Any]


# --- reading the manifests ----------------------------------------------------------------


def kustomization(directory: Path) -> Manifest:
    data: Manifest = yaml.safe_load((directory / "kustomization.yaml").read_text())
    return data


def render(directory: Path) -> list[Manifest]:
    """The objects ``kubectl apply -k directory`` creates.

    The kustomizations here only list resources (``test_kustomizations_only_list_resources``),
    so rendering one is reading what it lists, directories recursively.
    """
    objects: list[Manifest] = []
    for entry in kustomization(directory)["resources"]:
        path = directory / entry
        if path.is_dir():
            objects += render(path)
        else:
            objects += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return objects


def find(objects: list[Manifest], kind: str) -> Manifest:
    (found,) = [o for o in objects if o["kind"] == kind]
    return found


def pod_spec(objects: list[Manifest]) -> Manifest:
    spec: Manifest = find(objects, "Deployment")["spec"]["template"]["spec"]
    return spec


def container(objects: list[Manifest], name: str) -> Manifest:
    (found,) = [c for c in pod_spec(objects)["containers"] if c["name"] == name]
    return found


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def env_value(c: Manifest, name: str) -> Any:
    (entry,) = [e for e in c.get("env", []) if e["name"] == name]
    return entry.get("value", entry.get("valueFrom"))


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def validate(obj: Manifest, version: str) -> None:
    """Raise unless ``obj`` is valid for Kubernetes ``version`` (strict: unknown fields fail)."""
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.SchemaNotFoundError as exc:  # its str() is empty
        raise AssertionError(exc.message) from exc


# --- offline: schemas ---------------------------------------------------------------------


def test_kustomizations_only_list_resources() -> None:
    directories = sorted(p.parent for p in DEPLOY.glob("*/kustomization.yaml"))
    assert [d.name for d in directories] == sorted(["base", *VARIANTS])
    for directory in directories:
        data = kustomization(directory)
        # Nothing kustomize would transform: what render() reads is what kubectl applies.
        assert set(data) == {"apiVersion", "kind", "resources"}, directory
        assert (data["apiVersion"], data["kind"]) == ("kustomize.config.k8s.io/v1beta1", "Kustomization")
        for entry in data["resources"]:
            assert (directory / entry).exists(), f"{directory}/kustomization.yaml lists a missing {entry}"
        files = {p.name for p in directory.glob("*.yaml")} - {"kustomization.yaml"}
        assert files == {e for e in data["resources"] if not e.startswith("..")}, "a manifest is not listed"


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_object_validates_against_the_kubernetes_schemas(variant: str, version: str) -> None:
    objects = render(DEPLOY / variant)
    for obj in objects:
        validate(obj, version)
    names = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert len(names) == len(set(names)), names
    expected = {"Deployment", "Service", "NetworkPolicy", "HorizontalPodAutoscaler", "PodDisruptionBudget"}
    assert {kind for kind, _ in names} == expected | ({"ConfigMap"} if variant == "api-key" else set())


def _rename(c: Manifest, old: str, new: str) -> None:
    c[new] = c.pop(old)


BREAKAGES: dict[str, tuple[Callable[[Manifest], None], str]] = {
    "misspelled field": (
        lambda d: _rename(d["spec"]["template"]["spec"]["containers"][0], "readinessProbe", "readynessProbe"),
        "readynessProbe",
    ),
    "wrong type": (
        lambda d: d["spec"]["template"]["spec"]["containers"][1]["ports"][0].update(containerPort="http"),
        "'http' is not of type 'integer'",
    ),
    "missing required field": (
        lambda d: d["spec"]["template"]["spec"]["containers"][1].pop("name"),
        "'name' is a required property",
    ),
    "field at the wrong level": (
        lambda d: d["spec"]["template"]["spec"].update(ports=[{"containerPort": 8080}]),
        "'ports' was unexpected",
    ),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_a_broken_manifest_fails_validation(breakage: str) -> None:
    """The validator bites: each kind of mistake in a copy of the Deployment is reported."""
    deployment = find(render(DEPLOY / "api-key"), "Deployment")
    validate(deployment, K8S_VERSIONS[0])
    broken = copy.deepcopy(deployment)
    mutate, message = BREAKAGES[breakage]
    mutate(broken)
    for version in K8S_VERSIONS:
        with pytest.raises(kubernetes_validate.ValidationError, match=re.escape(message)):
            kubernetes_validate.validate(broken, version, strict=True)


def test_a_removed_api_version_fails_validation() -> None:
    hpa = copy.deepcopy(find(render(DEPLOY / "no-key"), "HorizontalPodAutoscaler"))
    hpa["apiVersion"] = "autoscaling/v2beta2"  # removed in Kubernetes 1.26
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        kubernetes_validate.validate(hpa, K8S_VERSIONS[0], strict=True)


def test_the_readme_examples_validate() -> None:
    text = (DEPLOY / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.DOTALL)
    assert blocks
    for block in blocks:
        for obj in (doc for doc in yaml.safe_load_all(block) if doc):
            for version in K8S_VERSIONS:
                validate(obj, version)


# --- offline: the flags and the wiring ------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_vllm_gets_the_flags_vllm_server_chooses_on_gpu(variant: str) -> None:
    vllm = container(render(DEPLOY / variant), "vllm")
    plan = plan_launch(QWEN3_RERANKER_CONFIGS["0.6B"], cpu=False)
    host = "0.0.0.0" if variant == "no-key" else "127.0.0.1"
    # VLLMServer.command(): the api_server module, --model, --host, --port, then the plan.
    assert vllm["command"] == ["python3", "-m", "vllm.entrypoints.openai.api_server"]
    assert vllm["args"] == ["--model", "$(MODEL)", "--host", host, "--port", VLLM_PORT, *plan.args]
    assert plan.env == {}  # nothing to set in the environment on GPU
    assert plan.kind == "original"
    assert flag(plan.args, "--max-model-len") == "8192"
    assert env_value(vllm, "MODEL") == DEFAULT_MODEL
    assert vllm["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_the_model_is_the_one_value_to_change() -> None:
    """The 4B and 8B get the 0.6B's flags; a converted checkpoint the same minus --hf-overrides
    (what the manifests' comments and README say)."""
    args = plan_launch(QWEN3_RERANKER_CONFIGS["0.6B"], cpu=False).args
    for size in ("4B", "8B"):
        assert plan_launch(QWEN3_RERANKER_CONFIGS[size], cpu=False).args == args
    converted = {
        **QWEN3_RERANKER_CONFIGS["8B"],
        "architectures": ["Qwen3ForSequenceClassification"],
        "num_labels": 1,
    }
    i = args.index("--hf-overrides")
    assert plan_launch(converted, cpu=False).args == args[:i] + args[i + 2 :]


def test_both_variants_run_the_same_vllm() -> None:
    """Apart from where it listens and how it is probed, vLLM's container is the same in both."""
    differing = ("args", "ports", "startupProbe", "readinessProbe", "livenessProbe")
    no_key, api_key = (container(render(DEPLOY / v), "vllm") for v in VARIANTS)
    assert {k: v for k, v in no_key.items() if k not in differing} == {
        k: v for k, v in api_key.items() if k not in differing
    }
    assert [a for a in no_key["args"] if a != "0.0.0.0"] == [a for a in api_key["args"] if a != "127.0.0.1"]
    for probe in differing[2:]:
        assert no_key[probe]["httpGet"]["path"] == api_key[probe]["httpGet"]["path"] == "/health"


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_objects_fit_together(variant: str) -> None:
    objects = render(DEPLOY / variant)
    deployment = find(objects, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert "replicas" not in deployment["spec"]  # the autoscaler owns the count
    assert deployment["spec"]["selector"]["matchLabels"] == labels
    service = find(objects, "Service")
    assert matches(service["spec"]["selector"], labels)
    (port,) = service["spec"]["ports"]
    serving = [
        c
        for c in pod_spec(objects)["containers"]
        for p in c.get("ports", [])
        if p["name"] == port["targetPort"]
    ]
    assert [c["name"] for c in serving] == ["vllm" if variant == "no-key" else "proxy"]
    hpa = find(objects, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert hpa["spec"]["minReplicas"] >= 2  # so the PodDisruptionBudget below leaves one serving
    pdb = find(objects, "PodDisruptionBudget")
    assert matches(pdb["spec"]["selector"]["matchLabels"], labels)
    assert pdb["spec"]["maxUnavailable"] == 1
    policy = find(objects, "NetworkPolicy")
    assert matches(policy["spec"]["podSelector"]["matchLabels"], labels)
    assert [p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]] == [port["targetPort"]]
    # The autoscaler's CPU utilisation needs CPU requests on every container.
    assert all("cpu" in c["resources"]["requests"] for c in pod_spec(objects)["containers"])


def test_the_api_key_variant_opens_only_the_proxy() -> None:
    objects = render(DEPLOY / "api-key")
    vllm, proxy = container(objects, "vllm"), container(objects, "proxy")
    assert "ports" not in vllm
    assert flag(vllm["args"], "--host") == "127.0.0.1"
    (proxy_port,) = proxy["ports"]
    assert env_value(proxy, "PROXY_LISTEN") == str(proxy_port["containerPort"])
    assert env_value(proxy, "VLLM_PORT") == flag(vllm["args"], "--port")
    assert env_value(proxy, "API_KEY") == {"secretKeyRef": SECRET}  # not optional: no key, no pod
    # vLLM's probes reach its /health through the proxy (the kubelet cannot reach 127.0.0.1).
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert vllm[probe]["httpGet"] == {"path": "/health", "port": proxy_port["containerPort"]}
    # The proxy runs the ConfigMap's start.sh, and its rendered configuration stays in memory.
    config_map = find(objects, "ConfigMap")
    volumes = {v["name"]: v for v in pod_spec(objects)["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in proxy["volumeMounts"]}
    (config_volume,) = [
        n for n, v in volumes.items() if v.get("configMap", {}).get("name") == config_map["metadata"]["name"]
    ]
    assert proxy["command"] == ["/bin/sh", f"{mounts[config_volume]}/start.sh"]
    prefix = env_value(proxy, "NGINX_PREFIX")
    (run_volume,) = [n for n, path in mounts.items() if prefix.startswith(path + "/")]
    assert volumes[run_volume]["emptyDir"]["medium"] == "Memory"
    assert proxy["securityContext"]["readOnlyRootFilesystem"] is True
    assert set(config_map["data"]) == {"start.sh", "nginx.conf"}


# --- the proxy --------------------------------------------------------------------------------


def write_proxy_files(directory: Path) -> Path:
    """The ConfigMap's files, as the pod mounts them; returns start.sh."""
    config_map = find(render(DEPLOY / "api-key"), "ConfigMap")
    for name, text in config_map["data"].items():
        (directory / name).write_text(text)
    return directory / "start.sh"


def nginx_binary() -> Path:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        pytest.fail(
            "nginx is not installed; the proxy tests run Debian's nginx: `apt-get install -y nginx` "
            "(scripts/setup does this when it runs as root)"
        )
    return Path(found)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Proxy:
    """The api-key variant's proxy, running in front of a real vLLM server."""

    url: str
    key: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def start_proxy(
    workdir: Path, key: str, port: int, vllm_port: int, nginx: Path | None = None
) -> subprocess.Popen[bytes]:
    """Run the ConfigMap's start.sh with the environment the Deployment gives it (``nginx``: the
    binary to put on its PATH)."""
    start = write_proxy_files(workdir)
    path = os.environ.get("PATH", "")
    env = {
        **os.environ,
        "PATH": f"{nginx.parent}{os.pathsep}{path}" if nginx else path,
        "API_KEY": key,
        "PROXY_LISTEN": f"127.0.0.1:{port}",
        "VLLM_PORT": str(vllm_port),
        "NGINX_PREFIX": str(workdir / "nginx"),
    }
    with (workdir / "proxy.log").open("wb") as log:
        return subprocess.Popen(
            ["/bin/sh", str(start)], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.mark.parametrize(
    ("key", "complaint"),
    [
        ("", "missing or shorter than 32"),
        ("0123456789abcdef", "missing or shorter than 32"),
        ('"; return 200; "' + "a" * 32, "may hold only"),
        ("$host" + "a" * 32, "may hold only"),
        ("a" * 32 + " b", "may hold only"),
    ],
    ids=["empty", "short", "quote", "dollar", "space"],
)
def test_the_proxy_refuses_a_missing_or_weak_key(tmp_path: Path, key: str, complaint: str) -> None:
    process = start_proxy(tmp_path, key, free_port(), 1)
    assert process.wait(30) == 1
    assert complaint in (tmp_path / "proxy.log").read_text()
    assert not (tmp_path / "nginx" / "nginx.conf").exists()  # the key never reached a config


@pytest.fixture(scope="module")
def proxy(served: Served) -> Iterator[Proxy]:
    vllm = httpx.URL(served.base_url)
    assert vllm.host == "127.0.0.1"  # the proxy's upstream is on loopback
    assert vllm.port is not None
    # nginx's workers run as `nobody` when started as root: they must be able to enter the prefix.
    workdir = Path(tempfile.mkdtemp(prefix="qwen3-reranker-proxy-"))
    workdir.chmod(0o755)
    key, port = secrets.token_hex(32), free_port()
    process = start_proxy(workdir, key, port, vllm.port, nginx_binary())
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(
                    f"the proxy exited with {process.returncode}:\n{(workdir / 'proxy.log').read_text()}"
                )
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the proxy did not answer within 60 s:\n{(workdir / 'proxy.log').read_text()}")
            time.sleep(0.2)
        yield Proxy(f"http://127.0.0.1:{port}", key)
    finally:
        stop(process)
        shutil.rmtree(workdir, ignore_errors=True)


#: Paths to try beyond vLLM's OpenAPI document and launch.UNGUARDED_PATHS: spellings that nginx
#: normalises to a served path (sent as written: httpx would normalise them itself), and unknown ones.
SPELLINGS = (
    "/score/",
    "//score",
    "/%73core",
    "/SCORE",
    "/v1/../score",
    "/health/../score",
    "/health/",
    "/health.json",
    "/healthz",
    "/no/such/path",
)


def served_paths(served: Served) -> dict[str, set[str]]:
    """Every path and method the running vLLM server documents, parameters filled in."""
    spec = httpx.get(f"{served.base_url}/openapi.json", timeout=30).raise_for_status().json()
    return {
        re.sub(r"\{[^}]+\}", "x", path): {m.upper() for m in methods if m in ("get", "post", "put", "delete")}
        for path, methods in spec["paths"].items()
    }


def send_as_written(url: str, method: str, target: str, headers: dict[str, str]) -> http.client.HTTPResponse:
    """One request with ``target`` exactly as given (no client-side normalisation); body read."""
    parsed = httpx.URL(url)
    connection = http.client.HTTPConnection(parsed.host, parsed.port, timeout=30)
    try:
        connection.request(
            method, target, body=b"{}", headers={"Content-Type": "application/json", **headers}
        )
        response = connection.getresponse()
        response.read()
        return response
    finally:
        connection.close()


def test_every_path_but_health_needs_the_key(served: Served, proxy: Proxy) -> None:
    paths = served_paths(served)
    # The enumeration found what matters: the paths vLLM's --api-key leaves open, scoring first.
    assert {"/score", "/rerank", "/classify", "/pooling", "/tokenize", "/invocations"} <= set(paths)
    assert "/health" in paths
    attempts = {
        "no header": {},
        "wrong key": {"Authorization": f"Bearer {secrets.token_hex(32)}"},
        "key without scheme": {"Authorization": proxy.key},
        "basic": {"Authorization": "Basic " + proxy.key},
        "key with a suffix": {"Authorization": f"Bearer {proxy.key}x"},
        "key in the query string": {},
    }
    targets = [(p, m) for p, methods in paths.items() if p != "/health" for m in methods | {"GET", "OPTIONS"}]
    targets += [(p, m) for p in (*UNGUARDED_PATHS, *SPELLINGS) if p != "/health" for m in ("GET", "POST")]
    for path, method in targets:
        for name, headers in attempts.items():
            target = path + (f"?api_key={proxy.key}" if name == "key in the query string" else "")
            response = send_as_written(proxy.url, method, target, headers)
            assert response.status == 401, (method, path, name, response.status)
            assert (response.getheader("WWW-Authenticate") or "").startswith("Bearer")
    assert len(targets) * len(attempts) > 200


def test_health_is_open_to_get_only(proxy: Proxy) -> None:
    with httpx.Client(base_url=proxy.url, timeout=30) as web:
        assert web.get("/health").status_code == 200
        assert web.get("/health?probe=kubelet").status_code == 200
        assert web.post("/health", content=b"{}").status_code == 403
        assert web.delete("/health").status_code == 403
    # A spelling that normalises to /health reaches vLLM's /health only (GET /score would be 405).
    response = send_as_written(proxy.url, "GET", "/score/../health", {})
    assert response.status == 200


def test_with_the_key_every_endpoint_answers(served: Served, proxy: Proxy) -> None:
    pair = {
        "model": served.model,
        "text_1": "what is a closure?",
        "text_2": ["A closure captures variables."],
    }
    rerank = {
        "model": served.model,
        "query": "what is a closure?",
        "documents": ["A closure captures variables."],
    }
    calls: list[tuple[str, str, dict[str, Any] | None]] = [
        ("GET", "/v1/models", None),
        ("GET", "/version", None),
        ("POST", "/score", pair),
        ("POST", "/v1/score", pair),
        ("POST", "/rerank", rerank),
        ("POST", "/v1/rerank", rerank),
        ("POST", "/tokenize", {"model": served.model, "prompt": "hello"}),
        ("POST", "/detokenize", {"model": served.model, "tokens": [14990]}),
    ]
    with httpx.Client(timeout=120) as web:
        for method, path, body in calls:
            direct = web.request(method, served.base_url + path, json=body)
            proxied = web.request(method, proxy.url + path, json=body, headers=proxy.auth)
            assert proxied.status_code == direct.status_code == 200, (path, proxied.text)
            assert _stable(proxied.json()) == _stable(direct.json()), path
        metrics = web.get(proxy.url + "/metrics", headers=proxy.auth)
    assert metrics.status_code == 200
    documented = set(re.findall(r"`(vllm:[a-z0-9_]+)`", (DEPLOY / "README.md").read_text()))
    assert documented, "README.md names the vLLM metrics to watch"
    exposed = set(
        re.findall(r"^(vllm:[a-z0-9_]+?)(?:_total|_bucket|_sum|_count|_created)?[{ ]", metrics.text, re.M)
    )
    assert documented <= exposed, documented - exposed


def _stable(answer: Any) -> Any:
    """An answer without the fields that differ between two calls (ids, timestamps)."""
    if isinstance(answer, dict):
        return {k: _stable(v) for k, v in answer.items() if k not in ("id", "created")}
    if isinstance(answer, list):
        return [_stable(v) for v in answer]
    return answer


def test_a_large_request_passes_the_proxy(served: Served, proxy: Proxy) -> None:
    """A body past nginx's default 1 MB limit (a batch of long documents) reaches vLLM."""
    body = json.dumps({"model": served.model, "text_1": "q", "text_2": ["d"]}) + " " * 3_000_000
    headers = {**proxy.auth, "Content-Type": "application/json"}
    with httpx.Client(timeout=120) as web:
        direct = web.post(served.base_url + "/v1/score", content=body, headers=headers)
        proxied = web.post(proxy.url + "/v1/score", content=body, headers=headers)
    assert proxied.status_code == direct.status_code == 200, proxied.text
    assert proxied.json()["data"] == direct.json()["data"]


def test_the_client_reranks_through_the_proxy(served: Served, proxy: Proxy) -> None:
    query = "how do I read a file?"
    documents = ["open() returns a file object; call read() on it.", "Lists keep their order.", ""]
    with RerankClient(served.base_url) as client:
        expected = client.score(query, documents)
    with RerankClient(proxy.url, api_key=proxy.key) as client:
        assert client.score(query, documents) == pytest.approx(expected, abs=1e-6)
    with RerankClient(proxy.url, api_key="wrong") as client, pytest.raises(RerankHTTPError) as info:
        client.score(query, documents)
    assert info.value.status_code == 401
