"""Proxy check of the make-data noise design: simple per-modality classifiers and their late fusion.

Generates a data set (or reads one), fits scikit-learn classifiers on the train split of each
modality alone, and reports their accuracy on val+test next to a late-fusion proxy (the sum of the
three log-probabilities). The design goal: fusion >= 10 points above the best single modality,
each single modality within ~50-80 %.

    python bench/data_proxy.py --size 4000 --out /tmp/digits-proxy [--data /existing/folder]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from PIL import Image
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.training import make_data  # noqa: E402

_N_FFT, _HOP, _N_MELS, _RATE = 400, 160, 40, 16000
# Random convolution features (ROCKET-style): random kernels over the log-mel "time series",
# summarised by their max and share of positive responses over time, so the word's position in
# the clip does not matter. A linear model on them is a fair stand-in for a small audio CNN.
_KERNELS, _KERNEL_LENGTH, _DILATIONS = 1200, 9, (1, 2, 4)


def _mel_filterbank() -> np.ndarray:
    mel = np.linspace(0, 2595 * np.log10(1 + (_RATE / 2) / 700), _N_MELS + 2)
    hz = 700 * (10 ** (mel / 2595) - 1)
    freqs = np.fft.rfftfreq(_N_FFT, 1 / _RATE)
    lower, centre, upper = hz[:-2, None], hz[1:-1, None], hz[2:, None]
    return np.clip(np.minimum((freqs - lower) / (centre - lower), (upper - freqs) / (upper - centre)), 0, None)


_FILTERBANK = _mel_filterbank()
_KERNEL_RNG = np.random.default_rng(0)
_KERNEL_BANK = _KERNEL_RNG.standard_normal((_KERNELS, _N_MELS * _KERNEL_LENGTH)).astype(np.float32)
_KERNEL_BANK -= _KERNEL_BANK.mean(axis=1, keepdims=True)
_KERNEL_DILATION = _KERNEL_RNG.choice(_DILATIONS, _KERNELS)


def _log_mel(wave: np.ndarray) -> np.ndarray:
    frames = np.lib.stride_tricks.sliding_window_view(wave, _N_FFT)[::_HOP] * np.hanning(_N_FFT)
    logmel = np.log(_FILTERBANK @ (np.abs(np.fft.rfft(frames, axis=1)) ** 2).T + 1e-6)  # [mels, frames]
    return ((logmel - logmel.mean()) / (logmel.std() + 1e-5)).astype(np.float32)


def audio_features(path: Path) -> np.ndarray:
    """Max and proportion-of-positive-values of random dilated kernels over the clip's log-mel."""
    logmel = _log_mel(sf.read(path, dtype="float32")[0])
    features = []
    for dilation in _DILATIONS:
        chosen = _KERNEL_DILATION == dilation
        steps = logmel.shape[1] - (_KERNEL_LENGTH - 1) * dilation
        windows = np.stack([logmel[:, j * dilation : j * dilation + steps] for j in range(_KERNEL_LENGTH)], axis=-1)
        responses = windows.transpose(1, 0, 2).reshape(steps, -1) @ _KERNEL_BANK[chosen].T
        features += [responses.max(axis=0), (responses > 0).mean(axis=0)]
    return np.concatenate(features)


def load(folder: Path) -> dict[str, Any]:
    """Per-modality feature arrays, labels and the train mask of a generated data set."""
    rows = [json.loads(line) for line in (folder / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
    images = np.stack([np.asarray(Image.open(folder / row["image"]), dtype=np.float32).ravel() / 255 for row in rows])
    audio = np.stack([audio_features(folder / row["audio"]) for row in rows])
    return {
        "image": images,
        "audio": audio,
        "text": np.array([row["text"] for row in rows], dtype=object),
        "label": np.array([int(row["label"]) for row in rows]),
        "train": np.array([row["split"] == "train" for row in rows]),
    }


def classifiers() -> dict[str, Any]:
    """One simple scikit-learn model per modality."""
    return {
        "image": make_pipeline(
            StandardScaler(), MLPClassifier((256,), alpha=1e-2, early_stopping=True, max_iter=300, random_state=0)
        ),
        "audio": make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=1000)),
        "text": make_pipeline(
            TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 4), sublinear_tf=True),
            LogisticRegression(C=10.0, max_iter=2000),
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="existing data set folder (skips generation)")
    make_data.add_arguments(parser)
    parser.set_defaults(size=4000, out=Path("/tmp/digits-proxy"))
    args = parser.parse_args()
    folder = args.data or make_data.run(args).parent

    started = time.perf_counter()
    data = load(folder)
    print(f"features: {time.perf_counter() - started:.0f} s")
    train, test, y = data["train"], ~data["train"], data["label"]
    log_probs = {}
    for modality, model in classifiers().items():
        fit_started = time.perf_counter()
        features = data[modality]
        model.fit(features[train], y[train])
        log_probs[modality] = np.log(np.clip(model.predict_proba(features[test]), 1e-6, None))
        accuracy = (log_probs[modality].argmax(axis=1) == y[test]).mean()
        print(f"{modality:6s} alone: {accuracy:.3f}  (fit {time.perf_counter() - fit_started:.0f} s)")
    fused = sum(log_probs.values())
    best_single = max((lp.argmax(axis=1) == y[test]).mean() for lp in log_probs.values())
    fused_accuracy = (fused.argmax(axis=1) == y[test]).mean()
    gain = 100 * (fused_accuracy - best_single)
    print(f"late fusion : {fused_accuracy:.3f}  ({gain:+.1f} points over the best single modality)")
    print(f"{int(train.sum())} train / {int(test.sum())} evaluated rows; {time.perf_counter() - started:.0f} s in all")


if __name__ == "__main__":
    main()
