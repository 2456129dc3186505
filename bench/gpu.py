"""The GPU benchmark (bench/gpu.sh runs it after the gpu tests): the in-process limit at batch 1..1024 on the GPU,
then the real service under closed-loop load at concurrency 1..512, GPU utilisation sampled by nvidia-smi
throughout. Writes a Markdown report and the raw numbers as JSON.

    python bench/gpu.py --out bench/results/gpu-2026-12-01.md            # on a machine with a CUDA GPU
    python bench/gpu.py --device cpu --quick --out /tmp/gpu-smoke.md      # the same steps on CPU (a smoke run)
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import httpx
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import closedloop  # noqa: E402
from bench.inprocess import measure  # noqa: E402
from bench.run import Server, build_request, machine_info  # noqa: E402


class GpuSampler:
    """nvidia-smi sampling GPU utilisation (%) and memory used (MiB) every 200 ms while active."""

    def __init__(self) -> None:
        self.available = shutil.which("nvidia-smi") is not None
        self.util: list[float] = []
        self.memory: list[float] = []

    @contextmanager
    def sampling(self):  # noqa: ANN201 - a context manager yielding this sampler
        self.util, self.memory = [], []
        proc = None
        if self.available:
            proc = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits",
                 "-lms", "200", "-i", "0"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            )
        try:
            yield self
        finally:
            if proc is not None:
                proc.terminate()
                out, _ = proc.communicate(timeout=10)
                for line in out.splitlines():
                    fields = [f.strip() for f in line.split(",")]
                    if len(fields) == 2 and all(re.fullmatch(r"[0-9.]+", f) for f in fields):
                        self.util.append(float(fields[0]))
                        self.memory.append(float(fields[1]))

    def summary(self) -> dict:
        if not self.util:
            return {"gpu_util_mean": None, "gpu_util_max": None, "gpu_mem_max_mib": None}
        return {"gpu_util_mean": statistics.fmean(self.util), "gpu_util_max": max(self.util),
                "gpu_mem_max_mib": max(self.memory)}


def gpu_info() -> str:
    if shutil.which("nvidia-smi") is None:
        return "no nvidia-smi on this machine"
    out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True)
    return out.stdout.strip() or out.stderr.strip()


def inprocess(args: argparse.Namespace, sampler: GpuSampler) -> dict:
    sizes = [int(s) for s in args.sizes.split(",")]
    with sampler.sampling():
        result = measure(args.models_dir / args.model, 0, args.device, sizes, args.inprocess_seconds, 1)
    result["gpu"] = sampler.summary()
    for row in result["rows"]:
        row["forward_samples_per_s"] = row["batch_size"] / row["forward_ms_per_batch"] * 1e3
    return result


class Service(Server):
    """The service under test, on the server's cores (with 8 or more, the last four are the load generator's)."""

    def __init__(self, args: argparse.Namespace, max_batch: int) -> None:
        cores = sorted(os.sched_getaffinity(0))
        self.client_cores = cores[-4:] if len(cores) >= 8 else cores
        server_cores = cores[:-4] if len(cores) >= 8 else cores
        super().__init__(
            args.port, args.models_dir, args.model, env={
                "FUSION_DEVICE": args.device,
                "FUSION_HOST": "127.0.0.1",
                "FUSION_WORKERS": str(args.workers),
                "FUSION_TORCH_THREADS": "0",
                "FUSION_MAX_BATCH_SIZE": str(max_batch),
                "FUSION_MAX_QUEUE_SIZE": "4096",
                "FUSION_MAX_INFLIGHT_REQUESTS": "4096",
                "FUSION_LOG_LEVEL": "warning",
            },
            pin=",".join(map(str, server_cores)) if shutil.which("taskset") else None,
            ready_timeout_s=args.ready_timeout, log_path=args.work / "service.log",
        )
        self.model = httpx.get(f"{self.url}/v1/models/{args.model}").json()


def service(args: argparse.Namespace, sampler: GpuSampler, limit: float) -> dict:
    conc = [int(c) for c in args.concurrency.split(",")]
    body_path, ctype = build_request("http://127.0.0.1")
    body = body_path.read_bytes()
    srv = Service(args, max(int(s) for s in args.sizes.split(",")))
    rows = []
    try:
        for c in conc:
            h0 = srv.batch_hist()
            with sampler.sampling():
                row = closedloop.run(f"{srv.url}/v1/predict", body, ctype, c, args.seconds,
                                     processes=min(len(srv.client_cores), max(1, c // 16)))
            h1 = srv.batch_hist()
            batches = h1["count"] - h0["count"]
            row["mean_batch"] = (h1["sum"] - h0["sum"]) / batches if batches else 0.0
            row["share_of_limit"] = row["rps"] / limit if limit else None
            row.update(sampler.summary())
            rows.append(row)
            util = row["gpu_util_mean"]
            print(f"service c={c}: {row['rps']:.1f} req/s p50 {row['p50_ms']:.1f} p99 {row['p99_ms']:.1f} ms, "
                  f"batch {row['mean_batch']:.1f}, errors {row['errors']}, GPU "
                  f"{'n/a' if util is None else f'{util:.0f}%'}", flush=True)
    finally:
        srv.stop()
    return {"ready_s": srv.ready_s, "workers": args.workers, "model": srv.model, "closed": rows}


def fmt(x: float | None, spec: str = ".1f") -> str:
    return "n/a" if x is None else format(x, spec)


def report(r: dict) -> str:
    ip, m = r["inprocess"], r["machine"]
    rows = ip["rows"]
    one = next(row for row in rows if row["batch_size"] == 1)
    best_fwd = max(rows, key=lambda row: row["forward_samples_per_s"])
    lines = [
        f"# GPU benchmark, {m['date']}",
        "",
        f"GPU: {r['gpu']}. CPU: {m['cpu']} ({m['cores']} cores). torch {m['torch']}, CUDA {r['cuda']}. "
        f"Model `{ip['model']}`, device `{ip['device']}`, runtime `{ip['runtime']}`.",
        "",
        "## gpu tests",
        "",
        "```",
        r.get("tests", "(not run)").strip(),
        "```",
        "",
        "## In-process limit (decode + preprocess on one CPU thread, then the batch's forward pass on the device)",
        "",
        "| batch | samples/s (with decode) | gain over batch 1 | forward ms/batch | forward-only samples/s | "
        "forward gain over batch 1 |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['batch_size']} | {row['samples_per_s']:.1f} | x{row['samples_per_s'] / one['samples_per_s']:.2f} "
            f"| {row['forward_ms_per_batch']:.2f} | {row['forward_samples_per_s']:.0f} | "
            f"x{row['forward_samples_per_s'] / one['forward_samples_per_s']:.1f} |")
    gpu = ip["gpu"]
    lines += [
        "",
        f"The limit: **{ip['limit_samples_per_s']:.1f} samples/s** at batch {ip['best_batch_size']} (decoding included: "
        f"one CPU thread decodes every sample, so it bounds this number); the forward pass alone peaks at "
        f"{best_fwd['forward_samples_per_s']:.0f} samples/s at batch {best_fwd['batch_size']} "
        f"(x{best_fwd['forward_samples_per_s'] / one['forward_samples_per_s']:.1f} batch 1's). GPU utilisation over "
        f"the in-process run: mean {fmt(gpu['gpu_util_mean'])}%, max {fmt(gpu['gpu_util_max'])}%, memory max "
        f"{fmt(gpu['gpu_mem_max_mib'], '.0f')} MiB.",
        "",
    ]
    svc = r.get("service")
    if svc:
        rt = svc["model"].get("runtime", {})
        lines += [
            f"## Service, closed loop (bench/closedloop.py), {svc['workers']} worker(s)",
            "",
            f"Ready in {svc['ready_s']:.1f} s; device {svc['model'].get('device')}, runtime {rt.get('name')} "
            f"({rt.get('note') or 'as requested'}). Share of limit: req/s over the in-process limit above.",
            "",
            "| concurrency | req/s | share of limit | p50 ms | p90 ms | p99 ms | errors | mean batch | GPU util mean "
            "| GPU util max | GPU mem max MiB |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in svc["closed"]:
            lines.append(
                f"| {row['connections']} | {row['rps']:.1f} | {fmt(row['share_of_limit'], '.2f')} | "
                f"{row['p50_ms']:.1f} | {row['p90_ms']:.1f} | {row['p99_ms']:.1f} | {row['errors']} | "
                f"{row['mean_batch']:.1f} | {fmt(row['gpu_util_mean'], '.0f')} | {fmt(row['gpu_util_max'], '.0f')} | "
                f"{fmt(row['gpu_mem_max_mib'], '.0f')} |")
        base = svc["closed"][0]["rps"]
        top = max(svc["closed"], key=lambda row: row["rps"])
        if base:
            lines += ["", f"Batching gain in the service: {top['rps']:.1f} req/s at concurrency "
                          f"{top['connections']} against {base:.1f} at concurrency 1 (x{top['rps'] / base:.1f})."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models-dir", type=Path, default=ROOT / "models")
    ap.add_argument("--model", default="digits")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--sizes", default="1,2,4,8,16,32,64,128,256,512,1024")
    ap.add_argument("--concurrency", default="1,8,32,128,512")
    ap.add_argument("--seconds", type=float, default=8.0, help="per service point")
    ap.add_argument("--inprocess-seconds", type=float, default=1.0, help="per in-process batch size")
    ap.add_argument("--workers", type=int, default=int(os.environ.get("WORKERS", "1")))
    ap.add_argument("--port", type=int, default=8124)
    ap.add_argument("--ready-timeout", type=float, default=180.0)
    ap.add_argument("--tests", type=Path, default=None, help="a file holding the gpu tests' summary, quoted")
    ap.add_argument("--quick", action="store_true", help="small sizes, 2 s points (a smoke run)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    if args.quick:
        args.sizes, args.concurrency, args.seconds, args.inprocess_seconds = "1,2,4,8", "1,8", 2.0, 0.3
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device: run with --device cpu for a smoke run")
    args.work = ROOT / "bench" / "work"
    args.work.mkdir(parents=True, exist_ok=True)
    sampler = GpuSampler()
    result: dict = {"machine": machine_info(), "gpu": gpu_info(),
                    "cuda": torch.version.cuda if torch.cuda.is_available() else None}
    if args.tests and args.tests.is_file():
        result["tests"] = args.tests.read_text()
    print("in-process limit ...", flush=True)
    result["inprocess"] = inprocess(args, sampler)
    print("service ...", flush=True)
    try:
        result["service"] = service(args, sampler, result["inprocess"]["limit_samples_per_s"])
    except Exception as exc:  # noqa: BLE001 - the in-process numbers are worth keeping when the service fails
        result["service_error"] = repr(exc)
        print(f"service failed: {exc!r}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    text = report(result)
    if "service_error" in result:
        text += f"\nThe service run failed: `{result['service_error']}` (bench/work/service.log).\n"
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
