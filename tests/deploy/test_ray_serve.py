"""fusion-serve on Ray Serve (app/ray_serve.py, deploy/ray/): the shipped configs validate and agree with the
service's settings; and, for real, a multi-node local Ray cluster serves the same answers as the plain service
through Ray's HTTP proxy and keeps answering while one replica's node is killed (tests/deploy/ray_scenario.py)."""
from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import httpx
import pytest
import yaml

pytest.importorskip("ray.serve", reason="the [ray] extra (pip install -e '.[ray]') is not installed")

from ray.serve.schema import ServeDeploySchema  # noqa: E402

from app.config import Settings  # noqa: E402
from app.http.state import ServiceState  # noqa: E402
from app.metrics import ServiceMetrics  # noqa: E402
from app.ray_serve import DEPLOYMENT, FusionReplica, deployment_options, replica_settings  # noqa: E402
from tests.fakes import FakeEngine  # noqa: E402
from tests.deploy.ray_cluster import private_network_error, run_in_private_network  # noqa: E402
from tests.deploy.ray_scenario import CLIENTS, INPUTS, SETTINGS, form  # noqa: E402
from tests.server import running_server  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "deploy" / "ray").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_the_serve_configs_are_valid_and_agree_with_the_service(path: Path) -> None:
    config = ServeDeploySchema.model_validate(yaml.safe_load(path.read_text()))
    (app,) = config.applications
    assert app.import_path == "app.ray_serve:build"
    env = app.runtime_env["env_vars"]
    settings = Settings(**{k.removeprefix("FUSION_").lower(): v for k, v in env.items()})  # every one a setting
    assert set(env) <= {f"FUSION_{name.upper()}" for name in Settings.model_fields}
    (deployment,) = app.deployments
    assert deployment.name == DEPLOYMENT
    gpu = settings.device == "cuda"
    assert deployment.ray_actor_options.num_gpus == (1 if gpu else 0)
    autoscaling = deployment.autoscaling_config
    assert 0 < autoscaling["target_ongoing_requests"] <= deployment.max_ongoing_requests
    assert deployment.max_ongoing_requests == 2 * settings.max_batch_size
    assert deployment.max_queued_requests == settings.max_queue_size
    # Ray waits this long for a stopping replica's requests: as long as the service's own drain does.
    assert deployment.graceful_shutdown_timeout_s >= settings.request_timeout_s + 5
    assert config.http_options.port == 8000


def test_deployment_defaults_follow_the_settings() -> None:
    options = deployment_options(Settings(device="cuda", max_batch_size=16, max_queue_size=100, request_timeout_s=3))
    assert options["ray_actor_options"] == {"num_cpus": 1, "num_gpus": 1}
    assert (options["max_ongoing_requests"], options["max_queued_requests"]) == (32, 100)
    assert options["graceful_shutdown_timeout_s"] == 8
    assert deployment_options(Settings(device="auto"))["ray_actor_options"]["num_gpus"] == 0


def test_a_replica_is_one_process_sized_for_the_cpus_ray_gave_it() -> None:
    s = replica_settings(Settings(workers=8, model_placement="owner", devices="cuda:0,cuda:1"), cpus=4)
    assert (s.workers, s.model_placement, s.devices) == (1, "per_worker", ())
    assert (s.torch_threads, s.preprocess_workers) == (4, 2)
    assert replica_settings(Settings(torch_threads=2, preprocess_workers=0), cpus=4).torch_threads == 2


def test_rays_health_check_is_the_services_readiness() -> None:
    """The first check (Ray runs it as the replica starts) waits for the warm-up, so Ray routes nothing to a cold
    replica; a failed warm-up fails it, and so does draining or an engine that cannot serve."""

    async def scenario() -> None:
        settings = Settings()
        replica = FusionReplica()
        state = replica.state = ServiceState(settings=settings, engine=FakeEngine(settings), metrics=ServiceMetrics(8))
        warm = asyncio.Event()

        async def warming() -> None:
            await warm.wait()
            state.set_ready(True)

        state.warming = asyncio.create_task(warming())
        first = asyncio.create_task(replica.check_health())
        for _ in range(20):
            await asyncio.sleep(0)
        assert not first.done()  # still warming up: not healthy yet, not failed either
        warm.set()
        await first
        await replica.check_health()
        state.draining = True
        with pytest.raises(RuntimeError, match="shutting down"):
            await replica.check_health()

        broken = FusionReplica()
        state = broken.state = ServiceState(settings=settings, engine=FakeEngine(settings), metrics=ServiceMetrics(8))

        async def failing() -> None:
            raise MemoryError("warm-up ran out of memory")

        state.warming = asyncio.create_task(failing())
        with pytest.raises(MemoryError):
            await broken.check_health()

    asyncio.run(scenario())


def probabilities(body: dict) -> list[float]:
    return [body["probabilities"][label] for label in sorted(body["probabilities"])]


@pytest.mark.slow
def test_a_ray_cluster_serves_like_the_plain_service_and_survives_losing_a_node(tmp_path: Path) -> None:
    problem = private_network_error()
    if problem:
        message = f"the Ray cluster runs in a loopback-only network namespace, and {problem}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    out, log = tmp_path / "ray.json", tmp_path / "scenario.log"
    status = run_in_private_network([sys.executable, "-m", "tests.deploy.ray_scenario", str(out)], 480, log)
    result = json.loads(out.read_text()) if out.exists() else {}
    assert status == 0 and "error" not in result, (
        f"{result.get('error')}\n{log.read_text(errors='replace')[-2500:]}\n"
        + "\n".join(f"{name}: {text[-600:]}" for name, text in result.get("node_logs", {}).items()))
    print(json.dumps({k: result[k] for k in ("timings", "replicas_per_node", "replica_cpu_s_under_load",
                                             "killed", "noticed_at_s", "recovered_at_s",
                                             "replicas_per_node_after", "scale_down_at_s", "scaled_down_at_s")}))

    # Two replicas, one per node; both did work under load.
    assert sorted(result["replicas_per_node"].values()) == [0, 1, 1]
    assert len(result["replica_cpu_s_under_load"]) == 2
    assert all(cpu > 0.2 for cpu in result["replica_cpu_s_under_load"].values()), result["replica_cpu_s_under_load"]

    # Through Ray's proxy, the answers of the plain service: same model, same inputs.
    settings = {k.removeprefix("FUSION_").lower(): v for k, v in SETTINGS.items() if k != "FUSION_MODELS_DIR"}
    with running_server(Path(SETTINGS["FUSION_MODELS_DIR"]), **settings) as s:
        with httpx.Client(base_url=s.url, timeout=30) as client:
            plain = {name: client.post("/v1/predict", files=form(name)).json()
                     for name in INPUTS}
    assert len(result["answers"]) == 4 * len(INPUTS)
    for answer in result["answers"]:
        assert answer["status"] == 200, answer
        expected = plain[answer["input"]]
        assert answer["body"]["modalities"] == expected["modalities"]
        assert probabilities(answer["body"]) == pytest.approx(probabilities(expected), abs=1e-5)
    assert result["oip"]["status"] == 200 and result["oip"]["body"]["outputs"][0]["shape"] == [1, 10]

    # Killing one replica's node under load: requests keep being answered, a few may fail, Ray replaces it.
    killed_at, recovered_at = result["killed"]["at_s"], result["recovered_at_s"]
    outcomes = result["outcomes"]
    failed = [o for o in outcomes if o[1] != "200"]
    during = [o for o in outcomes if killed_at <= o[0] < recovered_at]
    after = [o for o in outcomes if recovered_at <= o[0] < result["scale_down_at_s"]]
    print(f"sent {len(outcomes)}, answered {len(outcomes) - len(failed)}, failed {len(failed)}; "
          f"between the kill and the replacement: {len(during)} sent, "
          f"{sum(o[1] == '200' for o in during)} answered; after: {len(after)}")
    # Ray's proxy retries a request it could not hand to a replica, not one the replica was running when it died:
    # those fail (500), at most one per client, and only until Ray notices the loss.
    assert len(failed) <= CLIENTS, failed[:10]
    assert all(killed_at - 10 <= sent <= result["noticed_at_s"] for sent, _ in failed), failed
    assert sum(o[1] == "200" for o in during) >= 20  # the surviving replica kept answering
    assert after and all(o[1] == "200" for o in after[-50:])
    assert sorted(result["replicas_per_node_after"].values()) == [1, 1]  # the replacement is on the free slot

    # A replica removed by a scale-down drains: not one request fails.
    scaling = [o for o in outcomes if o[0] >= result["scale_down_at_s"]]
    print(f"scale-down: {len(scaling)} sent, {sum(o[1] == '200' for o in scaling)} answered")
    assert len(scaling) >= 20 and all(o[1] == "200" for o in scaling), [o for o in scaling if o[1] != "200"][:10]
