"""What explaining costs: the same request with and without `?explain=true`, on one server, interleaved.

`python bench/explain.py` starts this checkout's service (pinned to core 0, one torch thread, the shipped model)
and drives it with wrk from core 1 with README's three-input request, at each concurrency alternating plain and
explained runs for `--rounds` rounds, so the machine's drift affects both alike. It reports the median req/s, p50
and server CPU per request of each, and explained/plain per round with its spread (CPU per request is the steadier
figure on a shared machine), and the requests per batch the server formed. Writes bench/results/explain.md and
explain.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from run import RESULTS, ROOT, Server, build_request, machine_info, wrk

MODES = {"plain": "/v1/predict", "explained": "/v1/predict?explain=true"}
KEYS = ("rps", "p50_ms", "p99_ms", "cpu_ms_per_request", "mean_batch")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models-dir", type=Path, default=ROOT / "models")
    ap.add_argument("--model", default="digits")
    ap.add_argument("--concurrency", default="1,32")
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--port", type=int, default=8133)
    args = ap.parse_args()
    body, ctype = build_request("http://127.0.0.1")
    result: dict = {"machine": machine_info(), "args": {k: str(v) for k, v in vars(args).items()}, "points": {}}
    server = Server(args.port, args.models_dir, args.model, {}, source=ROOT)
    try:
        for c in (int(x) for x in args.concurrency.split(",")):
            runs: dict[str, list[dict]] = {mode: [] for mode in MODES}
            for rnd in range(args.rounds):
                order = list(MODES) if rnd % 2 == 0 else list(reversed(MODES))  # neither mode always goes first
                for mode in order:
                    row = wrk(server, body, ctype, c, args.seconds, path=MODES[mode])
                    runs[mode].append(row)
                    print(f"c={c} round {rnd} {mode}: {row['rps']:.1f} req/s p50 {row['p50_ms']:.2f} ms "
                          f"cpu {row['cpu_ms_per_request']:.2f} ms/req batch {row['mean_batch']:.1f} "
                          f"errors {row['errors']}", flush=True)
            result["points"][c] = summarise(runs)
    finally:
        server.stop()
    result["machine"]["load_after"] = open("/proc/loadavg").read().split()[:3]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "explain.json").write_text(json.dumps(result, indent=2))
    (RESULTS / "explain.md").write_text(report(result))
    print(report(result))


def summarise(runs: dict[str, list[dict]]) -> dict:
    out: dict = {mode: {k: statistics.median(r[k] for r in rows) for k in KEYS} for mode, rows in runs.items()}
    out["errors"] = sum(r["errors"] for rows in runs.values() for r in rows)
    for key in ("rps", "p50_ms", "cpu_ms_per_request"):
        ratios = [e[key] / p[key] for p, e in zip(runs["plain"], runs["explained"])]
        out[f"{key}_ratio"] = {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}
    out["runs"] = runs
    return out


def report(r: dict) -> str:
    m = r["machine"]
    lines = [
        "# Explaining: cost of `?explain=true`",
        "",
        f"{m['date']}, {m['cpu']}, {m['cores']} cores, torch {m['torch']}; load average before "
        f"{' '.join(m['load_before'])}, after {' '.join(m.get('load_after', []))}. Server pinned to core 0 "
        "(one torch thread), wrk on core 1; README's three-input request to the shipped model; "
        f"{r['args']['rounds']} rounds of {r['args']['seconds']} s per mode and concurrency, the modes alternating.",
        "",
        "| concurrency | mode | req/s | p50 ms | p99 ms | server CPU ms/request | requests/batch |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for c, point in r["points"].items():
        for mode in MODES:
            x = point[mode]
            lines.append(f"| {c} | {mode} | {x['rps']:.0f} | {x['p50_ms']:.1f} | {x['p99_ms']:.1f} | "
                         f"{x['cpu_ms_per_request']:.2f} | {x['mean_batch']:.1f} |")
    lines += ["", "Explained / plain, median of the rounds (min..max):", ""]
    for c, point in r["points"].items():
        parts = [f"{name} {point[key]['median']:.2f}x ({point[key]['min']:.2f}..{point[key]['max']:.2f})"
                 for name, key in (("CPU per request", "cpu_ms_per_request_ratio"), ("req/s", "rps_ratio"),
                                   ("p50", "p50_ms_ratio"))]
        lines.append(f"- concurrency {c}: " + ", ".join(parts) + f"; errors {point['errors']}")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"took {time.perf_counter() - t0:.0f} s", file=sys.stderr)
