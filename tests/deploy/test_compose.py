"""docker-compose.yml, checked without a Docker engine: the Compose CLI validates it against the compose
specification and resolves it; the resolved model must say what the deployment promises."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter

from app.config import Settings
from tests.deploy.support import (
    COMPOSE_FILE,
    CPU_OVERRIDE,
    ROOT,
    compose,
    compose_config,
    exported_names,
    image_env,
)
from tests.server import Server

ENV_EXAMPLE = ROOT / "deploy" / "fusion.env.example"
SETTING_LINE = re.compile(r"^(#\s*)?(FUSION_[A-Z0-9_]+)=(.*)$")


def service(config: dict[str, Any], name: str = "fusion-serve") -> dict[str, Any]:
    return config["services"][name]


def test_every_variant_is_valid_compose() -> None:
    for files, profiles in [
        ((COMPOSE_FILE,), ()),
        ((COMPOSE_FILE,), ("monitoring",)),
        ((COMPOSE_FILE, CPU_OVERRIDE), ()),
        ((COMPOSE_FILE, CPU_OVERRIDE), ("monitoring",)),
    ]:
        args = [a for p in profiles for a in ("--profile", p)]
        result = compose(*args, "config", "--quiet", files=files)
        assert result.returncode == 0, f"{[f.name for f in files]} {profiles}: {result.stderr}"


def test_the_check_rejects_what_the_specification_forbids(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "deploy", tmp_path / "deploy")
    text = COMPOSE_FILE.read_text()
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(text.replace("start_period:", "start_perod:"))
    result = compose("config", "--quiet", files=(broken,), project_dir=tmp_path)
    assert result.returncode != 0 and "start_perod" in result.stderr


def test_the_service_reserves_a_gpu_checks_readiness_and_restarts() -> None:
    svc = service(compose_config())
    (device,) = svc["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert svc["healthcheck"]["test"] == ["CMD", "python", "-m", "app.probe", "/readyz"]
    assert svc["restart"] == "unless-stopped"
    (port,) = svc["ports"]
    assert port["target"] == int(image_env()["FUSION_PORT"])


def test_without_a_gpu_the_override_drops_the_reservation() -> None:
    svc = service(compose_config(COMPOSE_FILE, CPU_OVERRIDE))
    assert not svc.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices")
    assert svc["environment"]["FUSION_DEVICE"] == "auto"  # so the service picks the CPU


def test_models_are_mounted_read_only_where_the_image_serves_them() -> None:
    svc = service(compose_config())
    (volume,) = svc["volumes"]
    assert volume["read_only"] is True
    assert volume["target"] == image_env()["FUSION_MODELS_DIR"]
    assert Path(volume["source"]) == ROOT / "models"


def test_the_env_file_passes_only_real_settings() -> None:
    environment = service(compose_config())["environment"]
    known = {f"FUSION_{name.upper()}" for name in Settings.model_fields}
    assert set(environment) <= known, f"not settings (the service would ignore them): {set(environment) - known}"


def test_the_example_env_file_names_every_setting_at_its_default() -> None:
    lines = [m for line in ENV_EXAMPLE.read_text().splitlines() if (m := SETTING_LINE.match(line))]
    named = {m.group(2) for m in lines}
    assert named == {f"FUSION_{name.upper()}" for name in Settings.model_fields}
    for m in lines:
        if m.group(1):  # commented out: set by the image, or unset on purpose
            continue
        field = Settings.model_fields[m.group(2).removeprefix("FUSION_").lower()]
        value = TypeAdapter(field.annotation).validate_python(m.group(3))
        assert value == field.default, f"{m.group(2)}={m.group(3)} is not the default {field.default!r}"


def test_the_monitoring_profile_scrapes_the_service() -> None:
    assert "prometheus" not in compose_config()["services"]
    config = compose_config(profiles=("monitoring",))
    prom = service(config, "prometheus")
    (mount,) = [v for v in prom["volumes"] if v["type"] == "bind"]
    assert Path(mount["source"]) == ROOT / "deploy" / "prometheus" / "prometheus.yml" and mount["read_only"]
    scrape = yaml.safe_load(Path(mount["source"]).read_text())
    (job,) = scrape["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    (sd,) = job["dns_sd_configs"]
    assert sd["names"] == ["fusion-serve"] and "fusion-serve" in config["services"]
    assert sd["port"] == service(config)["ports"][0]["target"]


def test_grafana_is_provisioned_with_prometheus_and_the_dashboard() -> None:
    config = compose_config(profiles=("monitoring",))
    mounts = {Path(v["source"]).relative_to(ROOT).as_posix(): v["target"] for v in service(config, "grafana")["volumes"]
              if v["type"] == "bind"}
    provisioning = ROOT / "deploy" / "grafana" / "provisioning"
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    assert "prometheus" in config["services"]
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "fusion-serve.yml").read_text())["providers"]
    assert mounts["deploy/grafana/dashboards"] == provider["options"]["path"]
    assert mounts["deploy/grafana/provisioning"] == "/etc/grafana/provisioning"


def test_the_grafana_dashboard_queries_only_exported_metrics(server: Server) -> None:
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "dashboards" / "fusion-serve.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    used = {name for e in exprs for name in re.findall(r"\bfusion_[a-z0-9_]+", e)}
    assert used, "the dashboard queries nothing"
    missing = used - exported_names(server)
    assert not missing, f"the dashboard queries metrics the service does not export: {missing}"
