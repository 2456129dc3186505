"""CPU time of the image preprocessing of an `fit: ink` model (the shipped digits), the implementation its weights
were trained with (bench/reference_ink.py) against app.inputs now, interleaved in one process so that the
machine's drift hits both alike. Both give the same tensors to the last bit (checked here on every picture, and in
tests/inputs/test_ink.py).

Pictures: the README's 28x28 digit, and the same digit redrawn as photos, scans and screens by the training
augmentation (frames of 28 to 600 pixels). Also the whole sample's decode + preprocess (image, caption, clip)
of bench/assets, as the service does it per request.

    taskset -c 1 python bench/preprocess.py --rounds 5 --out bench/results/preprocess.md
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.config import Settings  # noqa: E402
from app.engine.config import EngineConfig  # noqa: E402
from app.engine.pipeline import prepare_sample  # noqa: E402
from app.inputs.preprocess import ImagePreprocessor, Preprocessor  # noqa: E402
from app.model.artifact import load_artifact  # noqa: E402
from app.training.augment_image import ImageAugment, augment_image  # noqa: E402
from bench import reference_ink  # noqa: E402
from bench.inprocess import sample_inputs  # noqa: E402


def per_call_us(fn: Callable[[], object], seconds: float) -> float:
    """CPU microseconds per call of `fn`, over about `seconds`."""
    n, c0, t0 = 0, time.process_time(), time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return (time.process_time() - c0) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "digits")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=1.0, help="per measurement")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    spec = load_artifact(args.model).spec
    assert spec.image is not None and spec.image.fit == "ink", "an fit: ink model"
    now = ImagePreprocessor(spec.image)
    digit = Image.open(ROOT / "bench" / "assets" / "digit.png")
    digit.load()
    rng = np.random.default_rng(0)
    redraws = [augment_image(digit, ImageAugment(prob=1.0, frame_max=600), rng) for _ in range(40)]
    for picture in [digit, *redraws]:
        assert torch.equal(now(picture), reference_ink.preprocess(picture, spec.image)), "the two disagree"
    cases: dict[str, tuple[Callable[[], object], Callable[[], object]]] = {
        "README digit, 28x28": (lambda: reference_ink.preprocess(digit, spec.image), lambda: now(digit)),
        "40 photo-like redraws, 28-600 px (per picture)": (
            lambda: [reference_ink.preprocess(p, spec.image) for p in redraws], lambda: [now(p) for p in redraws]),
    }
    before: dict[str, list[float]] = {name: [] for name in cases}
    after: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, (old, new) in cases.items():
            scale = len(redraws) if name.startswith("40") else 1
            before[name].append(per_call_us(old, args.seconds) / scale)
            after[name].append(per_call_us(new, args.seconds) / scale)
    pre, raw, limits = Preprocessor(spec), sample_inputs(), EngineConfig.from_settings(Settings()).limits
    sample = [per_call_us(lambda: prepare_sample(pre, raw, limits), args.seconds) for _ in range(args.rounds)]
    lines = [
        f"# Image preprocessing ({args.model.name}, fit: ink), trained implementation vs now",
        "",
        f"{date.today()}, {platform.processor() or platform.machine()}, 1 thread, {args.rounds} rounds of "
        f"{args.seconds} s each, interleaved; CPU time. `{' '.join(sys.argv)}`",
        "",
        "| pictures | before, us/picture (spread) | now, us/picture (spread) | before / now (spread) |",
        "|---|---:|---:|---:|",
    ]
    for name in cases:
        ratios = [b / a for b, a in zip(before[name], after[name])]
        lines.append(
            f"| {name} | {statistics.median(before[name]):.0f} ({min(before[name]):.0f}..{max(before[name]):.0f}) "
            f"| {statistics.median(after[name]):.0f} ({min(after[name]):.0f}..{max(after[name]):.0f}) "
            f"| x{statistics.median(ratios):.2f} (x{min(ratios):.2f}..x{max(ratios):.2f}) |")
    lines += ["", f"Whole sample (bench/assets: image, caption, clip), decode + preprocess now: "
              f"{statistics.median(sample):.0f} us ({min(sample):.0f}..{max(sample):.0f}).", "",
              "Outputs compared on every picture above: identical tensors."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
