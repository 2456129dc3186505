"""Load-test the Open Inference Protocol endpoint with Triton's perf_analyzer and record its table as markdown.

    bench/get_perf_analyzer.sh                  # once: fetch perf_analyzer into bench/work/
    .venv/bin/python bench/oip_perf_analyzer.py # serve, measure, write bench/results/oip_perf_analyzer.md

The service runs as its own process (`python -m app.cli serve`, default settings unless FUSION_* says otherwise) on
the models in --models-dir; without one, on a model with the default `fusion-serve train` architecture (the digits
model's) and random weights, which costs the same to run. perf_analyzer sends real files (PNG, WAV, text) as binary
BYTES tensors, one sample per request and eight per request, at rising concurrency.
"""
from __future__ import annotations

import argparse
import base64
import csv
import io
import json
import os
import platform
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.model.artifact import is_artifact_dir, save_artifact  # noqa: E402
from app.model.classifier import FusionClassifier  # noqa: E402
from app.model.spec import ArtifactSpec, AudioSpec, FusionSpec, ImageSpec, TextSpec  # noqa: E402

WORK = ROOT / "bench" / "work"
LAUNCHER = WORK / "perf_analyzer" / "perf_analyzer"


def digits_shaped_model(folder: Path) -> Path:
    """An artifact with `fusion-serve train`'s default architecture, ten labels and random weights."""
    spec = ArtifactSpec(
        name=folder.name,
        version="1",
        description="digits architecture, random weights (benchmark only)",
        labels=tuple(str(d) for d in range(10)),
        modalities=("image", "text", "audio"),
        image=ImageSpec(size=28, channels=1, width=16),
        text=TextSpec(max_tokens=64, embed_dim=64, layers=2, heads=4),
        audio=AudioSpec(sample_rate=16000, clip_seconds=1.5, n_fft=400, hop_length=240, n_mels=40, width=16),
        fusion=FusionSpec(type="attention", dim=64, hidden=128, heads=4, layers=1),
    )
    torch.manual_seed(0)
    return save_artifact(folder, spec, FusionClassifier(spec).eval(), f"# {spec.name}\n\n{spec.description}\n")


def sample_files(i: int) -> tuple[bytes, bytes, bytes]:
    """A 64x64 PNG, a one-second 16 kHz WAV and a sentence, varied by `i`."""
    rng = np.random.default_rng(i)
    image = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8), "L").save(image, format="PNG")
    t = np.arange(16000) / 16000
    audio = io.BytesIO()
    sf.write(audio, 0.3 * np.sin(2 * np.pi * (300 + 40 * i) * t), 16000, subtype="PCM_16", format="WAV")
    text = f"it's a {i % 10} I think, written and spoken".encode()
    return image.getvalue(), text, audio.getvalue()


def input_data(samples: int, path: Path) -> Path:
    """perf_analyzer's --input-data file: BYTES tensors of shape [samples], serialized (4-byte length + bytes)."""
    columns: dict[str, list[bytes]] = {"image": [], "text": [], "audio": []}
    for i in range(samples):
        for name, data in zip(columns, sample_files(i)):
            columns[name].append(data)
    entry = {
        name: {
            "content": {"b64": base64.b64encode(b"".join(struct.pack("<I", len(e)) + e for e in elements)).decode()},
            "shape": [samples],
        }
        for name, elements in columns.items()
    }
    path.write_text(json.dumps({"data": [entry]}))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, server: subprocess.Popen[bytes], timeout_s: float = 300) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if server.poll() is not None:
            raise RuntimeError("the service exited before it was ready")
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise TimeoutError("the service did not become ready")


def run_perf_analyzer(args: argparse.Namespace, model: str, port: int, data: Path, out: Path) -> list[dict[str, str]]:
    """One perf_analyzer run per concurrency level; its CSV rows."""
    rows: list[dict[str, str]] = []
    for concurrency in args.concurrency.split(","):
        cmd = [
            str(args.perf_analyzer), "-m", model, "-u", f"127.0.0.1:{port}", "-i", "http",
            "--input-data", str(data), "--concurrency-range", concurrency,
            "--measurement-interval", str(args.window_ms), "--stability-percentage", str(args.stability),
            "--max-trials", "10", "-f", str(out),
        ]
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
        with out.open() as f:
            rows += list(csv.DictReader(f))
    return rows


def machine(launcher: Path) -> list[str]:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor() or "unknown",
    )
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
    version = subprocess.run([str(launcher), "--version"], capture_output=True, text=True)
    pa = (version.stdout + version.stderr).strip() or "perf_analyzer"
    return [
        f"- CPU: {cpu}, {os.cpu_count()} logical cores (shared by the service and perf_analyzer); no GPU"
        if not torch.cuda.is_available() else f"- CPU: {cpu}; GPU: {torch.cuda.get_device_name(0)}",
        f"- memory: {mem_kb / 2**20:.1f} GiB; OS: {platform.platform()}",
        f"- load average (1, 5, 15 min) when the run began: {load} (the machine is shared)",
        f"- Python {platform.python_version()}, torch {torch.__version__}; {pa} (PyPI perf-analyzer 2.60.0)",
    ]


def table(rows: list[dict[str, str]], samples: int) -> list[str]:
    lines = [
        "| concurrency | requests/s | samples/s | p50 ms | p90 ms | p95 ms | p99 ms |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(rows, key=lambda r: int(r["Concurrency"])):
        rps = float(r["Inferences/Second"])
        ms = [float(r[f"p{p} latency"]) / 1e3 for p in (50, 90, 95, 99)]
        lines.append(
            f"| {r['Concurrency']} | {rps:.1f} | {rps * samples:.1f} | " + " | ".join(f"{v:.1f}" for v in ms) + " |"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models-dir", type=Path, default=None, help="default: a digits-shaped random model")
    parser.add_argument("--model", default=None, help="model to load-test (default: the only/first one)")
    parser.add_argument("--perf-analyzer", type=Path, default=LAUNCHER)
    parser.add_argument("--concurrency", default="1,2,4,8", help="concurrency levels, one perf_analyzer run each")
    parser.add_argument("--window-ms", type=int, default=5000)
    parser.add_argument("--stability", type=int, default=20, help="perf_analyzer --stability-percentage")
    parser.add_argument("--samples", default="1,8", help="samples per request, one run each")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "oip_perf_analyzer.md")
    args = parser.parse_args()
    if not args.perf_analyzer.exists():
        parser.error(f"{args.perf_analyzer} not found; run bench/get_perf_analyzer.sh first")

    WORK.mkdir(parents=True, exist_ok=True)
    models_dir = args.models_dir
    random_model = models_dir is None
    if models_dir is None:
        models_dir = WORK / "models"
        if not is_artifact_dir(models_dir / "digits-random"):
            digits_shaped_model(models_dir / "digits-random")
    model = args.model or sorted(p.name for p in models_dir.iterdir() if is_artifact_dir(p))[0]
    port = free_port()
    env = {**os.environ, "FUSION_MODELS_DIR": str(models_dir), "FUSION_DEFAULT_MODEL": model,
           "FUSION_PORT": str(port), "FUSION_HOST": "127.0.0.1", "FUSION_LOG_LEVEL": "warning"}
    hidden = ("FUSION_PORT", "FUSION_HOST")
    settings = {k: v for k, v in sorted(env.items()) if k.startswith("FUSION_") and k not in hidden}
    before = machine(args.perf_analyzer)
    server = subprocess.Popen([sys.executable, "-m", "app.cli", "serve"], cwd=ROOT, env=env)
    url = f"http://127.0.0.1:{port}"
    sections: list[str] = []
    try:
        wait_ready(url, server)
        for samples in (int(s) for s in args.samples.split(",")):
            data = input_data(samples, WORK / f"oip_input_{samples}.json")
            rows = run_perf_analyzer(args, model, port, data, WORK / f"oip_perf_{samples}.csv")
            sections += [
                f"### {samples} sample{'s' if samples > 1 else ''} per request (image + text + audio each)", "",
                *table(rows, samples), "",
            ]
    finally:
        server.terminate()
        server.wait(30)

    changed = ", ".join(f"`{k}={v}`" for k, v in settings.items())
    report = [
        "# Open Inference Protocol: perf_analyzer", "",
        f"`bench/oip_perf_analyzer.py`, {time.strftime('%Y-%m-%d')}: Triton's perf_analyzer (unmodified) against "
        f"`POST /v2/models/{model}/infer` over HTTP, inputs as binary BYTES tensors (a 64x64 PNG, a 1 s 16 kHz "
        "WAV and a sentence per sample), outputs requested as binary; synchronous requests at each concurrency, "
        f"{args.window_ms} ms windows until stable within {args.stability} %. Latency is per request, client side.",
        "",
        "Machine:", "", *before, "",
        f"Service: `python -m app.cli serve`, default settings except {changed}"
        + ("; the model has the digits architecture, random weights (same cost as trained)." if random_model else "."),
        "",
        *sections,
        "perf_analyzer reports client-side figures only: the service does not implement Triton's statistics "
        "extension (queue and compute times per request are in /v1's `timing`).",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(report) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
