"""Large uploads among small ones, A/B: two checkouts served in turn (default settings: a worker per core,
unpinned, wrk on the same cores), small requests at concurrency 8 alone and then with 12-megapixel phone photos
arriving at 2 per second (open loop), alternating A, B, A, B... for `--rounds` rounds so that the machine's drift
hits both alike. Prints and writes each round's small-request p99 and throughput, alone and with photos, and the
rise (with / alone) per server: the figure issue 19 asks to keep within x1.2.

    python bench/photo_mix.py --a <older checkout> --b . --rounds 4 --out bench/results/photo_mix.json
"""
from __future__ import annotations

import json
import statistics

from ab import ab_arguments
from run import WORK, Server, build_request
from scaling import UNPINNED, photo_body, photo_mix


def main() -> None:
    ap = ab_arguments(__doc__ or "", port=8160)
    args = ap.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    body, ctype = build_request("http://127.0.0.1")
    photo, photo_ctype = photo_body("http://127.0.0.1")
    rounds: dict[str, list[dict]] = {"a": [], "b": []}
    for r in range(args.rounds):
        for label in ("a", "b"):
            source = getattr(args, label).resolve()
            server = Server(args.port, args.models_dir, args.model, dict(UNPINNED), source=source, pin=None)
            try:
                mix = photo_mix(server, body, ctype, photo, photo_ctype, args.seconds)
            finally:
                server.stop()
            alone, mixed, photos = mix["alone"], mix["with_photos"], mix["photos"]
            row = {"alone_p99_ms": alone["p99_ms"], "with_photos_p99_ms": mixed["p99_ms"], "alone_rps": alone["rps"],
                   "with_photos_rps": mixed["rps"], "rise": mixed["p99_ms"] / alone["p99_ms"],
                   "photo_statuses": photos.get("statuses"), "photo_latency_ms": photos.get("latency_ms")}
            rounds[label].append(row)
            print(f"round {r} {label}: small p99 {row['alone_p99_ms']:.1f} -> {row['with_photos_p99_ms']:.1f} ms "
                  f"(x{row['rise']:.2f}), req/s {row['alone_rps']:.0f} -> {row['with_photos_rps']:.0f}, "
                  f"photos {row['photo_statuses']}", flush=True)
    summary = {label: {"rise_median": statistics.median(x["rise"] for x in rows),
                       "rise_spread": [min(x["rise"] for x in rows), max(x["rise"] for x in rows)],
                       "alone_p99_ms": statistics.median(x["alone_p99_ms"] for x in rows),
                       "with_photos_p99_ms": statistics.median(x["with_photos_p99_ms"] for x in rows)}
               for label, rows in rounds.items()}
    for label, s in summary.items():
        print(f"{label}: p99 rise x{s['rise_median']:.2f} (x{s['rise_spread'][0]:.2f}..x{s['rise_spread'][1]:.2f}), "
              f"{s['alone_p99_ms']:.1f} -> {s['with_photos_p99_ms']:.1f} ms")
    if args.out:
        args.out.write_text(json.dumps({"a": str(args.a), "b": str(args.b), "rounds": rounds, "summary": summary},
                                       indent=2))


if __name__ == "__main__":
    main()
