"""Kubernetes manifests checked without a cluster: `kubectl kustomize` builds them, and every object is validated
against the Kubernetes JSON schemas (kubernetes-validate's, strict) or a CRD schema vendored in schemas/."""
from __future__ import annotations

import json
import re
import subprocess
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012

from tests.deploy.support import tool

SCHEMAS = Path(__file__).resolve().parent / "schemas"
# The oldest Kubernetes the manifests promise to work on (README) and the newest the schemas know.
K8S_VERSIONS = ("1.30", "1.37")
# (apiVersion, kind) -> vendored schema (schemas/README.md says where each comes from).
CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda.sh_v1alpha1_scaledobject.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com_v1_servicemonitor.json",
    ("serving.kserve.io/v1beta1", "InferenceService"): "serving.kserve.io_v1beta1_inferenceservice.json",
}

Manifest = dict[str, Any]


def kustomize(path: Path) -> list[Manifest]:
    """The objects `kubectl kustomize PATH` builds (fails the test, with kustomize's message, if it cannot)."""
    result = subprocess.run([tool("kubectl"), "kustomize", str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"kubectl kustomize {path}: {result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def load_yaml(path: Path) -> list[Manifest]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _k8s_schemas(version: str) -> Any:
    return resources.files("kubernetes_validate") / "kubernetes-json-schema" / f"v{version}.0-local-strict"


@cache
def _registry(version: str) -> Registry:
    definitions = json.loads((_k8s_schemas(version) / "_definitions.json").read_text())
    return Resource.from_contents(definitions) @ Registry()


def strict(schema: Any) -> Any:
    """The schema with unknown fields refused wherever it lists the known ones (as kubectl's default server-side
    field validation does), except where the CRD keeps unknown fields on purpose."""
    if isinstance(schema, dict):
        out = {key: strict(value) for key, value in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    return schema


@cache
def _crd_schema(name: str) -> dict[str, Any]:
    schema = strict(json.loads((SCHEMAS / name).read_text()))
    # A base URI under the Kubernetes definitions' own, so that their `/api/_definitions.json#...` refs resolve.
    schema["$id"] = f"https://kubernetes.io/api/crds/{name}"
    return schema  # type: ignore[no-any-return]


def schema_for(obj: Manifest, version: str) -> dict[str, Any] | None:
    api_version, kind = obj.get("apiVersion", ""), obj.get("kind", "")
    if (api_version, kind) in CRD_SCHEMAS:
        return _crd_schema(CRD_SCHEMAS[(api_version, kind)])
    # kubernetes-validate's file names: apps/v1 Deployment -> deployment-apps-v1.json, v1 Service -> service-v1.json
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    path = _k8s_schemas(version) / f"{kind.lower()}-{group_version}.json"
    return json.loads(path.read_text()) if path.is_file() else None  # type: ignore[no-any-return]


def schema_errors(obj: Manifest, version: str = K8S_VERSIONS[-1]) -> list[str]:
    """Why `obj` is not a valid object of its kind for Kubernetes `version` (empty when it is)."""
    schema = schema_for(obj, version)
    name = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    if schema is None:
        return [f"{name}: no schema for {obj.get('apiVersion')} {obj.get('kind')} (Kubernetes {version})"]
    validator = Draft202012Validator(schema, registry=_registry(version))
    return [
        f"{name} (Kubernetes {version}) at /{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(obj)
    ]


def refs(schema: Any) -> set[str]:
    """Every `$ref` in a schema."""
    if isinstance(schema, dict):
        found = {schema["$ref"]} if isinstance(schema.get("$ref"), str) else set()
        return found.union(*(refs(v) for v in schema.values()))
    if isinstance(schema, list):
        return set().union(*(refs(v) for v in schema))
    return set()


def resolves(schema: dict[str, Any], ref: str, version: str) -> bool:
    """Whether `ref` (from `schema`) points at something, with the Kubernetes definitions of `version` at hand."""
    registry = _registry(version).with_resource(schema["$id"], DRAFT202012.create_resource(schema))
    resolver = registry.resolver(schema["$id"])
    try:
        resolver.lookup(ref)
    except Unresolvable:
        return False
    return True
