"""deploy/kubernetes and deploy/kserve, checked without a cluster: kustomize builds every overlay, every object
validates against the Kubernetes schemas or its CRD's, and the manifests agree with the service (settings, probes,
ports, drain times, metric names)."""
from __future__ import annotations

import copy
import math
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource
from starlette.types import Receive, Scope, Send

from app.config import Settings
from app.http import plan as plan_module
from app.http.plan import Plan
from app.http.server import uvicorn_config
from app.metrics import REJECT_REASONS
from tests.deploy.kube import (
    CRD_SCHEMAS,
    K8S_VERSIONS,
    Manifest,
    kustomize,
    load_yaml,
    refs,
    resolves,
    schema_errors,
    schema_for,
)
from tests.deploy.support import (
    ROOT,
    compose_config,
    dockerfile,
    exported_names,
    final_stage,
    image_env,
)
from tests.server import Server

KUBE = ROOT / "deploy" / "kubernetes"
OVERLAYS = ("cpu", "gpu")
# Not the bare names: a test whose keywords include "gpu" is taken for one needing a CUDA device (conftest.py).
OVERLAY_IDS = [f"{o}-overlay" for o in OVERLAYS]
INFERENCE_SERVICE = ROOT / "deploy" / "kserve" / "inferenceservice.yaml"
KINDS = {"Namespace", "ConfigMap", "Service", "Deployment", "PodDisruptionBudget", "ServiceMonitor", "ScaledObject"}


def build(overlay: str) -> list[Manifest]:
    return kustomize(KUBE / "overlays" / overlay)


def with_models_pvc(tmp_path: Path, overlay: str = "gpu") -> list[Manifest]:
    """The overlay built the way its comment says: with `components: [../../components/models-pvc]` uncommented."""
    copied = tmp_path / "kubernetes"
    shutil.copytree(KUBE, copied)
    kustomization = copied / "overlays" / overlay / "kustomization.yaml"
    text = kustomization.read_text()
    uncommented = text.replace("# components:\n#   - ../../components/models-pvc", "components:\n  - ../../components/models-pvc")
    assert uncommented != text, "the overlay no longer shows how to add the models-pvc component"
    kustomization.write_text(uncommented)
    return kustomize(copied / "overlays" / overlay)


def one(objects: list[Manifest], kind: str) -> Manifest:
    (obj,) = [o for o in objects if o["kind"] == kind]
    return obj


def container(objects: list[Manifest]) -> dict[str, Any]:
    (c,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    return c  # type: ignore[no-any-return]


def fusion_env(objects: list[Manifest]) -> dict[str, str]:
    """The FUSION_* variables the container gets: its settings ConfigMap (envFrom), then its own `env`."""
    c = container(objects)
    (ref,) = [e["configMapRef"]["name"] for e in c.get("envFrom", []) if "configMapRef" in e]
    data = next(o["data"] for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == ref)
    env = {**data, **{e["name"]: e["value"] for e in c.get("env", []) if "value" in e}}
    return {k: v for k, v in env.items() if k.startswith("FUSION_")}


class GivenSettings(Settings):
    """Settings from the given values only, not from the test process's own FUSION_* environment."""

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource, *others: Any, **more: Any
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def settings_of(env: dict[str, str]) -> Settings:
    """The settings the service would run with (pydantic parses and checks every value, as at startup)."""
    known = {f"FUSION_{name.upper()}" for name in Settings.model_fields}
    assert set(env) <= known, f"not settings (the service would ignore them): {set(env) - known}"
    return GivenSettings.model_validate({k.removeprefix("FUSION_").lower(): v for k, v in env.items()})


def port_number(c: dict[str, Any], port: int | str) -> int:
    """A container port given by number or by name."""
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in c["ports"] if p.get("name") == port]
    return int(number)


# --- builds and schemas ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS, ids=OVERLAY_IDS)
def test_every_overlay_builds_into_valid_objects(overlay: str) -> None:
    objects = build(overlay)
    assert {o["kind"] for o in objects} == KINDS
    for version in K8S_VERSIONS:
        errors = [e for o in objects for e in schema_errors(o, version)]
        assert not errors, "\n".join(errors)


def test_the_models_volume_component_builds_and_mounts_read_only_where_the_image_serves(tmp_path: Path) -> None:
    objects = with_models_pvc(tmp_path)
    assert not [e for o in objects for e in schema_errors(o)]
    claim = one(objects, "PersistentVolumeClaim")
    spec = one(objects, "Deployment")["spec"]["template"]["spec"]
    (volume,) = [v for v in spec["volumes"] if "persistentVolumeClaim" in v]
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    (mount,) = [m for m in container(objects)["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["mountPath"] == image_env()["FUSION_MODELS_DIR"] and mount["readOnly"] is True
    # Every replica mounts it: a single-node (ReadWriteOnce) claim would strand all but the first.
    assert set(claim["spec"]["accessModes"]) <= {"ReadOnlyMany", "ReadWriteMany"}


def test_the_kserve_inference_service_is_valid() -> None:
    (isvc,) = load_yaml(INFERENCE_SERVICE)
    for version in K8S_VERSIONS:
        assert not schema_errors(isvc, version)


def test_every_vendored_schema_reference_resolves() -> None:
    # Against the newest Kubernetes: KServe's schema names Pod fields newer than the oldest version supported
    # (unused here, so the objects still validate there).
    for (api_version, kind), name in CRD_SCHEMAS.items():
        schema = schema_for({"apiVersion": api_version, "kind": kind}, K8S_VERSIONS[-1])
        assert schema is not None
        unresolved = [r for r in refs(schema) if not resolves(schema, r, K8S_VERSIONS[-1])]
        assert not unresolved, f"{name}: {unresolved}"


def test_the_validator_refuses_what_the_schemas_forbid() -> None:
    objects = build("gpu")
    deployment = copy.deepcopy(one(objects, "Deployment"))
    c = deployment["spec"]["template"]["spec"]["containers"][0]
    c["readinesProbe"] = c.pop("readinessProbe")  # a typo kubectl would refuse (strict field validation)
    assert any("readinesProbe" in e for e in schema_errors(deployment))
    scaled = copy.deepcopy(one(objects, "ScaledObject"))
    scaled["spec"]["triggers"][0]["metadata"]["threshold"] = 32  # KEDA's trigger metadata is strings only
    assert any("threshold" in e for e in schema_errors(scaled))
    monitor = copy.deepcopy(one(objects, "ServiceMonitor"))
    monitor["spec"]["endpoints"][0]["intervall"] = "15s"
    assert any("intervall" in e for e in schema_errors(monitor))
    (isvc,) = load_yaml(INFERENCE_SERVICE)
    isvc["spec"]["predictor"]["containers"][0]["ports"][0]["containerPort"] = "8000"
    assert any("containerPort" in e for e in schema_errors(isvc))
    assert schema_errors({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}})


def test_a_broken_kustomization_fails_the_build(tmp_path: Path) -> None:
    copied = tmp_path / "kubernetes"
    shutil.copytree(KUBE, copied)
    (copied / "overlays" / "gpu" / "gpu.yaml").unlink()
    with pytest.raises(AssertionError, match="gpu.yaml"):
        kustomize(copied / "overlays" / "gpu")


# --- agreement with the service --------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS, ids=OVERLAY_IDS)
def test_the_pods_get_only_real_settings_with_valid_values(overlay: str) -> None:
    settings_of(fusion_env(build(overlay)))


def test_the_gpu_overlay_takes_one_gpu_and_insists_on_it() -> None:
    objects = build("gpu")
    assert container(objects)["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert settings_of(fusion_env(objects)).device == "cuda"
    cpu = build("cpu")
    assert "nvidia.com/gpu" not in str(container(cpu)["resources"])
    assert settings_of(fusion_env(cpu)).device == "cpu"


def cpu_cores(quantity: str | int) -> float:
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def test_processes_are_sized_from_the_cpu_request_not_the_nodes_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a CPU limit a pod sees every core of its node (affinity, no cgroup quota): each deployment sizes its
    workers and their threads from its CPU request, so they use no more cores than it requested."""
    (isvc,) = load_yaml(INFERENCE_SERVICE)
    (kserve,) = isvc["spec"]["predictor"]["containers"]
    deployments = [(container(objects), fusion_env(objects)) for objects in map(build, OVERLAYS)]
    deployments.append((kserve, {e["name"]: e["value"] for e in kserve["env"] if e["name"].startswith("FUSION_")}))
    monkeypatch.setattr(plan_module, "available_cpus", lambda: 96)  # a large node
    for c, env in deployments:
        cores = cpu_cores(c["resources"]["requests"]["cpu"])
        plan = Plan.from_settings(settings_of(env))
        assert plan.workers == math.floor(cores) >= 1, c["name"]
        worker = plan.worker_settings()
        assert plan.workers * (worker.torch_threads + worker.preprocess_workers) <= cores, c["name"]


@pytest.mark.parametrize("overlay", OVERLAYS, ids=OVERLAY_IDS)
def test_probes_and_ports_match_the_service(overlay: str) -> None:
    objects = build(overlay)
    c = container(objects)
    port = Settings.model_fields["port"].default
    assert int(image_env()["FUSION_PORT"]) == port
    assert [p["containerPort"] for p in c["ports"]] == [port]
    assert c["startupProbe"]["httpGet"]["path"] == "/readyz"  # covers loading and warm-up
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert port_number(c, c[probe]["httpGet"]["port"]) == port
    # Warm-up gets at least what docker-compose.yml's health check allows it.
    startup = c["startupProbe"]
    compose_start = compose_config()["services"]["fusion-serve"]["healthcheck"]["start_period"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= parse_duration(compose_start)
    service = one(objects, "Service")
    (service_port,) = service["spec"]["ports"]
    assert port_number(c, service_port["targetPort"]) == port
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


async def no_app(scope: Scope, receive: Receive, send: Send) -> None:
    """An ASGI app for reading the server's configuration; never called."""


def parse_duration(value: str | int) -> float:
    """Compose's `1m30s` / `180s` / nanoseconds (what `config --format json` prints) as seconds."""
    if isinstance(value, int) or str(value).isdigit():
        return int(value) / 1e9
    units = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3}
    return sum(float(n) * units[u] for n, u in re.findall(r"([\d.]+)(ms|h|m|s)", str(value)))


def test_probe_paths_answer_as_the_probes_expect(server: Server) -> None:
    objects = build("gpu")
    c = container(objects)
    with server.client() as client:
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert client.get(c[probe]["httpGet"]["path"]).status_code == 200, probe
        (endpoint,) = one(objects, "ServiceMonitor")["spec"]["endpoints"]
        assert client.get(endpoint["path"]).status_code == 200


@pytest.mark.parametrize("overlay", OVERLAYS, ids=OVERLAY_IDS)
def test_termination_covers_the_preStop_sleep_and_the_services_drain(overlay: str) -> None:
    objects = build(overlay)
    settings = settings_of(fusion_env(objects))
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    command = container(objects)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = float(command[1])
    # The preStop sleep lets endpoint removal reach the proxies while the pod still serves normally; the service's
    # own drain (FUSION_DRAIN_DELAY_S, /readyz 503) follows SIGTERM. One knob: the same length.
    assert pre_stop == math.ceil(settings.drain_delay_s) > 0
    graceful = uvicorn_config(no_app, settings).timeout_graceful_shutdown  # admitted requests get this to finish
    assert graceful is not None and graceful >= settings.request_timeout_s
    margin = 5  # the process's own exit after the graceful shutdown
    needed = pre_stop + settings.drain_delay_s + graceful + margin
    assert pod["terminationGracePeriodSeconds"] >= needed, f"{pod['terminationGracePeriodSeconds']} < {needed}"


@pytest.mark.parametrize("overlay", OVERLAYS, ids=OVERLAY_IDS)
def test_the_pod_runs_as_the_images_user_on_a_read_only_root(overlay: str) -> None:
    objects = build(overlay)
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    (user,) = [i.args for i in final_stage(dockerfile()) if i.keyword == "USER"]
    uid, gid = (int(x) for x in user.split(":"))
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (uid, gid)
    c = container(objects)
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    # A writable /tmp (uploads that spill to disk, caches: HOME points there) on an emptyDir.
    (tmp,) = [m for m in c["volumeMounts"] if m["mountPath"] == "/tmp"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == tmp["name"]]
    assert "emptyDir" in volume
    assert {e["name"]: e.get("value") for e in c["env"]}.get("HOME") == "/tmp"
    # Models: the image's (baked in) unless the models-pvc component mounts a volume.
    assert all(m["mountPath"] != image_env()["FUSION_MODELS_DIR"] for m in c["volumeMounts"])


# --- autoscaling and monitoring ---------------------------------------------------------------------------------


def promql_selectors(query: str) -> list[tuple[str, dict[str, str]]]:
    """Each `metric{label="value", ...}` in a PromQL expression."""
    return [
        (name, dict(re.findall(r'(\w+)\s*=\s*"([^"]*)"', labels)))
        for name, labels in re.findall(r"\b(fusion_[a-z0-9_]+)\s*\{([^}]*)\}", query)
    ]


@pytest.mark.parametrize("overlay", OVERLAYS, ids=OVERLAY_IDS)
def test_the_autoscaler_scales_the_deployment_on_its_own_pods_queue(overlay: str) -> None:
    objects = build(overlay)
    scaled, deployment = one(objects, "ScaledObject"), one(objects, "Deployment")
    service, monitor = one(objects, "Service"), one(objects, "ServiceMonitor")
    assert scaled["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert "replicas" not in deployment["spec"], "re-applying would reset the autoscaler's replica count"
    # Two at least, so that the PodDisruptionBudget lets a node drain without an outage.
    assert scaled["spec"]["minReplicaCount"] >= 2 > one(objects, "PodDisruptionBudget")["spec"]["maxUnavailable"]
    settings = settings_of(fusion_env(objects))
    namespace = deployment["metadata"]["namespace"]
    assert {o["metadata"].get("namespace") for o in objects if o["kind"] != "Namespace"} == {namespace}
    # Prometheus Operator labels a ServiceMonitor's series with the Service's namespace and `job` = its name.
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    triggers = scaled["spec"]["triggers"]
    assert triggers and all(t["type"] == "prometheus" and t["metricType"] == "AverageValue" for t in triggers)
    names = set()
    for trigger in triggers:
        selectors = promql_selectors(trigger["metadata"]["query"])
        assert selectors, trigger["metadata"]["query"]
        for name, labels in selectors:
            names.add(name)
            assert labels.get("namespace") == namespace, f"{name}: another namespace's pods"
            assert labels.get("job") == service["metadata"]["name"], f"{name}: not this Service's pods"
            assert labels.get("reason", REJECT_REASONS[0]) in REJECT_REASONS
    assert "fusion_queued_requests" in names, "the queue depth drives the scaling"
    (queue,) = [t for t in triggers if "fusion_queued_requests" in t["metadata"]["query"]]
    # Below the queue's capacity, or the pods shed load (503) before the autoscaler reacts.
    assert 0 < float(queue["metadata"]["threshold"]) < settings.max_queue_size


def test_the_autoscaler_and_monitor_use_only_exported_metrics(server: Server) -> None:
    objects = build("gpu")
    queries = [t["metadata"]["query"] for t in one(objects, "ScaledObject")["spec"]["triggers"]]
    used = {name for q in queries for name in re.findall(r"\bfusion_[a-z0-9_]+", q)}
    assert used
    missing = used - exported_names(server)
    assert not missing, f"the autoscaler queries metrics the service does not export: {missing}"


def test_the_kserve_predictor_matches_the_service() -> None:
    (isvc,) = load_yaml(INFERENCE_SERVICE)
    predictor = isvc["spec"]["predictor"]
    (c,) = predictor["containers"]
    settings = settings_of({e["name"]: e["value"] for e in c["env"] if e["name"].startswith("FUSION_")})
    (port,) = c["ports"]
    assert port["containerPort"] == Settings.model_fields["port"].default and port["name"] == "http1"
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port["containerPort"]}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port["containerPort"]}
    # Knative scales on requests in flight per pod; a target past what a pod admits would never be reached.
    assert predictor["scaleMetric"] == "concurrency"
    assert 0 < predictor["scaleTarget"] <= min(settings.max_inflight_requests, settings.max_queue_size)
    assert 1 <= predictor["minReplicas"] <= predictor["maxReplicas"]
    assert predictor["timeout"] > settings.request_timeout_s
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1 and settings.device == "cuda"


def test_the_kserve_predictor_serves_the_open_inference_protocol(server: Server) -> None:
    """KServe's clients speak /v2 to a predictor: the service answers it (tests/test_oip.py has the rest)."""
    with server.client() as client:
        assert client.get("/v2/health/ready").status_code == 200
        assert client.get("/v2/health/live").status_code == 200

