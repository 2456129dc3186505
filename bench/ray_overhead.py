"""Ray Serve on this machine: its proxy's overhead against the plain service, and our batcher against Ray's
`@serve.batch` (bench/ray_batch.py), under the same load, interleaved.

`python bench/ray_overhead.py` (needs the [ray] extra and Debian's `wrk`; about 6 minutes). It re-runs itself in a
loopback-only network namespace (Ray's servers listen on every interface; tests/deploy/ray_cluster.py), then:
- the plain service: `fusion-serve serve`, one process pinned to core 0, one torch thread (as bench/run.py);
- a one-node Ray cluster pinned to core 0 as a whole (GCS, raylet, agents, Serve controller, proxy, replicas), with
  two applications behind Ray's HTTP proxy, one replica each (one CPU, one torch thread): `ours` (the shipped
  deployment, app.ray_serve) and `serve_batch` (the same with batches formed by `@serve.batch`);
- wrk pinned to core 1, `--rounds` rounds; in each, every concurrency, and at each concurrency every target in
  turn, so the machine's drift affects all alike. CPU per request: every process of the target (for Ray: the
  whole cluster, and split into proxy, replica and the rest).
Results: bench/results/ray.md (+ ray.json).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent)]
from run import CLIENT_CORE, RESULTS, SERVER_CORE, Server, _cpu_s, build_request, machine_info, wrk  # noqa: E402

from tests.deploy.ray_cluster import (  # noqa: E402
    LocalCluster, free_port, in_private_network, local_cluster, loopback_up, run_in_private_network, wait_for,
)

ROOT = BENCH.parent
TARGETS = ("plain", "ray", "serve_batch", "serve_batch_10ms")
RATIOS = (("ray_over_plain", "ray", "plain"), ("serve_batch_over_ray", "serve_batch", "ray"),
          ("serve_batch_10ms_over_ray", "serve_batch_10ms", "ray"))
VARIANTS = {"serve_batch": ("/sb", None), "serve_batch_10ms": ("/sb10", "0.01")}  # route, SERVE_BATCH_WAIT_S
SETTINGS = {"FUSION_MODELS_DIR": str(ROOT / "models"), "FUSION_DEFAULT_MODEL": "digits", "FUSION_TORCH_THREADS": "1"}


class RayTarget:
    """One Ray application seen as bench/run.py's Server: url, CPU of the cluster's processes, batch histogram."""

    def __init__(self, cluster: LocalCluster, url: str, replica_title: str) -> None:
        self.cluster, self.url, self.replica_title = cluster, url, replica_title

    def _titled(self) -> dict[str, list[int]]:
        parts: dict[str, list[int]] = {"proxy": [], "replica": [], "other": []}
        for node in self.cluster.nodes:
            for pid in node.pids():
                try:
                    title = Path(f"/proc/{pid}/cmdline").read_bytes()
                except OSError:
                    continue
                if b"ProxyActor" in title:
                    parts["proxy"].append(pid)
                elif self.replica_title.encode() in title:
                    parts["replica"].append(pid)
                elif b"ServeReplica" not in title:  # the other application's replica is not this one's cost
                    parts["other"].append(pid)
        return parts

    def cpu_parts(self) -> dict[str, float]:
        return {k: sum(_cpu_s(p) for p in pids) for k, pids in self._titled().items()}

    def cpu_s(self) -> float:
        return sum(self.cpu_parts().values())

    def rss_mib(self) -> float:
        return sum(_rss_mib(p) for pids in self._titled().values() for p in pids)

    def batch_hist(self) -> dict[str, float]:
        return Server.batch_hist(self)  # type: ignore[arg-type]  # the same /metrics parsing


def _rss_mib(pid: int) -> float:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def serve_config(port: int, quiet: bool) -> dict[str, Any]:
    """The shipped CPU config, two applications, one replica of one CPU each, the proxy on loopback. `quiet`: no
    access log lines, neither Ray's (proxy, replicas) nor the service's."""
    base = yaml.safe_load((ROOT / "deploy" / "ray" / "serve-cpu.yaml").read_text())
    (app,) = base["applications"]
    app["runtime_env"]["env_vars"].update(SETTINGS, **({"FUSION_LOG_LEVEL": "warning"} if quiet else {}))
    logging = {"enable_access_log": False, "log_level": "WARNING"} if quiet else None
    if logging:
        app["logging_config"] = logging
    deployment = app["deployments"][0]
    deployment.update(autoscaling_config={"min_replicas": 1, "max_replicas": 1},
                      ray_actor_options={"num_cpus": 1, "num_gpus": 0})
    apps = [app]
    for name, (route, wait_s) in VARIANTS.items():
        variant = json.loads(json.dumps(app))
        variant.update(name=name, route_prefix=route, import_path="bench.ray_batch:build")
        variant["deployments"][0]["name"] = "fusion-serve-batch"
        if wait_s:
            variant["runtime_env"]["env_vars"]["SERVE_BATCH_WAIT_S"] = wait_s
        apps.append(variant)
    app["name"] = "ours"
    return {"proxy_location": "HeadOnly", "http_options": {"host": "127.0.0.1", "port": port},
            "applications": apps, **({"logging_config": logging} if logging else {})}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    loopback_up()
    body, ctype = build_request("http://127.0.0.1")
    out: dict[str, Any] = {"machine": machine_info(), "args": {k: str(v) for k, v in vars(args).items()},
                           "runs": {t: {} for t in TARGETS}}
    quiet_env = {"FUSION_LOG_LEVEL": "warning"} if args.quiet_logs else {}
    plain = Server(free_port(), ROOT / "models", "digits", {"FUSION_TORCH_THREADS": "1", **quiet_env})
    try:
        ray_env = {"RAY_SERVE_LOG_TO_STDERR": "0"} if args.quiet_logs else {}
        with local_cluster(launcher=("taskset", "-c", SERVER_CORE), **ray_env) as cluster:
            cluster.start_head(num_cpus=len(TARGETS) - 1)
            port = free_port()
            config = cluster.temp_dir / "serve.yaml"
            config.write_text(yaml.safe_dump(serve_config(port, args.quiet_logs)))
            t0 = time.perf_counter()
            subprocess.run([str(Path(sys.executable).parent / "serve"), "run", "--non-blocking",
                            f"--address={cluster.address}", str(config)], env=cluster.env, cwd=ROOT, check=True,
                           capture_output=True)
            url = f"http://127.0.0.1:{port}"
            for prefix in ("", *(route for route, _ in VARIANTS.values())):
                wait_for(lambda: httpx.get(f"{url}{prefix}/readyz", timeout=5).status_code == 200, "ray", 300, 0.5)
            out["ray_deploy_s"] = round(time.perf_counter() - t0, 1)
            targets = {"plain": plain, "ray": RayTarget(cluster, url, "ServeReplica:ours:"),
                       **{name: RayTarget(cluster, url + route, f"ServeReplica:{name}:")
                          for name, (route, _) in VARIANTS.items()}}
            for rnd in range(args.rounds):
                for c in (int(x) for x in args.concurrency.split(",")):
                    for name in TARGETS:
                        target = targets[name]
                        parts0 = target.cpu_parts() if isinstance(target, RayTarget) else {}
                        row = wrk(target, body, ctype, c, args.seconds, pin=CLIENT_CORE)  # type: ignore[arg-type]
                        if isinstance(target, RayTarget):
                            total = row["rps"] * args.seconds or 1
                            row["cpu_ms_per_request_parts"] = {
                                k: round((v - parts0[k]) * 1e3 / total, 3) for k, v in target.cpu_parts().items()}
                        out["runs"][name].setdefault(c, []).append(row)
                        print(f"round {rnd} c={c} {name}: {row['rps']:.1f} req/s p50 {row['p50_ms']:.2f} p99 "
                              f"{row['p99_ms']:.2f} cpu {row['cpu_ms_per_request']:.2f} ms/req "
                              f"{row.get('cpu_ms_per_request_parts', '')} batch {row['mean_batch']:.1f} "
                              f"errors {row['errors']}", flush=True)
    finally:
        plain.stop()
    out["summary"] = summarize(out["runs"])
    return out


def summarize(runs: dict[str, dict[int, list[dict]]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for c in runs["plain"]:
        rows = {t: runs[t][c] for t in TARGETS}
        s: dict[str, Any] = {t: {k: statistics.median(r[k] for r in rows[t])
                                 for k in ("rps", "p50_ms", "p99_ms", "cpu_ms_per_request", "mean_batch")}
                             for t in TARGETS}
        for t in TARGETS[1:]:
            parts = [r["cpu_ms_per_request_parts"] for r in rows[t]]
            s[t]["cpu_ms_per_request_parts"] = {k: statistics.median(p[k] for p in parts) for k in parts[0]}
            s[t]["rps_spread"] = [min(r["rps"] for r in rows[t]), max(r["rps"] for r in rows[t])]
        s["plain"]["rps_spread"] = [min(r["rps"] for r in rows["plain"]), max(r["rps"] for r in rows["plain"])]
        for label, num, den in RATIOS:
            ratios = [b["rps"] / a["rps"] for a, b in zip(rows[den], rows[num])]
            p50 = [b["p50_ms"] / a["p50_ms"] for a, b in zip(rows[den], rows[num])]
            cpu = [b["cpu_ms_per_request"] / a["cpu_ms_per_request"] for a, b in zip(rows[den], rows[num])]
            s[label] = {"rps": statistics.median(ratios), "rps_spread": [min(ratios), max(ratios)],
                        "p50": statistics.median(p50), "p50_spread": [min(p50), max(p50)],
                        "cpu_per_request": statistics.median(cpu), "cpu_spread": [min(cpu), max(cpu)]}
        summary[str(c)] = s
    return summary


def report(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = [
        "# Ray Serve: proxy overhead and @serve.batch",
        "",
        f"`python bench/ray_overhead.py --rounds {r['args']['rounds']} --seconds {r['args']['seconds']}"
        f"{' --quiet-logs' if r['args'].get('quiet_logs') == 'True' else ''}`, "
        f"{m['date']}, {m['cpu']}, {m['cores']} cores, load average before {' '.join(m['load_before'])}; "
        f"the servers on core {SERVER_CORE} (the plain service's process; the whole Ray cluster), wrk on core "
        f"{CLIENT_CORE}, rounds interleaved. Medians over rounds, [min..max] spreads. CPU per request: every "
        "process of the target (Ray: the cluster, split into proxy / replica / other).",
        "",
        "| concurrency | target | req/s [spread] | p50 ms | p99 ms | CPU ms/req | proxy / replica / other | mean batch |",
        "|---:|---|---:|---:|---:|---:|---|---:|",
    ]
    for c, s in r["summary"].items():
        for t in TARGETS:
            row = s[t]
            parts = row.get("cpu_ms_per_request_parts")
            split = " / ".join(f"{parts[k]:.2f}" for k in ("proxy", "replica", "other")) if parts else ""
            lines.append(f"| {c} | {t} | {row['rps']:.0f} [{row['rps_spread'][0]:.0f}..{row['rps_spread'][1]:.0f}] "
                         f"| {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {row['cpu_ms_per_request']:.2f} | {split} "
                         f"| {row['mean_batch']:.1f} |")
    lines += ["", "| concurrency | ratio | req/s [spread] | p50 [spread] | CPU/req [spread] |", "|---:|---|---|---|---|"]
    for c, s in r["summary"].items():
        for label, _, _ in RATIOS:
            x = s[label]
            lines.append(f"| {c} | {label} | {x['rps']:.2f} [{x['rps_spread'][0]:.2f}..{x['rps_spread'][1]:.2f}] | "
                         f"{x['p50']:.2f} [{x['p50_spread'][0]:.2f}..{x['p50_spread'][1]:.2f}] | "
                         f"{x['cpu_per_request']:.2f} [{x['cpu_spread'][0]:.2f}..{x['cpu_spread'][1]:.2f}] |")
    lines += ["", f"Ray deploy (two applications, to both ready): {r['ray_deploy_s']} s.", ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--concurrency", default="1,32")
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quiet-logs", action="store_true",
                    help="no access logs (Ray's nor the service's), Ray's replica logs not copied to stderr")
    ap.add_argument("--out", type=Path, default=RESULTS / "ray.json")
    args = ap.parse_args()
    if not in_private_network():
        return run_in_private_network([sys.executable, str(Path(__file__).resolve()), *sys.argv[1:]], timeout_s=3600)
    result = measure(args)
    args.out.write_text(json.dumps(result, indent=2))
    args.out.with_suffix(".md").write_text(report(result))
    print(report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
