"""One command for the whole benchmark: `python bench/run.py` (see bench/README.md).

1. The in-process limit (bench/inprocess.py) on the server's core, with the server's thread settings.
2. The service (a real `fusion-serve serve` process pinned to core 0) under load from wrk pinned to core 1:
   closed loop at several concurrencies, each point repeated; then the same with batching off (max_batch_size=1).
3. Open loop (bench/openloop.py, Poisson arrivals) at 50%, 90% and 120% of the measured capacity.
4. Startup time to /readyz 200, RSS at idle and under load, CPU per request, the batch sizes the server formed.

Results: bench/results/latest.md (+ latest.json).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import torch

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
WORK = BENCH / "work"
SERVER_CORE, CLIENT_CORE = "0", "1"


def machine_info() -> dict:
    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "load_before": open("/proc/loadavg").read().split()[:3],
    }


def build_request(url_host: str) -> tuple[Path, str]:
    """The benchmark request (bench/assets: a digit image, a caption, a spoken digit) as a multipart body file."""
    req = httpx.Request(
        "POST",
        f"{url_host}/v1/predict",
        files={
            "image": ("digit.png", (BENCH / "assets/digit.png").read_bytes(), "image/png"),
            "text": (None, (BENCH / "assets/caption.txt").read_text().strip()),
            "audio": ("digit.wav", (BENCH / "assets/digit.wav").read_bytes(), "audio/wav"),
        },
    )
    WORK.mkdir(parents=True, exist_ok=True)
    body = WORK / "body.bin"
    body.write_bytes(req.read())
    return body, req.headers["content-type"]


class Server:
    """A real service process pinned to one core."""

    def __init__(
        self, port: int, models_dir: Path, model: str, env: dict[str, str], source: Path | None = None,
        pin: str | None = SERVER_CORE, ready_timeout_s: float = 120, log_path: Path | None = None,
    ) -> None:
        """`source`: a checkout whose `app` to serve (another version, for A/B runs); default the installed one.
        `pin`: the cores it runs on (taskset); None: wherever the kernel puts it. `log_path`: where its output
        goes (default: nowhere)."""
        self.url = f"http://127.0.0.1:{port}"
        full_env = {
            **os.environ,
            "FUSION_MODELS_DIR": str(models_dir),
            "FUSION_DEFAULT_MODEL": model,
            "FUSION_TORCH_THREADS": "1",
            "FUSION_PORT": str(port),
            **env,
        }
        exe = shutil.which("fusion-serve") or str(Path(sys.executable).parent / "fusion-serve")
        command = [exe, "serve"] if source is None else [sys.executable, "-m", "app.cli", "serve"]
        t0 = time.perf_counter()
        self.log = open(log_path, "w") if log_path else subprocess.DEVNULL  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [*pinned(pin), *command], env=full_env, stdout=self.log, stderr=subprocess.STDOUT, cwd=source,
        )
        while True:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.perf_counter() - t0 > ready_timeout_s:
                self.stop()
                raise RuntimeError(f"server did not become ready{f'; see {log_path}' if log_path else ''}")
            time.sleep(0.05)
        self.ready_s = time.perf_counter() - t0

    def cpu_s(self) -> float:
        """CPU time of the service: its process, and every process it started (workers, model owners)."""
        return sum(_cpu_s(pid) for pid in [self.proc.pid, *_descendants(self.proc.pid)])

    def rss_mib(self, key: str = "VmRSS") -> float:
        for line in open(f"/proc/{self.proc.pid}/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def batch_hist(self) -> dict[str, float]:
        text = httpx.get(f"{self.url}/metrics").text
        out = {}
        for m in re.finditer(r'^fusion_batch_size_requests_bucket\{.*?le="([^"]+)".*?\} ([0-9.e+]+)$', text, re.M):
            out[m.group(1)] = float(m.group(2))
        for name in ("sum", "count"):
            m = re.search(rf"^fusion_batch_size_requests_{name}\{{.*?\}} ([0-9.e+]+)$", text, re.M)
            out[name] = float(m.group(1)) if m else 0.0
        return out

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        if self.log is not subprocess.DEVNULL:
            self.log.close()


def _ms(value: str) -> float:
    num, unit = re.match(r"([0-9.]+)(us|ms|s)", value).groups()  # type: ignore[union-attr]
    return float(num) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def pinned(cores: str | None) -> list[str]:
    return [] if cores is None else ["taskset", "-c", cores]


def _cpu_s(pid: int) -> float:
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _descendants(pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    children.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    return [p for c in children for p in (c, *_descendants(c))]


def wrk(
    server: Server, body: Path, ctype: str, conns: int, seconds: int, pin: str | None = CLIENT_CORE,
    path: str = "/v1/predict",
) -> dict:
    script = WORK / "post.lua"
    script.write_text(
        'local f = io.open(os.getenv("BENCH_BODY"), "rb"); local body = f:read("*all"); f:close()\n'
        'wrk.method = "POST"; wrk.body = body; wrk.headers["Content-Type"] = os.getenv("BENCH_CTYPE")\n'
    )
    env = {**os.environ, "BENCH_BODY": str(body), "BENCH_CTYPE": ctype}
    h0, c0 = server.batch_hist(), server.cpu_s()
    out = subprocess.run(
        [*pinned(pin), "wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "-s", str(script), "--latency",
         f"{server.url}{path}"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout
    c1, h1 = server.cpu_s(), server.batch_hist()
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    lat = {p: _ms(v) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", out, re.M)}
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    batches = h1["count"] - h0["count"]
    dist = {}
    prev = 0.0
    for le in sorted((k for k in h1 if k not in ("sum", "count", "+Inf")), key=float):
        n = (h1[le] - h0.get(le, 0.0)) - prev
        prev += n
        dist[le] = int(n)
    return {
        "concurrency": conns,
        "requests": total,
        "rps": float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": lat.get("50"),
        "p90_ms": lat.get("90"),
        "p99_ms": lat.get("99"),
        "errors": (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, sock.groups())) if sock else 0),
        "cpu_ms_per_request": (c1 - c0) * 1e3 / max(total, 1),
        "mean_batch": (h1["sum"] - h0["sum"]) / batches if batches else 0.0,
        "batch_hist": dist,
        "rss_mib": server.rss_mib(),
    }


def openloop(server: Server, body: Path, ctype: str, rate: float, seconds: int, path: str = "/v1/predict") -> dict:
    cmd = ["taskset", "-c", CLIENT_CORE, sys.executable, str(BENCH / "openloop.py"), "--url", f"{server.url}{path}",
           "--rate", str(rate), "--duration", str(seconds)]
    if path == "/v1/predict":
        cmd += ["--body", str(body), "--content-type", ctype]
    h0 = server.batch_hist()
    res = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    h1 = server.batch_hist()
    batches = h1["count"] - h0["count"]
    res["mean_batch"] = (h1["sum"] - h0["sum"]) / batches if batches else 0.0
    return res


def median_row(runs: list[dict]) -> dict:
    """The run with the median throughput, plus the spread of throughput across runs."""
    ordered = sorted(runs, key=lambda r: r.get("rps", r.get("completed_rate", 0)))
    mid = dict(ordered[len(ordered) // 2])
    key = "rps" if "rps" in mid else "completed_rate"
    mid["spread"] = [ordered[0][key], ordered[-1][key]]
    return mid


def inprocess_limit(args: argparse.Namespace, sizes: str) -> dict:
    """bench/inprocess.py on the server's core, with the server's thread settings."""
    out = WORK / "inprocess.json"
    run = subprocess.run(
        ["taskset", "-c", SERVER_CORE, sys.executable, str(BENCH / "inprocess.py"), "--models-dir",
         str(args.models_dir), "--model", args.model, "--threads", "1", "--seconds", "2", "--sizes", sizes,
         "--repeats", str(args.repeats), "--out", str(out)],
        capture_output=True, text=True, check=True,
    )
    print(run.stdout, flush=True)
    return json.loads(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models-dir", type=Path, default=ROOT / "models")
    ap.add_argument("--model", default="digits")
    ap.add_argument("--concurrency", default="1,8,32,64,128")
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--port", type=int, default=8123)
    ap.add_argument("--quick", action="store_true", help="1 repeat, 5 s points (smoke run)")
    args = ap.parse_args()
    if args.quick:
        args.seconds, args.repeats = 5, 1
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install wrk")
    RESULTS.mkdir(parents=True, exist_ok=True)
    conc = [int(c) for c in args.concurrency.split(",")]
    result: dict = {"machine": machine_info(), "settings": vars(args) | {"models_dir": str(args.models_dir)}}

    print("in-process limit ...", flush=True)
    result["inprocess"] = inprocess_limit(args, "1,2,4,8,16,32,64")

    body, ctype = build_request("http://127.0.0.1")
    for label, env in (("batched", {}), ("baseline", {"FUSION_MAX_BATCH_SIZE": "1"})):
        server = Server(args.port, args.models_dir, args.model, env)
        try:
            section: dict = {"ready_s": server.ready_s, "rss_idle_mib": server.rss_mib(), "closed": []}
            for c in conc:
                runs = [wrk(server, body, ctype, c, args.seconds) for _ in range(args.repeats)]
                row = median_row(runs)
                section["closed"].append(row)
                print(f"{label} c={c}: {row['rps']:.1f} req/s p50 {row['p50_ms']:.1f} p99 {row['p99_ms']:.1f} ms "
                      f"batch {row['mean_batch']:.1f} cpu {row['cpu_ms_per_request']:.2f} ms/req", flush=True)
            section["rss_peak_mib"] = server.rss_mib("VmHWM")
            if label == "batched":
                capacity = max(r["rps"] for r in section["closed"])
                section["capacity_rps"] = capacity
                section["generator_check"] = openloop(server, body, ctype, 1.2 * capacity, args.seconds, "/healthz")
                section["open"] = []
                for frac in (0.5, 0.9, 1.2):
                    runs = [openloop(server, body, ctype, frac * capacity, args.seconds) for _ in range(args.repeats)]
                    row = median_row(runs) | {"load": frac}
                    section["open"].append(row)
                    lat = row["latency_ms"]
                    print(f"open {frac:.0%}: {row['completed_rate']:.1f} req/s p50 {lat['p50']:.1f} "
                          f"p99 {lat['p99']:.1f} ms {row['statuses']}", flush=True)
            result[label] = section
        finally:
            server.stop()
    # This machine's speed drifts (other tenants): the limit again, at the end, bounds the drift over the run.
    print("in-process limit again ...", flush=True)
    result["inprocess_after"] = inprocess_limit(args, f"1,{result['inprocess']['best_batch_size']}")
    result["machine"]["load_after"] = open("/proc/loadavg").read().split()[:3]
    (RESULTS / "latest.json").write_text(json.dumps(result, indent=2))
    (RESULTS / "latest.md").write_text(report(result))
    print(f"wrote {RESULTS / 'latest.md'}")


def report(r: dict) -> str:
    m, ip, after, b, base = r["machine"], r["inprocess"], r["inprocess_after"], r["batched"], r["baseline"]
    after_limit = next(x["samples_per_s"] for x in after["rows"] if x["batch_size"] == ip["best_batch_size"])
    limit = (ip["limit_samples_per_s"] + after_limit) / 2
    lines = [
        "# fusion-serve benchmark",
        "",
        f"{m['date']} · {m['cpu']} · {m['cores']} cores · Python {m['python']} · torch {m['torch']} · "
        f"load average before {' '.join(m['load_before'])}, after {' '.join(m['load_after'])}",
        "",
        f"Server pinned to core {SERVER_CORE} (torch 1 thread), load generator to core {CLIENT_CORE}. "
        f"Model `{r['settings']['model']}`. Each point: median of {r['settings']['repeats']} runs of "
        f"{r['settings']['seconds']} s (spread = min..max req/s).",
        "",
        "## In-process limit (decode + preprocess + collate + forward, one thread, no HTTP)",
        "",
        "| batch | samples/s | spread | prep ms/sample | forward ms/batch |",
        "|---:|---:|---:|---:|---:|",
        *[f"| {x['batch_size']} | {x['samples_per_s']:.1f} | {x['spread'][0]:.0f}..{x['spread'][1]:.0f} | "
          f"{x['prep_ms_per_sample']:.2f} | {x['forward_ms_per_batch']:.2f} |" for x in ip["rows"]],
        "",
        f"**The limit: {ip['limit_samples_per_s']:.1f} samples/s** (batch {ip['best_batch_size']}) before the service "
        f"runs, {after_limit:.1f} after them; the shares below are of their mean, {limit:.1f}. Batch-1 latency "
        f"{ip['batch1_ms']:.2f} ms before, {after['batch1_ms']:.2f} ms after; {ip['batch1_after_idle_ms']:.2f} ms "
        "when the core has idled 1 ms before each request (as between a lone client's requests).",
        "",
        "## Service, closed loop (wrk)",
        "",
        "| mode | concurrency | req/s | spread | share of limit | p50 ms | p90 ms | p99 ms | errors | mean batch | "
        "CPU ms/req |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, sec in (("batched", b), ("batch off", base)):
        for x in sec["closed"]:
            lines.append(
                f"| {label} | {x['concurrency']} | {x['rps']:.1f} | {x['spread'][0]:.0f}..{x['spread'][1]:.0f} | "
                f"{x['rps'] / limit:.2f} | {x['p50_ms']:.1f} | {x['p90_ms']:.1f} | {x['p99_ms']:.1f} | {x['errors']} | "
                f"{x['mean_batch']:.1f} | {x['cpu_ms_per_request']:.2f} |"
            )
    lines += ["", "Batch sizes formed (batched mode; bucket upper bound: batches):", ""]
    for x in b["closed"]:
        hist = ", ".join(f"≤{float(k):g}: {v}" for k, v in x["batch_hist"].items() if v)
        lines.append(f"- concurrency {x['concurrency']}: {hist}")
    lines += [
        "",
        "## Service, open loop (Poisson arrivals, latency from the scheduled send time)",
        "",
        f"Capacity = best closed-loop req/s = {b['capacity_rps']:.1f}.",
        "",
        "| offered load | offered req/s | completed req/s | p50 ms | p90 ms | p99 ms | statuses | mean batch |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for x in b["open"]:
        lat = x["latency_ms"]
        lines.append(
            f"| {x['load']:.0%} | {x['target_rate']:.1f} | {x['completed_rate']:.1f} | {lat['p50']:.1f} | "
            f"{lat['p90']:.1f} | {lat['p99']:.1f} | {x['statuses']} | {x['mean_batch']:.1f} |"
        )
    g = b["generator_check"]
    lines += [
        "",
        f"Generator check: the same open-loop generator against `GET /healthz` at {g['target_rate']:.0f} req/s "
        f"completed {g['completed_rate']:.1f} req/s with p99 {g['latency_ms']['p99']:.2f} ms, so at these rates it "
        "is not the bottleneck.",
        "",
        "## Memory and startup",
        "",
        f"- start to /readyz 200: {b['ready_s']:.2f} s (batched), {base['ready_s']:.2f} s (batch off)",
        f"- RSS idle {b['rss_idle_mib']:.0f} MiB, peak under load {b['rss_peak_mib']:.0f} MiB",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
