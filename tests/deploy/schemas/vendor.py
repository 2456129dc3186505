"""Regenerate the vendored CRD schemas in this folder from registry packages (README.md beside this file).

Not run by the tests: they read the JSON files. Run it by hand when upgrading a version below:

    python -m venv /tmp/crd && /tmp/crd/bin/pip install --no-deps kserve==0.21.0 && /tmp/crd/bin/pip install six \
        urllib3 kubernetes-validate==1.37.0
    /tmp/crd/bin/python tests/deploy/schemas/vendor.py     # needs npm on PATH

KEDA and Prometheus Operator: @kubernetes-models packages carry the CRD's openAPIV3Schema as a JSON literal
(`const schema = {...}`); it is copied as is, but for its ObjectMeta reference, pointed at the Kubernetes
definitions that kubernetes-validate ships. KServe has no such package: its Python SDK's models are generated from
the same Go API types as its CRD, so the schema is rebuilt from them (field names, JSON names, types, required
fields); the Kubernetes types inside (Container, Volume, ...) are references to the Kubernetes definitions.
"""
from __future__ import annotations

import importlib.util
import inspect
import json
import re
import subprocess
import sys
import tarfile
import tempfile
import types
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
K8S_DEFS = "/api/_definitions.json#/$defs/"  # kubernetes-validate's `_definitions.json` (its $id)
K8S_VERSION = "v1.37.0-local-strict"
NPM = {
    # package@version: (file in the package, vendored file)
    "@kubernetes-models/keda@0.3.2": ("keda.sh/v1alpha1/ScaledObject.js", "keda.sh_v1alpha1_scaledobject.json"),
    "@kubernetes-models/prometheus-operator@1.6.3": (
        "monitoring.coreos.com/v1/ServiceMonitor.js",
        "monitoring.coreos.com_v1_servicemonitor.json",
    ),
}
KSERVE = ("kserve==0.21.0", "serving.kserve.io_v1beta1_inferenceservice.json")


def npm_schema(spec: str, member: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(["npm", "pack", "--silent", spec], cwd=tmp, check=True, capture_output=True, text=True)
        with tarfile.open(Path(tmp) / out.stdout.strip().splitlines()[-1]) as tar:
            file = tar.extractfile(f"package/{member}")
            assert file is not None, member
            text = file.read().decode()
    start = text.index("const schema = ") + len("const schema = ")
    schema: dict[str, Any] = json.loads(text[start : text.index("\n};", start) + 2])
    return json.loads(
        json.dumps(schema).replace(
            '"io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta#"',
            f'"{K8S_DEFS}io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"',
        )
    )


def k8s_definitions() -> set[str]:
    import kubernetes_validate

    path = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / K8S_VERSION / "_definitions.json"
    return set(json.loads(path.read_text())["$defs"])


def kserve_models() -> types.ModuleType:
    """kserve.models without running kserve/__init__.py (which imports the whole model server)."""
    spec = importlib.util.find_spec("kserve")
    assert spec and spec.submodule_search_locations, "pip install --no-deps kserve"
    package = types.ModuleType("kserve")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["kserve"] = package
    import kserve.models

    return kserve.models


def kserve_schema() -> dict[str, Any]:
    models = kserve_models()
    k8s = k8s_definitions()
    defs: dict[str, Any] = {}

    def k8s_ref(name: str) -> dict[str, Any]:
        if name in ("ResourceQuantity", "V1beta1MetricQuantity"):
            return {"$ref": K8S_DEFS + "io.k8s.apimachinery.pkg.api.resource.Quantity"}
        if name.startswith("K8sIoApi"):  # K8sIoApiAppsV1DeploymentStrategy
            m = re.fullmatch(r"K8sIoApi([A-Z][a-z]+)(V\d+\w*?)([A-Z]\w+)", name)
            assert m, name
            return {"$ref": f"{K8S_DEFS}io.k8s.api.{m[1].lower()}.{m[2].lower()}.{m[3]}"}
        m = re.fullmatch(r"(V\d+(?:alpha\d+|beta\d+)?)([A-Z]\w+)", name)
        assert m, name
        suffix = f".{m[1].lower()}.{m[2]}"
        found = sorted(d for d in k8s if d.endswith(suffix))
        preferred = [d for d in found if d.startswith(("io.k8s.api.core.", "io.k8s.apimachinery.pkg.apis.meta."))]
        assert len(preferred or found) == 1, (name, found)
        return {"$ref": K8S_DEFS + (preferred or found)[0]}

    def of(type_: str) -> dict[str, Any]:
        if m := re.fullmatch(r"(?:list|List)\[(.+)\]", type_):
            return {"type": "array", "items": of(m[1])}
        if m := re.fullmatch(r"(?:dict|Dict)[(\[]str, (.+)[)\]]", type_):
            return {"type": "object", "additionalProperties": of(m[1])}
        simple = {"str": "string", "int": "integer", "bool": "boolean", "float": "number", "datetime": "string"}
        if type_ in simple:
            return {"type": simple[type_]}
        if type_ == "object":
            return {}
        if hasattr(models, type_) and type_.startswith(("V1beta1", "V1alpha1")):
            define(type_)
            return {"$ref": f"#/$defs/{type_}"}
        return k8s_ref(type_)

    def define(name: str) -> None:
        if name in defs:
            return
        defs[name] = {}  # placeholder: recursion
        cls = getattr(models, name)
        properties, required = {}, []
        for attr, type_ in cls.openapi_types.items():
            key = cls.attribute_map[attr]
            # The generated setters refuse None for the fields the API requires.
            if f"Invalid value for `{attr}`, must not be `None`" in inspect.getsource(getattr(cls, attr).fset):
                required.append(key)
            properties[key] = {} if key == "status" else of(type_)
        defs[name] = {"type": "object", "properties": properties, "additionalProperties": False}
        if required:
            defs[name]["required"] = required

    define("V1beta1InferenceService")
    root = defs.pop("V1beta1InferenceService")
    root["properties"]["apiVersion"] = {"type": "string", "enum": ["serving.kserve.io/v1beta1"]}
    root["properties"]["kind"] = {"type": "string", "enum": ["InferenceService"]}
    root["required"] = ["apiVersion", "kind", "spec"]
    return {**root, "$defs": dict(sorted(defs.items()))}


def write(name: str, source: str, schema: dict[str, Any]) -> None:
    text = json.dumps({"$comment": f"Vendored from {source} by vendor.py.", **schema}, indent=1, sort_keys=False)
    (HERE / name).write_text(text + "\n")
    print(f"{name}: {len(text)} bytes")


def main() -> None:
    for spec, (member, name) in NPM.items():
        write(name, f"npm {spec} ({member})", npm_schema(spec, member))
    write(KSERVE[1], f"PyPI {KSERVE[0]} (kserve.models, generated from KServe's API types)", kserve_schema())


if __name__ == "__main__":
    main()
