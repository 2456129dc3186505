"""Peak memory of decoding + preprocessing one upload, per image mode and for audio: the figures behind the
estimates in app/inputs/footprint.py. `python bench/decode_memory.py [--out bench/results/decode_memory.md]`.

Each case runs in a fresh process: the file is made, the peak RSS is reset (/proc/self/clear_refs), the file is
decoded and preprocessed as the service does it (app.inputs + app.inputs.preprocess, for a 1-channel and a
3-channel model), and the rise of the peak RSS is divided by the pixels (or samples) of the file.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / "work" / "decode_memory"

MAKE = r"""
import io, sys
import numpy as np
import soundfile as sf
from PIL import Image
kind, mode, path = sys.argv[1], sys.argv[2], sys.argv[3]
rng = np.random.default_rng(0)
if kind == "image":
    w, h = 3000, 2000
    fmt = {"JPEG-RGB": "JPEG", "JPEG-L": "JPEG", "PNG-RGB": "PNG"}.get(mode, "TIFF")
    pil_mode = mode.split("-")[-1]
    if pil_mode in ("I", "I;16"):
        im = Image.fromarray(rng.integers(0, 60000, (h, w)).astype(np.uint16 if pil_mode == "I;16" else np.int32))
    elif pil_mode == "F":
        im = Image.fromarray(rng.random((h, w), dtype=np.float32), "F")
    else:
        im = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB").convert(pil_mode.replace("P+t", "P"))
    im.save(path, format=fmt, **({"transparency": 0} if pil_mode == "P+t" else {}))
else:
    rate, seconds, ch = 44100, 60, int(mode)
    sf.write(path, (0.3 * rng.standard_normal((rate * seconds, ch))).astype(np.float32), rate, subtype="PCM_16",
             format="WAV")
"""

# Runs in a fresh process, so that no memory freed before is reused by the decoding (it would not show in the RSS).
CASE = r"""
import json, sys
from app.config import Settings  # noqa: E402
from app.inputs.audio import decode_audio  # noqa: E402
from app.inputs.image import decode_image  # noqa: E402
from app.inputs.limits import DecodeLimits
from app.inputs.footprint import decoded_footprint
from app.inputs.parts import RawInputs
from app.inputs.preprocess import Preprocessor
from app.model.spec import ArtifactSpec, AudioSpec, ImageSpec

kind, path, channels = sys.argv[1], sys.argv[2], int(sys.argv[3])
limits = dataclasses.replace(
    DecodeLimits.from_settings(Settings()), max_image_pixels=10**9, max_audio_samples=10**9, max_audio_seconds=10**6
)
image = ImageSpec(size=64, channels=channels, mean=(0.5,) * channels, std=(0.5,) * channels)
spec = ArtifactSpec(name="m", labels=("a", "b"), modalities=("image", "audio"), image=image,
                    audio=AudioSpec(sample_rate=16000))
pre = Preprocessor(spec)
data = open(path, "rb").read()
raw = RawInputs(image=data) if kind == "image" else RawInputs(audio=data)
estimate = decoded_footprint(raw, limits)

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024

open("/proc/self/clear_refs", "w").write("5")
before = status("VmRSS")
if kind == "image":
    im = decode_image(data, limits)
    units = im.size[0] * im.size[1]
    pre(image=im)
else:
    wave = decode_audio(data, limits)
    units = wave.samples.size
    pre(audio=wave)
print(json.dumps({"peak": status("VmHWM") - before, "units": units, "estimate": estimate}))
"""
IMAGES = ["JPEG-RGB", "JPEG-L", "PNG-RGB", "TIFF-1", "TIFF-L", "TIFF-P", "TIFF-P+t", "TIFF-LA", "TIFF-RGB",
          "TIFF-RGBA", "TIFF-CMYK", "TIFF-YCbCr", "TIFF-LAB", "TIFF-I;16", "TIFF-I", "TIFF-F"]


def run(kind: str, mode: str, channels: int) -> dict:
    path = WORK / f"{kind}-{mode.replace(';', '_').replace('+', '_')}"
    if not path.exists():
        subprocess.run([sys.executable, "-c", MAKE, kind, mode, str(path)], cwd=ROOT, check=True)
    out = subprocess.run([sys.executable, "-c", CASE, kind, str(path), str(channels)], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    rows = ["| input | model | peak bytes per pixel/sample | estimate per pixel/sample | estimate / peak |",
            "|---|---|---|---|---|"]
    cases = [("image", m, c) for m in IMAGES for c in (1, 3)] + [("audio", ch, 1) for ch in ("1", "2")]
    for kind, mode, channels in cases:
        r = run(kind, mode, channels)
        per, est = r["peak"] / r["units"], r["estimate"] / r["units"]
        what = f"image {mode} 3000x2000" if kind == "image" else f"audio WAV 44.1 kHz 60 s, {mode} channel(s)"
        model = f"{channels}-channel image" if kind == "image" else "16 kHz"
        row = f"| {what} | {model} | {per:.2f} | {est:.2f} | {est / per:.2f} |"
        rows.append(row)
        print(row, flush=True)
    if args.out:
        args.out.write_text("# Peak memory of decoding one upload\n\n`python bench/decode_memory.py`: "
                            "see its docstring for the method.\n\n" + "\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
