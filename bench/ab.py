"""A/B: two versions of the service under the same load, interleaved, on this machine.

`python bench/ab.py --a PATH --b PATH`: each PATH is a checkout whose `app` is served (e.g. a `git worktree` of an
older commit, and this one). The two servers are started in turn and measured with wrk at each concurrency,
alternating A, B, A, B... for `--rounds` rounds, so the machine's drift affects both alike. Prints (and with
`--out`, writes as JSON) the median req/s, p50/p99 and server CPU per request of each, and B/A per round with its
spread. On a busy machine, CPU per request is the steadier of the figures.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from run import ROOT, Server, build_request, wrk


def ab_arguments(doc: str, port: int) -> argparse.ArgumentParser:
    """The arguments every A/B script takes: the two checkouts, the model, the run's length, where to write."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", type=Path, required=True, help="checkout served as A")
    ap.add_argument("--b", type=Path, required=True, help="checkout served as B")
    ap.add_argument("--models-dir", type=Path, default=ROOT / "models")
    ap.add_argument("--model", default="digits")
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--port", type=int, default=port)
    ap.add_argument("--out", type=Path)
    return ap


def main() -> None:
    ap = ab_arguments(__doc__ or "", port=8131)
    ap.add_argument("--concurrency", default="1,32")
    args = ap.parse_args()
    body, ctype = build_request("http://127.0.0.1")
    runs: dict[str, dict[int, list[dict]]] = {"a": {}, "b": {}}
    for rnd in range(args.rounds):
        for label in ("a", "b"):
            server = Server(args.port, args.models_dir, args.model, {}, source=getattr(args, label).resolve())
            try:
                for c in (int(x) for x in args.concurrency.split(",")):
                    row = wrk(server, body, ctype, c, args.seconds)
                    runs[label].setdefault(c, []).append(row)
                    print(f"round {rnd} {label} c={c}: {row['rps']:.1f} req/s p50 {row['p50_ms']:.2f} "
                          f"p99 {row['p99_ms']:.2f} cpu {row['cpu_ms_per_request']:.2f} ms/req "
                          f"errors {row['errors']}", flush=True)
            finally:
                server.stop()
    summary = {}
    for c in runs["a"]:
        a, b = runs["a"][c], runs["b"][c]
        ratios = [rb["rps"] / ra["rps"] for ra, rb in zip(a, b)]
        summary[c] = {
            label: {k: statistics.median(r[k] for r in rows) for k in ("rps", "p50_ms", "p99_ms", "cpu_ms_per_request")}
            for label, rows in (("a", a), ("b", b))
        } | {"b_over_a": statistics.median(ratios), "ratio_spread": [min(ratios), max(ratios)]}
        s = summary[c]
        print(f"c={c}: A {s['a']['rps']:.1f} req/s (p50 {s['a']['p50_ms']:.2f}, p99 {s['a']['p99_ms']:.2f}, "
              f"cpu {s['a']['cpu_ms_per_request']:.2f} ms/req) | B {s['b']['rps']:.1f} req/s (p50 "
              f"{s['b']['p50_ms']:.2f}, p99 {s['b']['p99_ms']:.2f}, cpu {s['b']['cpu_ms_per_request']:.2f} ms/req) | "
              f"B/A {s['b_over_a']:.3f} ({min(ratios):.3f}..{max(ratios):.3f})")
    if args.out:
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "summary": summary,
                                        "runs": runs}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
