"""The in-process limit: decode + preprocess + collate + forward of the real request, no HTTP, one thread.

For each batch size B it times B decodes/preprocesses and one forward pass of the batch, exactly the work the
service does per batch, with the same torch thread count the server uses. The best samples/s is "the limit".
It also times batch 1 with the core idle for 1 ms before each request, as it is between a lone client's requests
(the response's round trip): on a shared virtual machine a core that idles comes back to cold caches.

`--runtime` takes one or more runtimes (comma-separated), measured in the same run, taking turns at every batch
size and repeat so that the machine's drift affects all alike:
  torch, onnxruntime, auto   FUSION_RUNTIME's values (auto: what the service would choose; the name it chose is
                             reported)
  main                       eager torch with the log-mel front end of before issue 20 (torch.stft): the
                             baseline the runtime work is measured against

    python bench/inprocess.py --models-dir models --model digits --threads 1 --out bench/results/inprocess.json
    python bench/inprocess.py --runtime main,torch,onnxruntime --out bench/results/runtimes.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.config import Settings  # noqa: E402
from app.engine.config import EngineConfig  # noqa: E402
from app.engine.pipeline import prepare_sample  # noqa: E402
from app.engine.predictor import Predictor, resolve_device  # noqa: E402
from app.engine.runtime import RuntimeOptions  # noqa: E402
from app.inputs.parts import RawInputs  # noqa: E402
from app.inputs.preprocess import Preprocessor  # noqa: E402
from app.model.artifact import load_artifact  # noqa: E402
from bench.reference_logmel import use_reference_front_end  # noqa: E402

ASSETS = Path(__file__).parent / "assets"
IDLE_GAP_S = 0.001


def sample_inputs() -> RawInputs:
    return RawInputs(
        image=(ASSETS / "digit.png").read_bytes(),
        text=(ASSETS / "caption.txt").read_text(encoding="utf-8").strip(),
        audio=(ASSETS / "digit.wav").read_bytes(),
    )


def build(model_dir: Path, device: str, runtime: str, cache_dir: Path | None) -> Predictor:
    """A predictor as the service builds it for `runtime` (or, for `main`, eager torch with the stft front end)."""
    requested = "torch" if runtime == "main" else runtime
    predictor = Predictor(load_artifact(model_dir), resolve_device(device),
                          runtime=RuntimeOptions(requested=requested, cache_dir=cache_dir))
    if runtime == "main":
        use_reference_front_end(predictor.model)
    return predictor


def measure(model_dir: Path, threads: int, device: str, sizes: list[int], seconds: float, repeats: int,
            runtimes: list[str] | None = None, cache_dir: Path | None = None) -> dict:
    """The limit of each runtime (default: the service's default, auto), measured in turns."""
    if threads:
        torch.set_num_threads(threads)
    runtimes = runtimes or ["auto"]
    predictors = {r: build(model_dir, device, r, cache_dir) for r in runtimes}
    spec = next(iter(predictors.values())).spec
    pre = Preprocessor(spec)
    raw, limits = sample_inputs(), EngineConfig.from_settings(Settings()).limits

    def prepare():  # noqa: ANN202 - the service's own decode+preprocess
        return prepare_sample(pre, raw, limits)

    for predictor in predictors.values():
        predictor.warmup(max(sizes))
    runs: dict[str, dict[int, list[float]]] = {r: {b: [] for b in sizes} for r in runtimes}
    cpu: dict[str, dict[int, list[float]]] = {r: {b: [] for b in sizes} for r in runtimes}
    forward: dict[str, dict[int, list[float]]] = {r: {b: [] for b in sizes} for r in runtimes}
    for b in sizes:
        for _ in range(repeats):
            for r, predictor in predictors.items():
                n, t0, c0, f_cpu = 0, time.perf_counter(), time.process_time(), 0.0
                while time.perf_counter() - t0 < seconds:
                    samples = [prepare() for _ in range(b)]
                    f0 = time.process_time()  # the forward pass alone (collate, model, probabilities)
                    predictor.predict(samples)
                    f_cpu += time.process_time() - f0
                    n += b
                runs[r][b].append(n / (time.perf_counter() - t0))
                cpu[r][b].append((time.process_time() - c0) / n * 1e3)
                forward[r][b].append(f_cpu / n * 1e3)
        line = "  ".join(f"{r} {statistics.median(runs[r][b]):7.1f}" for r in runtimes)
        print(f"B={b:3d}: samples/s  {line}", flush=True)
    t_prep = time.perf_counter()
    for _ in range(50):
        prepare()
    prep_ms = (time.perf_counter() - t_prep) / 50 * 1e3
    results = {}
    for r, predictor in predictors.items():
        rows = []
        for b in sizes:
            samples = [prepare()] * b
            n_fwd = max(3, 100 // b)
            t_fwd = time.perf_counter()
            for _ in range(n_fwd):
                predictor.predict(samples)
            fwd_ms = (time.perf_counter() - t_fwd) / n_fwd * 1e3
            rows.append({
                "batch_size": b,
                "samples_per_s": statistics.median(runs[r][b]),
                "spread": [min(runs[r][b]), max(runs[r][b])],
                "cpu_ms_per_sample": statistics.median(cpu[r][b]),
                "forward_cpu_ms_per_sample": statistics.median(forward[r][b]),
                "forward_cpu_spread": [min(forward[r][b]), max(forward[r][b])],
                "prep_ms_per_sample": prep_ms,
                "forward_ms_per_batch": fwd_ms,
                "batch_ms": b * prep_ms + fwd_ms,
            })
        gapped = []
        if 1 in sizes:
            for _ in range(200):
                time.sleep(IDLE_GAP_S)
                t0 = time.perf_counter()
                predictor.predict([prepare()])
                gapped.append((time.perf_counter() - t0) * 1e3)
        best = max(rows, key=lambda row: row["samples_per_s"])
        best_forward = min(rows, key=lambda row: row["forward_cpu_ms_per_sample"])
        results[r] = {
            "model": model_dir.name,
            "runtime": "main (eager torch, stft front end)" if r == "main" else predictor.runtime.name,
            "runtime_report": asdict(predictor.runtime),
            "threads": torch.get_num_threads(),
            "device": str(predictor.device),
            "rows": rows,
            "limit_samples_per_s": best["samples_per_s"],
            "best_batch_size": best["batch_size"],
            "forward_limit_samples_per_s": 1e3 / best_forward["forward_cpu_ms_per_sample"],
            "forward_best_batch_size": best_forward["batch_size"],
            "batch1_ms": next(row["batch_ms"] for row in rows if row["batch_size"] == 1) if 1 in sizes else None,
            "batch1_after_idle_ms": statistics.median(gapped) if gapped else None,
        }
    if len(runtimes) == 1:
        return results[runtimes[0]]
    base = runtimes[0]
    ratios = {
        r: {str(b): statistics.median(runs[r][b]) / statistics.median(runs[base][b]) for b in sizes}
        for r in runtimes[1:]
    }
    # The runtimes took turns in every repeat: the ratio within each turn shows the spread of the ratio itself.
    ratio_spread = {
        r: {str(b): [min(x / y for x, y in zip(runs[r][b], runs[base][b])),
                     max(x / y for x, y in zip(runs[r][b], runs[base][b]))] for b in sizes}
        for r in runtimes[1:]
    }
    # The forward pass alone, by CPU time per sample: the baseline's over each runtime's, per turn.
    forward_ratio = {
        r: {str(b): [y / x for x, y in zip(forward[r][b], forward[base][b])] for b in sizes} for r in runtimes[1:]
    }
    return {"model": model_dir.name, "baseline": base, "runtimes": results, "ratio_to_baseline": ratios,
            "ratio_spread": ratio_spread,
            "forward_ratio_to_baseline": {
                r: {b: {"median": statistics.median(v), "spread": [min(v), max(v)]} for b, v in per.items()}
                for r, per in forward_ratio.items()},
            "forward_limit_ratio_to_baseline": {
                r: results[r]["forward_limit_samples_per_s"] / results[base]["forward_limit_samples_per_s"]
                for r in runtimes[1:]},
            "limit_ratio_to_baseline": {
                r: results[r]["limit_samples_per_s"] / results[base]["limit_samples_per_s"] for r in runtimes[1:]}}


def markdown(result: dict) -> str:
    """The runtimes side by side: samples/s (wall) and CPU ms per sample, and each one's ratio to the first."""
    base, runs = result["baseline"], result["runtimes"]
    names = list(runs)
    rows = {name: {row["batch_size"]: row for row in runs[name]["rows"]} for name in names}
    head = ["batch"] + [f"{n} samples/s (spread)" for n in names] + [f"{n} / {base} (spread)" for n in names[1:]]
    head += [f"{n} CPU ms/sample" for n in names] + [f"{n} / {base} by CPU time" for n in names[1:]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for b in rows[base]:
        cells = [str(b)]
        cells += [f"{rows[n][b]['samples_per_s']:.1f} ({rows[n][b]['spread'][0]:.0f}..{rows[n][b]['spread'][1]:.0f})"
                  for n in names]
        cells += [f"x{result['ratio_to_baseline'][n][str(b)]:.2f} (x{result['ratio_spread'][n][str(b)][0]:.2f}.."
                  f"x{result['ratio_spread'][n][str(b)][1]:.2f})" for n in names[1:]]
        cells += [f"{rows[n][b]['cpu_ms_per_sample']:.3f}" for n in names]
        cells += [f"x{rows[base][b]['cpu_ms_per_sample'] / rows[n][b]['cpu_ms_per_sample']:.2f}" for n in names[1:]]
        lines.append("| " + " | ".join(cells) + " |")
    best = {n: f"{runs[n]['limit_samples_per_s']:.1f} at batch {runs[n]['best_batch_size']}" for n in names}
    lines += ["", "Limit (best samples/s): " + "; ".join(f"{n} {v}" for n, v in best.items()) + "."]
    head = ["batch"] + [f"{n} forward CPU ms/sample (spread)" for n in names]
    head += [f"{n} / {base}, forward (per-turn spread)" for n in names[1:]]
    lines += ["", "The forward pass alone (collate, model, probabilities; the same turns, CPU time):", "",
              "| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for b in rows[base]:
        cells = [str(b)]
        for n in names:
            row = rows[n][b]
            low, high = row["forward_cpu_spread"]
            cells.append(f"{row['forward_cpu_ms_per_sample']:.3f} ({low:.3f}..{high:.3f})")
        for n in names[1:]:
            ratio = result["forward_ratio_to_baseline"][n][str(b)]
            cells.append(f"x{ratio['median']:.2f} (x{ratio['spread'][0]:.2f}..x{ratio['spread'][1]:.2f})")
        lines.append("| " + " | ".join(cells) + " |")
    best = {n: f"{runs[n]['forward_limit_samples_per_s']:.0f} samples/s at batch {runs[n]['forward_best_batch_size']}"
            for n in names}
    lines += ["", "Forward-only limit (best batch): " + "; ".join(f"{n} {v}" for n, v in best.items()) + "; "
              + "; ".join(f"{n} / {base} x{result['forward_limit_ratio_to_baseline'][n]:.2f}" for n in names[1:]) + "."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models-dir", type=Path, default=Path("models"))
    ap.add_argument("--model", default="digits")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sizes", default="1,2,4,8,16,32,64")
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--runtime", default="auto", help="comma-separated: main, torch, onnxruntime, auto")
    ap.add_argument("--cache-dir", type=Path, default=None, help="FUSION_RUNTIME_CACHE_DIR for the exports")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--markdown", type=Path, default=None, help="write the runtimes' table here (several runtimes)")
    args = ap.parse_args()
    result = measure(args.models_dir / args.model, args.threads, args.device,
                     [int(s) for s in args.sizes.split(",")], args.seconds, args.repeats,
                     args.runtime.split(","), args.cache_dir)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
    if args.markdown and "runtimes" in result:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(markdown(result))
    summary = result.get("runtimes", {"": result})
    for name, r in summary.items():
        print(json.dumps({"runtime": name or r["runtime"]} | {k: v for k, v in r.items() if k not in ("rows",)}))
    if "ratio_to_baseline" in result:
        print(json.dumps({k: result[k] for k in ("ratio_to_baseline", "ratio_spread", "limit_ratio_to_baseline",
                                                 "forward_ratio_to_baseline", "forward_limit_ratio_to_baseline")}))


if __name__ == "__main__":
    main()
