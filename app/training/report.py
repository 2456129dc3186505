"""The model card (markdown tables) and its plots: training curves, confusion matrix, reliability diagram."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from app.model.artifact import write_file  # noqa: E402
from app.model.spec import ArtifactSpec  # noqa: E402

PLOTS = ("training_curves.png", "confusion_matrix.png", "reliability.png")


def _pct(x: float | None) -> str:
    return "n/a" if x is None or x != x else f"{100 * x:.1f}%"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def card(spec: ArtifactSpec, m: dict[str, Any]) -> str:
    """Markdown model card with the evaluation tables."""
    enc = []
    if spec.image:
        enc.append(f"image: {spec.image.encoder} on {spec.image.size}x{spec.image.size}x{spec.image.channels}"
                   f" (fit {spec.image.fit}, polarity {spec.image.polarity})")
    if spec.text:
        enc.append(f"text: {spec.text.encoder} over {spec.text.tokenizer.type} tokens (max {spec.text.max_tokens})")
    if spec.audio:
        enc.append(
            f"audio: log-mel ({spec.audio.n_mels} mels, {spec.audio.sample_rate} Hz, {spec.audio.clip_seconds:g} s)"
            f" + {spec.audio.encoder}"
        )
    subset_rows = _subset_rows(m["subsets"])
    out = [
        f"# {spec.name} v{spec.version}",
        "",
        spec.description or "A multimodal fusion classifier trained with `fusion-serve train`.",
        "",
        "## Model",
        f"- labels ({len(spec.labels)}): {', '.join(spec.labels)}",
        f"- modalities: {', '.join(spec.ordered_modalities)}",
        f"- encoders: {'; '.join(enc)}",
        f"- fusion: {spec.fusion.type} (dim {spec.fusion.dim})",
        f"- parameters: {m['parameters']:,}",
        "- calibration: temperature scaling fitted on the validation split, one temperature per modality subset "
        f"(the service applies the one matching the inputs of each request); pooled fallback {spec.temperature:.2f}",
        "",
        f"## Evaluation ({m['split']} split, {m['examples']} examples)",
        _table(
            ["metric", "value"],
            [
                ["accuracy (all modalities)", _pct(m["accuracy"])],
                ["macro-F1 (all modalities)", _pct(m["macro_f1"])],
                ["ECE, all modalities: before -> after calibration",
                 f"{_pct(m['ece_before_calibration'])} -> {_pct(m['ece_after_calibration'])}"],
                ["ECE, every modality subset pooled: before -> after",
                 f"{_pct(m['ece_all_subsets_before'])} -> {_pct(m['ece_all_subsets_after'])}"],
                ["NLL, all modalities: before -> after",
                 f"{m['nll_before_calibration']:.3f} -> {m['nll_after_calibration']:.3f}"],
            ],
        ),
        "",
        "### Per modality subset (the inputs given at prediction time; same model)",
        _table(["inputs", "examples", "accuracy", "macro-F1", "ECE before -> after", "temperature"], subset_rows),
        "",
    ]
    heldout = m.get("heldout")
    if heldout:
        out += [
            f"## Held-out split ({heldout['examples']} examples made differently from the training data)",
            "",
            HELDOUT_NOTE,
            "",
            _table(["inputs", "examples", "accuracy", "macro-F1", "ECE before -> after", "temperature"],
                   _subset_rows(heldout["subsets"])),
            "",
        ]
    singles = m.get("single_modality_models")
    if singles:
        best = max(singles.items(), key=lambda kv: kv[1]["accuracy"])
        out += [
            "### Dedicated single-modality models (same settings, one encoder each)",
            _table(["model", "accuracy", "macro-F1", "ECE (calibrated)"],
                   [[f"{k} only", _pct(v["accuracy"]), _pct(v["macro_f1"]), _pct(v["ece_after_calibration"])]
                    for k, v in singles.items()]),
            "",
            f"Fusion gain: {_pct(m['accuracy'])} with all modalities vs {_pct(best[1]['accuracy'])} for the best "
            f"single-modality model ({best[0]}): **+{100 * (m['accuracy'] - best[1]['accuracy']):.1f} points**.",
            "",
        ]
    comparison = m.get("fusion_comparison")
    if comparison:
        mods = spec.ordered_modalities
        rows = [
            [
                f"**{f}**" if f == spec.fusion.type else f,
                _pct(r["accuracy"]),
                _pct(r["macro_f1"]),
                f"{_pct(r['ece_before_calibration'])} -> {_pct(r['ece_after_calibration'])}",
                *[_pct(r["accuracy_without"].get(x)) for x in mods],
                f"{r['parameters']:,}",
            ]
            for f, r in comparison.items()
        ]
        out += [
            "## Fusion types compared (same data, same settings; only this model's weights are shipped)",
            _table(
                ["fusion", "accuracy", "macro-F1", "ECE before -> after", *[f"without {x}" for x in mods], "params"],
                rows,
            ),
            "",
        ]
    out += [
        "## Confusion matrix (rows: true label, columns: predicted)",
        _table([""] + list(spec.labels), [[lbl] + [str(v) for v in row] for lbl, row in zip(spec.labels, m["confusion_matrix"])]),
        "",
        "## Plots",
        *[f"![{p}]({p})" for p in PLOTS],
        "",
        "## Training",
        f"- epochs run: {len(m['history'])}, wall time {m['train_seconds']:.0f} s",
        f"- settings: `{_settings_line(m['training'])}`",
    ]
    if spec.init_from:
        src = spec.init_from
        out.append(f"- initialised from: {src.get('name')} v{src.get('version')} (`--init-from {src.get('path')}`; "
                   f"weights sha256 `{src.get('weights_sha256')}`), then fine-tuned with the settings above")
    if spec.augmentation:
        out.append(f"- augmentation (training only; config.json `augmentation`): `{_settings_line(spec.augmentation)}`")
    elif m.get("training", {}).get("augment") is False:
        out.append("- augmentation: none (`--no-augment`)")
    gen = m.get("data", {}).get("generator")
    if gen:
        out.append(f"- data generator settings: `{_settings_line(gen)}`")
    return "\n".join(out) + "\n"


HELDOUT_NOTE = (
    "`make-data`'s held-out split (`app/training/synth_heldout.py`): font families, UCI handwriting, espeak-ng "
    "voices and dialects, and caption templates that train/val/test never use; photos and scans of any size, mostly "
    "dark ink on paper; recordings with silence, -40..0 dBFS levels, 0-20 dB SNR noise, telephone bands, 8-48 kHz, "
    "WAV or FLAC; every caption names the digit. Calibration temperatures are the validation split's."
)


def _subset_rows(subsets: dict[str, dict[str, Any]]) -> list[list[str]]:
    return [
        [
            name.replace("+", " + "),
            str(x["count"]),
            _pct(x["accuracy"]),
            _pct(x["macro_f1"]),
            f"{_pct(x['ece_before'])} -> {_pct(x['ece_after'])}",
            f"{x['temperature']:.2f}",
        ]
        for name, x in sorted(subsets.items(), key=lambda kv: (kv[0].count("+"), kv[0]))
    ]


def _settings_line(d: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in d.items() if not isinstance(v, (dict, list)))


def write_plots(folder: Path, spec: ArtifactSpec, m: dict[str, Any]) -> None:
    """Training curves, confusion matrix and reliability diagram as PNGs in the artifact folder."""
    folder.mkdir(parents=True, exist_ok=True)
    hist = m["history"]
    epochs = [h["epoch"] for h in hist]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.5))
    a1.plot(epochs, [h["train_loss"] for h in hist], label="train")
    a1.plot(epochs, [h["val_loss"] for h in hist], label="val")
    a1.set(title="loss", xlabel="epoch")
    a1.legend()
    a2.plot(epochs, [h["train_accuracy"] for h in hist], label="train (with modality dropout)")
    a2.plot(epochs, [h["val_accuracy"] for h in hist], label="val, all modalities")
    a2.plot(epochs, [h["val_mean_subset_accuracy"] for h in hist], label="val, mean over subsets")
    a2.set(title="accuracy", xlabel="epoch", ylim=(0, 1))
    a2.legend(fontsize=7)
    fig.tight_layout()
    _save_png(fig, folder / PLOTS[0])

    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.imshow(m["confusion_matrix"], cmap="Blues")
    n = len(spec.labels)
    ax.set(xticks=range(n), yticks=range(n), xlabel="predicted", ylabel="true", title="confusion matrix")
    ax.set_xticklabels(spec.labels, fontsize=7)
    ax.set_yticklabels(spec.labels, fontsize=7)
    fig.tight_layout()
    _save_png(fig, folder / PLOTS[1])

    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect")
    for key, label in (("reliability_before", "before"), ("reliability_after", "after temperature scaling")):
        pts = [(b["confidence"], b["accuracy"]) for b in m[key] if b["count"]]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=label)
    ax.set(xlabel="confidence", ylabel="accuracy", title="reliability", xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=7)
    fig.tight_layout()
    _save_png(fig, folder / PLOTS[2])


def _save_png(fig: Figure, path: Path) -> None:
    """Write a figure as an artifact file (atomically, world-readable) and close it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    write_file(path, buffer.getvalue())
