"""Decode time per upload format: the shipped 1.5 s clip (bench/assets/digit.wav) and a 3 s clip (it twice), written
in every accepted format by the same real encoders the tests use (tests/media.py), decoded by `app.inputs`.

Also, in the same run and interleaved so that the machine's drift hits both alike:
- the WAV/FLAC/OGG path before this change (app/decoding.py at --baseline, loaded from git) against now;
- the cost of the decode-time bound: one clock read per packet and per read, counted for each file;
- what decoding in a separate process would add per file (the alternative that could also contain a crash):
  a warm worker process that gets the bytes and returns the samples.

    python bench/decode.py --rounds 30 --out bench/results/decode.md
"""
from __future__ import annotations

import argparse
import io
import multiprocessing
import platform
import random
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable
from datetime import date
from pathlib import Path

import av
import numpy as np
import soundfile as sf
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.media: the encoders the tests use

from app.config import Settings  # noqa: E402
from app.inputs import audio_av  # noqa: E402
from app.inputs.audio import decode_audio  # noqa: E402
from app.inputs.image import decode_image  # noqa: E402
from app.inputs.limits import DecodeLimits  # noqa: E402
from tests import media  # noqa: E402

LIMITS = DecodeLimits.from_settings(Settings())
SOUNDFILE_KINDS = {"wav": ("WAV", "PCM_16"), "flac-libsndfile": ("FLAC", "PCM_16"), "ogg-vorbis": ("OGG", "VORBIS")}


def baseline_module(rev: str) -> types.ModuleType:
    """app/decoding.py as it was at `rev` (before app/inputs), imported from git."""
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{rev}:app/decoding.py"], check=True, capture_output=True, text=True
    ).stdout
    module = types.ModuleType("baseline_decoding")
    sys.modules[module.__name__] = module  # dataclasses look their module up there
    exec(compile(source, f"{rev}:app/decoding.py", "exec"), module.__dict__)  # noqa: S102 - our own file at a revision
    return module


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def checks(data: bytes) -> int:
    """How many times decoding `data` checks its budget (per packet and per read on the FFmpeg path, none on
    libsndfile's), counted by handing app.inputs.audio_av a clock that counts its wall-clock reads."""
    calls = 0

    class CountingClock:
        thread_time = staticmethod(time.thread_time)

        @staticmethod
        def monotonic() -> float:
            nonlocal calls
            calls += 1
            return time.monotonic()

    real, audio_av.time = audio_av.time, CountingClock  # type: ignore[assignment]
    try:
        decode_audio(data, LIMITS)
    finally:
        audio_av.time = real
    return max(calls - 1, 0)  # the first call sets the deadline


def clock_cost_us(clock: Callable[[], float], n: int = 200_000) -> float:
    start = time.perf_counter()
    for _ in range(n):
        clock()
    return (time.perf_counter() - start) / n * 1e6


def _worker_decode(data: bytes) -> tuple[np.ndarray, int]:
    wave = decode_audio(data, LIMITS)
    return wave.samples, wave.sample_rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30, help="at least 2")
    parser.add_argument("--baseline", default="32762d6", help="git revision with app/decoding.py (before app/inputs)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/decode.md")
    args = parser.parse_args()

    clip, rate = sf.read(ROOT / "bench/assets/digit.wav", dtype="float32")
    clips = {"1.5 s": clip, "3 s": np.concatenate([clip, clip])}
    files: dict[tuple[str, str], bytes] = {}
    for length, samples in clips.items():
        for kind, (fmt, subtype) in SOUNDFILE_KINDS.items():
            buf = io.BytesIO()
            sf.write(buf, samples, rate, format=fmt, subtype=subtype)
            files[(kind, length)] = buf.getvalue()
        for kind, make in media.AUDIO.items():
            files[(kind, length)] = make(samples, rate)
    old = baseline_module(args.baseline)
    work: dict[tuple[str, str, str], Callable[[], object]] = {}
    for (kind, length), data in files.items():
        work[(kind, length, "now")] = lambda d=data: decode_audio(d, LIMITS)
        if kind in SOUNDFILE_KINDS:
            work[(kind, length, "before")] = lambda d=data: old.decode_audio(d, old.DecodeLimits())
    picture = Image.open(ROOT / "bench/assets/digit.png")
    images = {"png": (ROOT / "bench/assets/digit.png").read_bytes()}
    images |= {k: make(picture) for k, make in media.IMAGES.items()}
    for kind, data in images.items():
        work[(kind, "28x28", "image")] = lambda d=data: decode_image(d, LIMITS).load()

    pool = multiprocessing.get_context("forkserver").Pool(1)
    pool.apply(_worker_decode, (files[("wav", "1.5 s")],))  # warm: the worker has imported everything
    for kind in ("wav", "webm-opus", "m4a-aac"):
        for length in clips:
            work[(kind, length, "subprocess")] = lambda d=files[(kind, length)]: pool.apply(_worker_decode, (d,))

    for fn in work.values():  # warm-up: imports, codec tables, caches
        fn()
    times: dict[tuple[str, str, str], list[float]] = {key: [] for key in work}
    order = list(work)
    shuffle = random.Random(0).shuffle
    for _ in range(args.rounds):
        shuffle(order)  # interleaved, in a new order each round: drift and cache state reach every entry alike
        for key in order:
            times[key].append(timed(work[key]))
    pool.close()

    check_us, cpu_clock_us = clock_cost_us(time.monotonic), clock_cost_us(time.thread_time)
    load = open("/proc/loadavg").read().split()[:3] if Path("/proc/loadavg").exists() else ["?"]
    med = {key: statistics.median(v) for key, v in times.items()}

    def spread(key: tuple[str, str, str]) -> str:
        q = statistics.quantiles(times[key], n=4)
        return f"{q[0]:.2f}-{q[2]:.2f}"

    lines = [
        "# Decode time per upload format",
        "",
        f"{date.today()}, {platform.processor() or platform.machine()}, Python {platform.python_version()}, "
        f"PyAV {av.__version__} (FFmpeg {av.library_versions['libavcodec']}), libsndfile {sf.__libsndfile_version__}, "
        f"load average {' '.join(load)} (2-core shared machine). Command: `python bench/decode.py --rounds "
        f"{args.rounds}`. Median of {args.rounds} rounds (every entry once per round, in a shuffled order), one "
        "thread; spread = 25th-75th percentile.",
        "",
        "## WAV, FLAC, OGG: before (app/decoding.py at " + args.baseline + ") and now, side by side",
        "",
        "| file | length | before ms | now ms | now / before | spread before | spread now |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind in SOUNDFILE_KINDS:
        for length in clips:
            b, n = med[(kind, length, "before")], med[(kind, length, "now")]
            lines.append(
                f"| {kind} | {length} | {b:.3f} | {n:.3f} | {n / b:.2f} | {spread((kind, length, 'before'))} "
                f"| {spread((kind, length, 'now'))} |"
            )
    lines += [
        "",
        "## Every format, now",
        "",
        f"The decode-time bound costs one wall-clock read per packet and per read FFmpeg makes ({check_us:.2f} us "
        f"here; the thread's CPU clock, {cpu_clock_us:.2f} us, is read only once the budget has passed in wall "
        "time); 'checks' counts them for the 3 s file, 'bound' is their cost as a share of its decode time.",
        "",
        "| format | bytes (1.5 s) | 1.5 s ms | 3 s ms | spread 3 s | checks (3 s) | bound (3 s) |",
        "|---|---|---|---|---|---|---|",
    ]
    kinds = list(SOUNDFILE_KINDS) + [k for k in media.AUDIO]
    for kind in kinds:
        short, long = med[(kind, "1.5 s", "now")], med[(kind, "3 s", "now")]
        n = checks(files[(kind, "3 s")])
        bound = f"{n * check_us / 1000 / long:.2%}" if n else "- (libsndfile)"
        lines.append(
            f"| {kind} | {len(files[(kind, '1.5 s')]):,} | {short:.3f} | {long:.3f} | {spread((kind, '3 s', 'now'))} "
            f"| {n} | {bound} |"
        )
    lines += [
        "",
        "## Decoding in a separate process instead (warm worker; bytes in, samples out)",
        "",
        "| file | length | in-process ms | subprocess ms | added ms |",
        "|---|---|---|---|---|",
    ]
    for kind in ("wav", "webm-opus", "m4a-aac"):
        for length in clips:
            a, b = med[(kind, length, "now")], med[(kind, length, "subprocess")]
            lines.append(f"| {kind} | {length} | {a:.3f} | {b:.3f} | {b - a:.3f} |")
    lines += ["", "## Images (the shipped 28x28 digit), now", ""]
    lines += ["| format | bytes | ms | spread |", "|---|---|---|---|"]
    for kind, data in images.items():
        key = (kind, "28x28", "image")
        lines.append(f"| {kind} | {len(data):,} | {med[key]:.3f} | {spread(key)} |")
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
