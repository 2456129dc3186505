"""Training-time caption augmentation: a training caption as people might type it.

Wrapped in a sentence whose other words contain number words as substrings ("someone", "often", "weight",
"einsam"), so the model learns whole words, not substrings; typos; case; emoji and punctuation; and ASCII digits
written in another script (Arabic-Indic, Devanagari, full-width, emoji keycaps).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from app.errors import SettingError
from app.training.synth_text import add_typos

# None of these contains a digit word of any language the generator writes as a whole word; many contain one
# inside a longer word.
_PREFIXES: tuple[str, ...] = (
    "someone said", "I often think it's", "in a flat tone:", "my phone says", "honestly,", "the weight reads",
    "listen:", "written on the fence:", "alone in the room I read", "after a tense moment,", "ohne Zweifel",
    "einsam steht da", "on the bone it says", "sometimes I see", "content warning:", "the tone was clear:",
    "done!", "attention please,", "from my phone:", "she wrote, often smudged,",
)  # fmt: skip
_SUFFIXES: tuple[str, ...] = (
    ", said someone", ", not often wrong", " (tone deaf though)", " via my phone", " - done", ", I listened twice",
    ", honestly", " on the fence", ", the weight of it", " again and again", " if I'm not mistaken", " lol",
    ", someone told me", ", en septembre", ", zweifellos",
)  # fmt: skip
_DECORATIONS: tuple[str, ...] = (" :)", "!!", "?", " 🙂", " 👍", "...", " ✔", " #digits", " 🤔")
_SCRIPTS: tuple[int | str, ...] = (0x0660, 0x06F0, 0x0966, 0xFF10, 0x09E6, "keycap")


@dataclass(frozen=True)
class TextAugment:
    """Probabilities of each caption augmentation (flags `--aug-text-<name>`)."""

    prob: float = field(default=0.5, metadata={"help": "share of training captions augmented (the rest as they are)"})
    context: float = field(default=0.4, metadata={"help": "probability of a surrounding sentence"})
    typos: float = field(default=0.2, metadata={"help": "probability of 1-2 typos"})
    case: float = field(default=0.2, metadata={"help": "probability of a case change"})
    decorate: float = field(default=0.15, metadata={"help": "probability of emoji or punctuation"})
    scripts: float = field(default=0.2, metadata={"help": "probability of ASCII digits in another script"})

    def __post_init__(self) -> None:
        for name in ("prob", "context", "typos", "case", "decorate", "scripts"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise SettingError(name, f"must be within [0, 1], got {getattr(self, name)}")


def _in_script(text: str, rng: np.random.Generator) -> str:
    script = _SCRIPTS[rng.integers(len(_SCRIPTS))]
    if script == "keycap":
        return "".join(c + "\ufe0f\u20e3" if "0" <= c <= "9" else c for c in text)
    return "".join(chr(int(script) + ord(c) - 48) if "0" <= c <= "9" else c for c in text)


def augment_text(text: str, cfg: TextAugment, rng: np.random.Generator) -> str:
    """`text` as described in the module docstring (or as it is, with probability 1 - prob)."""
    if rng.random() >= cfg.prob:
        return text
    if rng.random() < cfg.context:
        if rng.random() < 0.6:
            text = f"{_PREFIXES[rng.integers(len(_PREFIXES))]} {text}"
        else:
            text = f"{text}{_SUFFIXES[rng.integers(len(_SUFFIXES))]}"
    if rng.random() < cfg.scripts:
        text = _in_script(text, rng)
    if rng.random() < cfg.case:
        text = text.upper() if rng.random() < 0.5 else text.lower()
    if rng.random() < cfg.typos:
        text = add_typos(text, rng, count=int(rng.integers(1, 3)))
    if rng.random() < cfg.decorate:
        text += _DECORATIONS[rng.integers(len(_DECORATIONS))]
    return text
