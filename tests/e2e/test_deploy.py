"""deploy/kubernetes: the manifests are what they claim to be.

Offline (no server): every object of both variants, of the CPU-autoscaling fallback and of the
Prometheus Adapter rule validates against the Kubernetes API schemas bundled by
``kubernetes-validate`` (strict: an unknown field fails), and a broken copy fails too; vLLM gets
exactly the flags ``plan_launch`` chooses for GPU; the objects refer to each other correctly (the
autoscaler asks for the metric the adapter rule serves); the README's examples validate, or, for
the kinds no bundled schema covers (KEDA, Prometheus Operator, Helm values), agree with the
manifests; the proxy's start script refuses a missing or weak key.

Against a real vLLM server: the series the adapter rule reads is a gauge vLLM exposes on
``/metrics``, and each document of a score call is one vLLM request; the api-key variant's proxy,
taken from the manifests and run with Debian's nginx, refuses every path vLLM serves without the
key (not only the ``/v1`` ones vLLM's own ``--api-key`` guards), leaves only ``GET /health`` open,
and passes everything with the key.
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
from tests.serve.published_configs import PUBLISHED_CONFIGS
from tests.support.fixtures import Served

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
VARIANTS = ("no-key", "api-key")
#: The oldest Kubernetes the manifests claim (README) and the newest schemas bundled.
K8S_VERSIONS = ("1.28", kubernetes_validate.latest_version())

#: The fields of Qwen/Qwen3-Reranker-{0.6B,4B,8B}/config.json that plan_launch reads.
QWEN3_RERANKER_CONFIGS: dict[str, dict[str, Any]] = {
    size: PUBLISHED_CONFIGS[size] for size in ("0.6B", "4B", "8B")
}
DEFAULT_MODEL = "Qwen/Qwen3-Reranker-0.6B"
VLLM_PORT = "8000"
SECRET = {"name": "qwen3-reranker-api-key", "key": "api-key"}
KUSTOMIZATION = ("kustomize.config.k8s.io/v1beta1", "Kustomization")
COMPONENT = ("kustomize.config.k8s.io/v1alpha1", "Component")
#: The fallback for clusters without custom metrics, and the adapter rule the default needs.
CPU_FALLBACK = DEPLOY / "components" / "cpu-autoscaling"
ADAPTER = DEPLOY / "prometheus-adapter"
#: Where the README's example kustomizations sit (a directory of the user's, beside the variants).
USER_OVERLAY = DEPLOY / "my-reranker"

Manifest = dict[str, Any]


# --- reading the manifests ----------------------------------------------------------------


def kustomization(directory: Path) -> Manifest:
    data: Manifest = yaml.safe_load((directory / "kustomization.yaml").read_text())
    return data


#: What render() implements of kustomize: all that the kustomizations here (and the README's) use.
KUSTOMIZE_FIELDS = {"apiVersion", "kind", "resources", "components", "patches"}


def render(directory: Path, data: Manifest | None = None) -> list[Manifest]:
    """The objects ``kubectl apply -k directory`` creates (``data``: its kustomization.yaml, read
    from the directory unless given).

    What kustomize does with what these kustomizations use: the listed resources (directories
    recursively), then each component's resources and patches, then the kustomization's own patches.
    A patch is a strategic merge of an autoscaler by kind and name: maps merge, lists are replaced
    whole (the HPA's ``metrics`` list is atomic in the Kubernetes API, and kustomize replaces it;
    checked with kustomize 5.5), ``$patch: delete`` removes the object. Anything else fails here
    rather than being rendered wrongly.
    """
    data = kustomization(directory) if data is None else data
    return _build(directory, data, [])


def _build(directory: Path, data: Manifest, objects: list[Manifest]) -> list[Manifest]:
    unknown = set(data) - KUSTOMIZE_FIELDS
    if unknown:
        raise AssertionError(f"{directory}: render() does not implement {sorted(unknown)}")
    objects = list(objects)
    for entry in data.get("resources", []):
        path = _within(directory, entry)
        if path.is_dir():
            objects += render(path)
        else:
            objects += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    for entry in data.get("components", []):
        component = kustomization(_within(directory, entry))
        assert (component["apiVersion"], component["kind"]) == COMPONENT, entry
        objects = _build(_within(directory, entry), component, objects)
    for patch in data.get("patches", []):
        if set(patch) == {"path"}:
            (document,) = [d for d in yaml.safe_load_all((directory / patch["path"]).read_text()) if d]
        elif set(patch) == {"patch"}:
            document = yaml.safe_load(patch["patch"])
        else:
            raise AssertionError(f"{directory}: render() does not implement the patch {patch}")
        objects = _patched(objects, document)
    return objects


def _within(directory: Path, entry: str) -> Path:
    """``directory / entry`` with ``..`` resolved as kustomize does, by name (``directory`` itself
    need not exist: the README's example overlays are rendered from where they would sit)."""
    return Path(os.path.normpath(directory / entry))


def _patched(objects: list[Manifest], patch: Manifest) -> list[Manifest]:
    assert patch["kind"] == "HorizontalPodAutoscaler", "render() patches autoscalers only"
    key = (patch["apiVersion"], patch["kind"], patch["metadata"]["name"])
    (target,) = [
        i for i, o in enumerate(objects) if (o["apiVersion"], o["kind"], o["metadata"]["name"]) == key
    ]
    if patch.get("$patch") == "delete":
        return objects[:target] + objects[target + 1 :]
    return [*objects[:target], _merged(objects[target], patch), *objects[target + 1 :]]


def _merged(base: Any, patch: Any) -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        return {**base, **{k: _merged(base.get(k), v) for k, v in patch.items()}}
    return copy.deepcopy(patch)


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
    """The variants, base and the adapter rule only list plain files: what render() reads is what
    ``kubectl apply -k`` applies. The one component only patches the autoscaler's metrics."""
    found = sorted(p.parent for p in DEPLOY.rglob("kustomization.yaml"))
    assert found == sorted([DEPLOY / "base", ADAPTER, CPU_FALLBACK, *(DEPLOY / v for v in VARIANTS)])
    for directory in found:
        data = kustomization(directory)
        listed = data.get("resources", []) + [p["path"] for p in data.get("patches", [])]
        if directory == CPU_FALLBACK:
            assert (data["apiVersion"], data["kind"]) == COMPONENT
            assert set(data) == {"apiVersion", "kind", "patches"}
            (patch,) = [d for d in yaml.safe_load_all((directory / listed[0]).read_text()) if d]
            assert set(patch) == {"apiVersion", "kind", "metadata", "spec"}
            assert set(patch["spec"]) == {"metrics"}  # a list kustomize replaces whole
        else:
            assert (data["apiVersion"], data["kind"]) == KUSTOMIZATION
            assert set(data) == {"apiVersion", "kind", "resources"}, directory
        for entry in listed:
            assert (directory / entry).exists(), f"{directory}/kustomization.yaml lists a missing {entry}"
        files = {p.name for p in directory.glob("*.yaml")} - {"kustomization.yaml"}
        assert files == {e for e in listed if not e.startswith("..")}, "a manifest is not listed"


def cpu_overlay(variant: str) -> Manifest:
    """A kustomization of the user's adding the CPU-autoscaling component to a variant (README)."""
    return {
        "apiVersion": KUSTOMIZATION[0],
        "kind": KUSTOMIZATION[1],
        "resources": [f"../{variant}"],
        "components": ["../components/cpu-autoscaling"],
    }


def cpu_fallback(variant: str) -> list[Manifest]:
    return render(USER_OVERLAY, cpu_overlay(variant))


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_object_validates_against_the_kubernetes_schemas(variant: str, version: str) -> None:
    for objects in (render(DEPLOY / variant), cpu_fallback(variant)):
        for obj in objects:
            validate(obj, version)
        names = [(o["kind"], o["metadata"]["name"]) for o in objects]
        assert len(names) == len(set(names)), names
        expected = {
            "Deployment",
            "Service",
            "NetworkPolicy",
            "HorizontalPodAutoscaler",
            "PodDisruptionBudget",
        }
        assert {kind for kind, _ in names} == expected | ({"ConfigMap"} if variant == "api-key" else set())


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_the_adapter_rule_validates(version: str) -> None:
    (config_map,) = render(ADAPTER)
    validate(config_map, version)
    assert "namespace" not in config_map["metadata"]  # applied with -n <the adapter's namespace>
    assert set(config_map["data"]) == {"config.yaml"}  # the key the adapter's Helm chart mounts


def autoscaler_metric(objects: list[Manifest]) -> Manifest:
    (metric,) = find(objects, "HorizontalPodAutoscaler")["spec"]["metrics"]
    return metric  # type: ignore[no-any-return]


def adapter_rule() -> Manifest:
    (config_map,) = render(ADAPTER)
    config = yaml.safe_load(config_map["data"]["config.yaml"])
    assert set(config) == {"rules"}  # no resource or external rules: the HPA needs custom metrics only
    (rule,) = config["rules"]
    return rule  # type: ignore[no-any-return]


def series_query(rule: Manifest) -> tuple[str, dict[str, tuple[str, str]]]:
    """The metric name and the label matchers (label -> (operator, value)) of ``seriesQuery``."""
    found = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\}", rule["seriesQuery"])
    assert found, rule["seriesQuery"]
    matchers = re.findall(r'\s*([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*"([^"]*)"\s*(?:,|$)', found[2])
    assert ",".join(m[0] + m[1] + f'"{m[2]}"' for m in matchers) == found[2].replace(" ", "")
    return found[1], {label: (op, value) for label, op, value in matchers}


def test_the_autoscaler_scales_on_the_adapter_rule_metric() -> None:
    """The default autoscaler asks for the custom metric the adapter rule serves: vLLM's waiting
    requests, per pod, summed over the pod's engines and models."""
    rule = adapter_rule()
    name, matchers = series_query(rule)
    assert name == "vllm:num_requests_waiting"
    # Only series Prometheus labelled with their pod, mapped to the pod and its namespace.
    overrides = rule["resources"]["overrides"]
    assert overrides == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
    assert matchers == {label: ("!=", "") for label in overrides}
    assert re.search(rule["name"]["matches"], name)
    served_as = rule["name"]["as"]
    # A literal name (no $1 of the match), and one the custom metrics API can serve (no colon).
    assert re.fullmatch(r"[a-z0-9_]+", served_as), served_as
    assert rule["metricsQuery"] == "sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)"
    for variant in VARIANTS:
        metric = autoscaler_metric(render(DEPLOY / variant))
        assert metric["type"] == "Pods"
        assert metric["pods"]["metric"] == {"name": served_as}
        assert metric["pods"]["target"]["type"] == "AverageValue"
        assert int(metric["pods"]["target"]["averageValue"]) >= 1


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_cpu_fallback_changes_only_the_autoscaler_metric(variant: str) -> None:
    default, fallback = render(DEPLOY / variant), cpu_fallback(variant)
    assert autoscaler_metric(fallback) == {
        "type": "Resource",
        "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}},
    }
    for objects in (default, fallback):
        find(objects, "HorizontalPodAutoscaler")["spec"].pop("metrics")
    assert fallback == default


def test_render_applies_patches_as_kustomize_does() -> None:
    """render()'s kustomize subset: a component's patch replaces the metrics list whole (two
    metrics become one), and ``$patch: delete`` removes the autoscaler."""
    hpa = find(render(DEPLOY / "no-key"), "HorizontalPodAutoscaler")
    two = copy.deepcopy(hpa)
    two["spec"]["metrics"] *= 2
    (patch,) = [d for d in yaml.safe_load_all((CPU_FALLBACK / "scaling.yaml").read_text()) if d]
    assert _patched([two], patch)[0]["spec"]["metrics"] == patch["spec"]["metrics"]
    assert _patched([two], patch)[0]["spec"]["behavior"] == hpa["spec"]["behavior"]
    deletion = {**{k: patch[k] for k in ("apiVersion", "kind", "metadata")}, "$patch": "delete"}
    assert _patched([two], deletion) == []
    with pytest.raises(AssertionError, match="does not implement"):
        render(USER_OVERLAY, {**cpu_overlay("no-key"), "namePrefix": "x-"})


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


def readme_examples() -> list[Manifest]:
    text = (DEPLOY / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.DOTALL)
    return [doc for block in blocks for doc in yaml.safe_load_all(block) if doc]


def test_the_readme_examples_validate() -> None:
    """Each YAML example of the README is checked: Kubernetes objects against the schemas, example
    kustomizations by rendering them (every object validates, one autoscaler at most), and the
    kinds no bundled schema covers against the manifests they must agree with."""
    examples = readme_examples()
    checks: dict[str, Callable[[Manifest], None]] = {
        "Kustomization": _check_overlay,
        "ScaledObject": _check_scaled_object,
        "PodMonitor": _check_pod_monitor,
        "Helm values": _check_helm_values,
    }
    seen = []
    for example in examples:
        kind = example.get("kind", "Helm values")
        seen.append(kind)
        if kind in checks:
            checks[kind](example)
        else:
            for version in K8S_VERSIONS:
                validate(example, version)
            if kind == "NetworkPolicy":  # an extra policy for the reranker's pods, on their port
                labels = find(render(DEPLOY / "api-key"), "Deployment")["spec"]["template"]["metadata"][
                    "labels"
                ]
                assert matches(example["spec"]["podSelector"]["matchLabels"], labels)
                assert [p["port"] for r in example["spec"]["ingress"] for p in r["ports"]] == ["http"]
    assert set(checks) <= set(seen), "the README shows each kind of example"


def _check_overlay(overlay: Manifest) -> None:
    objects = render(USER_OVERLAY, overlay)
    for obj in objects:
        for version in K8S_VERSIONS:
            validate(obj, version)
    assert len([o for o in objects if o["kind"] == "HorizontalPodAutoscaler"]) <= 1


def _check_scaled_object(scaled: Manifest) -> None:
    """KEDA's ScaledObject (no schema here: described, not shipped) scales the same Deployment,
    within the same bounds, on the same vLLM series and per-replica target as the default HPA."""
    objects = render(DEPLOY / "api-key")
    hpa = find(objects, "HorizontalPodAutoscaler")["spec"]
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    assert spec["scaleTargetRef"] == {"name": find(objects, "Deployment")["metadata"]["name"]}
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (hpa["minReplicas"], hpa["maxReplicas"])
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "prometheus"
    metadata = trigger["metadata"]
    name, _ = series_query(adapter_rule())
    assert re.fullmatch(rf"sum\({re.escape(name)}\{{.+\}}\)", metadata["query"]), metadata["query"]
    assert metadata["threshold"] == autoscaler_metric(objects)["pods"]["target"]["averageValue"]
    assert metadata.get("metricType", "AverageValue") == "AverageValue"
    assert spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"] == hpa["behavior"]


def _check_pod_monitor(monitor: Manifest) -> None:
    """The Prometheus Operator's PodMonitor scrapes the api-key variant's serving port with the key."""
    objects = render(DEPLOY / "api-key")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    labels = find(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"] == labels
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == container(objects, "proxy")["ports"][0]["name"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["authorization"] == {"type": "Bearer", "credentials": SECRET}


def _check_helm_values(values: Manifest) -> None:
    """Helm users put the same rule in the chart's ``rules.custom``."""
    assert values == {"rules": {"custom": [adapter_rule()]}}


# --- offline: the flags and the wiring ------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_vllm_gets_the_flags_vllm_server_chooses_on_gpu(variant: str) -> None:
    vllm = container(render(DEPLOY / variant), "vllm")
    plan = plan_launch(QWEN3_RERANKER_CONFIGS["0.6B"], cpu=False)
    host = "0.0.0.0" if variant == "no-key" else "127.0.0.1"
    # VLLMServer.command(): the api_server module, --model, --host, --port, then the plan.
    assert vllm["command"] == ["python3", "-m", "vllm.entrypoints.openai.api_server"]
    assert vllm["args"] == ["--model", "$(MODEL)", "--host", host, "--port", VLLM_PORT, *plan.args]
    for name, value in plan.env.items():  # whatever the plan sets in the environment, the pod sets too
        assert env_value(vllm, name) == value, name
    assert plan.kind == "original"
    assert "--disable-log-stats" not in vllm["args"]  # it removes the metrics the autoscaler reads
    assert env_value(vllm, "MODEL") == DEFAULT_MODEL
    assert vllm["resources"]["limits"]["nvidia.com/gpu"] == "1"


def _readme_model_table() -> dict[str, str]:
    """The README's table of checkpoints: checkpoint cell -> change cell."""
    text = (DEPLOY / "README.md").read_text()
    (table,) = re.findall(r"\| checkpoint \| change \|.*?\n\n", text, re.DOTALL)
    rows = [line.split("|")[1:-1] for line in table.strip().splitlines()[2:]]
    return {cells[0].strip(): cells[1].strip() for cells in rows}


def test_the_model_and_its_kv_cache_are_the_values_to_change() -> None:
    """The 4B and 8B get the 0.6B's flags but a larger KV cache (36 layers, not 28), the value the
    README's table gives; a converted checkpoint the same minus --hf-overrides (what the manifests'
    comments and README say)."""
    args = plan_launch(QWEN3_RERANKER_CONFIGS["0.6B"], cpu=False).args
    table = _readme_model_table()
    kv = args.index("--kv-cache-memory-bytes") + 1
    for size in ("4B", "8B"):
        bigger = plan_launch(QWEN3_RERANKER_CONFIGS[size], cpu=False).args
        assert bigger[:kv] + bigger[kv + 1 :] == args[:kv] + args[kv + 1 :]
        (change,) = [c for name, c in table.items() if f"-{size}`" in name]
        assert f"`--kv-cache-memory-bytes {bigger[kv]}`" in change, (size, change)
    (same,) = [c for name, c in table.items() if "0.6B" in name]
    assert same == "`MODEL` only"
    converted = {
        **QWEN3_RERANKER_CONFIGS["8B"],
        "architectures": ["Qwen3ForSequenceClassification"],
        "num_labels": 1,
    }
    i = args.index("--hf-overrides")
    expected = plan_launch(QWEN3_RERANKER_CONFIGS["8B"], cpu=False).args
    assert plan_launch(converted, cpu=False).args == expected[:i] + expected[i + 2 :]


def test_the_readme_states_what_each_checkpoint_holds() -> None:
    """The table's GPU memory column is the plan's total for each size, in GiB as the plan says it."""
    table = (DEPLOY / "README.md").read_text()
    for size, config in QWEN3_RERANKER_CONFIGS.items():
        (note,) = [n for n in plan_launch(config, cpu=False).notes if n.startswith("GPU memory ")]
        total = note.split(" = ")[0].removeprefix("GPU memory ")
        assert re.search(rf"\| `Qwen/Qwen3-Reranker-{re.escape(size)}`.*\| {re.escape(total)} \(", table), (
            size,
            total,
        )


def test_the_readme_states_the_flags_of_the_plan() -> None:
    """The README's sentence listing vLLM's flags names every flag of the GPU plan, with the values
    it states: when the plan changes (e.g. how much GPU memory vLLM may take), this fails until the
    README and the manifests say the same."""
    text = (DEPLOY / "README.md").read_text()
    (sentence,) = re.findall(
        r"The flags are those `VLLMServer` uses on a GPU machine:(.*?)\n\n", text, re.DOTALL
    )
    stated = dict(re.findall(r"`(--[a-z0-9-]+)(?: ([^`]+))?`", sentence))
    args = plan_launch(QWEN3_RERANKER_CONFIGS["0.6B"], cpu=False).args
    planned = [a for a in args if a.startswith("--")]
    assert sorted(stated) == sorted(planned)
    for name, value in stated.items():
        if value:
            assert flag(args, name) == value, name


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
    # The metric the autoscaler reads comes from vLLM's /metrics on the serving port, which is
    # where Prometheus scrapes (the README's PodMonitor, test_the_readme_examples_validate).
    assert autoscaler_metric(objects)["pods"]["metric"]["name"] == adapter_rule()["name"]["as"]
    pdb = find(objects, "PodDisruptionBudget")
    assert matches(pdb["spec"]["selector"]["matchLabels"], labels)
    assert pdb["spec"]["maxUnavailable"] == 1
    policy = find(objects, "NetworkPolicy")
    assert matches(policy["spec"]["podSelector"]["matchLabels"], labels)
    assert [p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]] == [port["targetPort"]]
    # The CPU fallback's utilisation needs CPU requests on every container.
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


# --- against a real vLLM server: the metric the autoscaler reads -------------------------------


def exposition(served: Served) -> tuple[dict[str, str], list[tuple[str, dict[str, str], float]]]:
    """vLLM's ``/metrics``: the declared type of each metric, and every sample (name, labels, value)."""
    text = httpx.get(f"{served.base_url}/metrics", timeout=30).raise_for_status().text
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    samples = []
    for name, labels, value in re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$", text, re.M):
        pairs = dict(re.findall(r'([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"', labels))
        samples.append((name, pairs, float(value)))
    return types, samples


def test_the_adapter_rule_reads_a_gauge_vllm_exposes(served: Served) -> None:
    """The series named in the adapter rule's seriesQuery is on a real vLLM server's /metrics, as a
    gauge (a level the autoscaler averages, not a counter it would have to rate), one per engine
    and model. Its ``namespace`` and ``pod`` labels are Prometheus's, added when it scrapes the pod:
    vLLM must not set them itself (Prometheus would rename them ``exported_*`` and the rule would
    read the wrong ones)."""
    name, matchers = series_query(adapter_rule())
    types, samples = exposition(served)
    assert types.get(name) == "gauge", (name, types.get(name))
    series = [labels for sample, labels, _ in samples if sample == name]
    assert series, f"{name} has no sample"
    for labels in series:
        assert not set(matchers) & set(labels), labels
        assert labels["model_name"] == served.model
        assert "engine" in labels  # summed away by the rule's metricsQuery (one value per pod)


def test_each_document_of_a_score_call_is_one_vllm_request(served: Served) -> None:
    """What the target counts: vLLM finishes one request per document of a score call, so its
    queue gauge counts documents, not HTTP calls (README.md, "Scaling")."""

    def finished() -> float:
        _, samples = exposition(served)
        return sum(v for n, _, v in samples if n == "vllm:request_success_total")

    documents = [f"document {i} about closures" for i in range(7)]
    with RerankClient(served.base_url, batch_size=len(documents)) as client:
        client.score("a first call", ["learns the server (its own probe is a request too)"])
        before = finished()
        assert len(client.score("what is a closure?", documents)) == len(documents)
        assert finished() - before == len(documents)


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
