"""The Ray Serve scenario of tests/deploy/test_ray_serve.py: `python -m tests.deploy.ray_scenario OUT.json`, run in a
loopback-only network namespace (tests.deploy.ray_cluster).

A real three-node Ray cluster on this machine (head + two worker nodes, each offering one `fusion_slot`, a custom
resource each replica needs: so at most one replica per node), the shipped deploy/ray/serve-cpu.yaml deployed with
`serve run` with two replicas (and what a laptop-sized test changes: loopback, ports, sizes), requests through
Ray's HTTP proxy, then, under load from a few clients, one replica's node killed (SIGKILL to all its processes)
until Ray has a second replica running again on the free slot, and last a scale-down to one replica (a graceful
shutdown). Writes what happened as JSON; the test judges it.
"""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.deploy.ray_cluster import ROOT, LocalCluster, Node, free_port, local_cluster, loopback_up, wait_for

APP = DEPLOYMENT = "fusion-serve"
SLOT = "fusion_slot"
CLIENTS = 4
ASSETS = ROOT / "bench" / "assets"

# The inputs compared with the plain service: every modality alone, and together.
INPUTS: dict[str, dict[str, str]] = {
    "image": {"image": "digit.png"},
    "text": {"text": "caption.txt"},
    "audio": {"audio": "digit.wav"},
    "image+audio": {"image": "digit.png", "audio": "digit.wav"},
    "all": {"image": "digit.png", "text": "caption.txt", "audio": "digit.wav"},
}
SETTINGS = {"FUSION_MODELS_DIR": str(ROOT / "models"), "FUSION_MAX_BATCH_SIZE": "8", "FUSION_LOG_LEVEL": "warning"}


def form(name: str) -> dict[str, tuple[str | None, bytes]]:
    """The multipart parts of input `name` (the text as a plain field: no file name)."""
    parts: dict[str, tuple[str | None, bytes]] = {}
    for field, asset in INPUTS[name].items():
        content = (ASSETS / asset).read_bytes()
        parts[field] = (None, content.strip()) if field == "text" else (asset, content)
    return parts


def serve_config(port: int) -> dict[str, Any]:
    """deploy/ray/serve-cpu.yaml as shipped, but for this machine: the proxy on the head only, on loopback; the
    shipped model; two replicas of one CPU each, one per node (the slot); quick health checks."""
    config = yaml.safe_load((ROOT / "deploy" / "ray" / "serve-cpu.yaml").read_text())
    config["proxy_location"] = "HeadOnly"
    config["http_options"] = {"host": "127.0.0.1", "port": port}
    app = config["applications"][0]
    app["runtime_env"]["env_vars"].update(SETTINGS)
    deployment = app["deployments"][0]
    deployment.update(
        autoscaling_config={"min_replicas": 2, "max_replicas": 2, "initial_replicas": 2},
        ray_actor_options={"num_cpus": 1, "num_gpus": 0, "resources": {SLOT: 1}},
        max_ongoing_requests=16,
        health_check_period_s=1,
        health_check_timeout_s=10,
    )
    return config


def replica_pids(node: Node) -> list[int]:
    """The node's Serve replica processes (Ray titles them `ray::ServeReplica:<app>:<deployment>`)."""
    found = []
    for pid in node.pids():
        try:
            if b"ServeReplica" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            pass
    return found


def cpu_s(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except OSError:
            pass
    return total


def running_replicas() -> int:
    from ray import serve

    app = serve.status().applications.get(APP)
    if app is None or DEPLOYMENT not in app.deployments:
        return 0
    return int(app.deployments[DEPLOYMENT].replica_states.get("RUNNING", 0))


class Load:
    """`CLIENTS` clients, each sending one request after another, every outcome recorded with its time. `pace_s`:
    the least time between one client's requests (0: back to back)."""

    def __init__(self, url: str, clock: Callable[[], float]) -> None:
        self.url, self.clock = url, clock
        self.pace_s = 0.0
        self.outcomes: list[tuple[float, str]] = []  # (time sent, "200" or the status / error)
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._client, daemon=True) for _ in range(CLIENTS)]

    def _client(self) -> None:
        parts = form("all")
        with httpx.Client(timeout=60) as client:
            while not self.stop.is_set():
                sent = self.clock()
                try:
                    r = client.post(f"{self.url}/v1/predict", files=parts)
                    outcome = str(r.status_code) if r.status_code == 200 else f"{r.status_code} {r.text[:200]}"
                except httpx.HTTPError as exc:
                    outcome = f"{type(exc).__name__}: {exc}"
                self.outcomes.append((sent, outcome))
                self.stop.wait(max(0.0, sent + self.pace_s - self.clock()))

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(90)


def run(cluster: LocalCluster, result: dict[str, Any]) -> None:
    t0 = time.monotonic()

    def clock() -> float:
        return round(time.monotonic() - t0, 3)

    timings = result["timings"] = {}
    ray_bin = Path(sys.executable).parent
    cluster.start_head(num_cpus=1, resources={SLOT: 1})
    workers = [cluster.add_node(f"node-{i}", num_cpus=1, resources={SLOT: 1}) for i in (1, 2)]

    import ray

    ray.init(address=cluster.address, _node_ip_address="127.0.0.1", logging_level="warning", log_to_driver=False)
    wait_for(lambda: sum(n["Alive"] for n in ray.nodes()) == 3, "three live nodes", 180, 0.5)
    timings["cluster_up_s"] = clock()

    port = free_port()
    config_path = cluster.temp_dir / "serve.yaml"
    config_path.write_text(yaml.safe_dump(serve_config(port)))
    deploy = subprocess.run([str(ray_bin / "serve"), "run", "--non-blocking", f"--address={cluster.address}",
                             str(config_path)], capture_output=True, text=True, env=cluster.env, cwd=ROOT)
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: running_replicas() == 2, "two running replicas", 300, 0.5)
    wait_for(lambda: httpx.get(f"{url}/readyz", timeout=10).status_code == 200, "/readyz through the proxy", 60)
    timings["deployed_s"] = clock()
    result["replicas_per_node"] = {n.name: len(replica_pids(n)) for n in cluster.nodes}

    # The same inputs as the plain service gets in the test, several times each (so both replicas answer).
    answers = result["answers"] = []
    with httpx.Client(timeout=60) as client:
        for _ in range(4):
            for name in INPUTS:
                r = client.post(f"{url}/v1/predict", files=form(name))
                answers.append({"input": name, "status": r.status_code, "body": r.json()})
        oip = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["a seven"]},
                          {"name": "image", "datatype": "BYTES", "shape": [1],
                           "data": [base64.b64encode((ASSETS / "digit.png").read_bytes()).decode()]}]}
        r = client.post(f"{url}/v2/models/digits/infer", json=oip)
        result["oip"] = {"status": r.status_code, "body": r.json()}

    victim = next(n for n in workers if replica_pids(n))
    hosts = [n for n in cluster.nodes if replica_pids(n)]
    spares = [n for n in cluster.nodes if n not in hosts]
    cpu_before = {n.name: cpu_s(replica_pids(n)) for n in hosts}
    with Load(url, clock) as load:
        wait_for(lambda: len(load.outcomes) >= 100, "100 answers before the kill", 120)
        result["replica_cpu_s_under_load"] = {n.name: round(cpu_s(replica_pids(n)) - cpu_before[n.name], 2)
                                              for n in hosts}
        result["killed"] = {"node": victim.name, "at_s": clock(), "sent_before": len(load.outcomes)}
        victim.kill()
        wait_for(lambda: running_replicas() < 2, "Ray noticing the lost replica", 120, 0.2)
        result["noticed_at_s"] = clock()
        # Back-to-back requests on one replica would starve its replacement's start-up of CPU on a small machine.
        load.pace_s = 0.1
        # Once noticed, the replacement starts on the free slot; running again when Ray says it is.
        wait_for(lambda: any(replica_pids(n) for n in spares) and running_replicas() == 2, "a replacement", 300, 0.5)
        result["recovered_at_s"] = clock()
        end = len(load.outcomes) + 50
        wait_for(lambda: len(load.outcomes) >= end, "50 answers after recovery", 120)
        result["replicas_per_node_after"] = {n.name: len(replica_pids(n)) for n in cluster.nodes if n is not victim}

        # Scaled down to one replica under load: Ray stops routing to the one it removes and lets its requests
        # finish (graceful shutdown), then its lifespan stops the engine and the process exits.
        survivors = [n for n in cluster.nodes if n is not victim]
        result["scale_down_at_s"] = clock()
        config = serve_config(port)
        config["applications"][0]["deployments"][0]["autoscaling_config"] = {"min_replicas": 1, "max_replicas": 1}
        config_path.write_text(yaml.safe_dump(config))
        deploy = subprocess.run([str(ray_bin / "serve"), "run", "--non-blocking", f"--address={cluster.address}",
                                 str(config_path)], capture_output=True, text=True, env=cluster.env, cwd=ROOT)
        assert deploy.returncode == 0, deploy.stdout + deploy.stderr
        wait_for(lambda: sum(len(replica_pids(n)) for n in survivors) == 1, "one replica process left", 120, 0.2)
        result["scaled_down_at_s"] = clock()
        end = len(load.outcomes) + 20
        wait_for(lambda: len(load.outcomes) >= end, "20 answers after the scale-down", 120)
    result["outcomes"] = load.outcomes
    timings["total_s"] = clock()


def main() -> int:
    out = Path(sys.argv[1])
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    loopback_up()
    result: dict[str, Any] = {}
    try:
        # One proxy (on the head) and a router that prefers replicas on its own node would send the remote replica
        # nothing until the local one is full: spread the load, so that the node killed has requests in flight.
        with local_cluster(RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING="0") as cluster:
            try:
                run(cluster, result)
            finally:
                result["node_logs"] = {n.name: n.log_path.read_text(errors="replace")[-3000:] for n in cluster.nodes}
    except BaseException as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
