"""Synthetic noisy captions about a digit: many languages and templates, typos, vague or wrong ones."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from app.errors import SettingError

# Digit words per language, index = digit. "num" is the numeral and "zh" the Chinese numeral.
DIGIT_WORDS: dict[str, tuple[str, ...]] = {
    "en": ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"),
    "num": tuple("0123456789"),
    "zh": tuple("零一二三四五六七八九"),
    "de": ("null", "eins", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun"),
    "fr": ("zéro", "un", "deux", "trois", "quatre", "cinq", "six", "sept", "huit", "neuf"),
    "es": ("cero", "uno", "dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho", "nueve"),
    "it": ("zero", "uno", "due", "tre", "quattro", "cinque", "sei", "sette", "otto", "nove"),
    "nl": ("nul", "een", "twee", "drie", "vier", "vijf", "zes", "zeven", "acht", "negen"),
    "pt": ("zero", "um", "dois", "três", "quatro", "cinco", "seis", "sete", "oito", "nove"),
    "pl": ("zero", "jeden", "dwa", "trzy", "cztery", "pięć", "sześć", "siedem", "osiem", "dziewięć"),
    "ru": ("ноль", "один", "два", "три", "четыре", "пять", "шесть", "семь", "восемь", "девять"),
    "uk": ("нуль", "один", "два", "три", "чотири", "п'ять", "шість", "сім", "вісім", "дев'ять"),
    "tr": ("sıfır", "bir", "iki", "üç", "dört", "beş", "altı", "yedi", "sekiz", "dokuz"),
}
# How often each form is used; the rest of the weight is shared by the other languages.
_FORM_WEIGHTS = {"en": 0.3, "num": 0.25, "zh": 0.1}

# "{d}" is the digit in the chosen form. Templates of one language are used only with its words,
# the "any" ones with every form. Apart from articles that also mean "one" (un, een, um), which
# keep their real-world ambiguity, no template contains a digit word of any language.
_TEMPLATES: dict[str, tuple[str, ...]] = {
    "any": (
        "{d}", "{d}.", "number {d}", "digit {d}", "the digit {d}", "a {d}", "it's {d} I think",
        "looks like {d}", "pretty sure that's {d}", "{d}, I guess", "#{d}", "label: {d}", "answer: {d}",
        "maybe {d}?", "definitely {d}", "I'd say {d}", "{d} for sure", "this shows {d}", "it is {d}",
        "handwritten {d}", "a picture of {d}", "my guess is {d}", "{d}!!", "that's a {d} right there",
        "they said {d}", "reads as {d}", "sounds like {d}", "printed {d} on a card", "{d} (blurry)",
    ),
    "en": (
        "a picture of a {d}", "it's a {d}", "the number {d}", "a voice saying {d}", "a blurry {d}",
        "I see a {d}", "looks like a {d} to me", "clearly a {d}", "probably a {d}", "she wrote a {d}",
    ),
    "de": ("das ist eine {d}", "die Zahl {d}", "ich glaube {d}", "Nummer {d}", "sieht aus wie {d}"),
    "fr": ("c'est un {d}", "le chiffre {d}", "je crois que c'est {d}", "numéro {d}", "on dirait {d}"),
    "es": ("es un {d}", "el número {d}", "creo que es {d}", "parece un {d}"),
    "it": ("è un {d}", "il numero {d}", "credo sia {d}", "sembra un {d}"),
    "nl": ("het is een {d}", "het getal {d}", "ik denk {d}", "lijkt op {d}"),
    "pt": ("é um {d}", "o número {d}", "acho que é {d}", "parece um {d}"),
    "pl": ("to jest {d}", "liczba {d}", "chyba {d}"),
    "ru": ("это {d}", "цифра {d}", "наверное {d}"),
    "uk": ("це {d}", "число {d}", "мабуть {d}"),
    "tr": ("bu bir {d}", "sayı {d}", "galiba {d}"),
    "zh": ("数字{d}", "这是{d}", "我觉得是{d}", "{d}号"),
}  # fmt: skip
_HEDGES: tuple[str, ...] = (
    "either {a} or {b}", "{a} or {b}?", "looks like {a}, maybe {b}", "{a}? could also be {b}",
    "not sure: {a} or {b}", "{a}/{b}", "{a}, or possibly {b}",
)  # fmt: skip
_UNINFORMATIVE: tuple[str, ...] = (
    "no idea what this is", "can't tell", "too blurry to read", "some digit", "a number", "???", "idk",
    "hmm", "random scribble", "unreadable", "no clue", "not sure at all", "it's a digit of some kind",
    "could be anything", "looks like a number to me", "what is this", "lol", "...", "n/a",
    "weiß nicht", "aucune idée", "ni idea", "non lo so", "geen idee", "不知道", "не знаю",
    "a photo", "a sound clip", "a person talking", "noise", "a blurry picture", "the label is missing",
)  # fmt: skip
_KEYBOARD_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")


@dataclass(frozen=True)
class TextNoise:
    """Per-sample caption noise settings."""

    uninformative_prob: float = field(
        default=0.32, metadata={"help": "probability that a caption says nothing about the digit"}
    )
    misleading_prob: float = field(
        default=0.05, metadata={"help": "probability that a caption names a different digit"}
    )
    hedge_prob: float = field(
        default=0.08, metadata={"help": "probability that a caption names the digit and a distractor"}
    )
    typo_prob: float = field(default=0.35, metadata={"help": "probability of 1-3 typos in a caption"})

    def __post_init__(self) -> None:
        for name in ("uninformative_prob", "misleading_prob", "hedge_prob", "typo_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise SettingError(f"text_{name}", "must be within [0, 1]")
        if self.uninformative_prob + self.misleading_prob + self.hedge_prob > 1:
            raise SettingError(
                "text_uninformative_prob", "plus --text-misleading-prob and --text-hedge-prob must be at most 1"
            )


def _neighbour(char: str, rng: np.random.Generator) -> str:
    for row in _KEYBOARD_ROWS:
        position = row.find(char.lower())
        if position >= 0:
            lo, hi = max(0, position - 1), min(len(row), position + 2)
            return row[lo:hi][rng.integers(hi - lo)]
    return char


def add_typos(text: str, rng: np.random.Generator, count: int) -> str:
    """Apply `count` random character swaps, drops, doublings or keyboard-neighbour replacements."""
    chars = list(text)
    for _ in range(count):
        if len(chars) < 2:
            break
        i = int(rng.integers(len(chars) - 1))
        kind = rng.integers(4)
        if kind == 0:
            chars[i], chars[i + 1] = chars[i + 1], chars[i]
        elif kind == 1:
            del chars[i]
        elif kind == 2:
            chars.insert(i, chars[i])
        else:
            chars[i] = _neighbour(chars[i], rng)
    return "".join(chars)


def _word(digit: int, rng: np.random.Generator) -> tuple[str, str]:
    """The digit in a random form; returns (language, word)."""
    languages = list(DIGIT_WORDS)
    rest = (1.0 - sum(_FORM_WEIGHTS.values())) / (len(languages) - len(_FORM_WEIGHTS))
    weights = np.array([_FORM_WEIGHTS.get(lang, rest) for lang in languages])
    language = languages[rng.choice(len(languages), p=weights / weights.sum())]
    return language, DIGIT_WORDS[language][digit]


def _mention(digit: int, rng: np.random.Generator) -> str:
    language, word = _word(digit, rng)
    # The numeral and the Chinese numeral read naturally in every template.
    pools = ["any"] + ([language] if language in _TEMPLATES else [])
    if language == "num":
        pools.append("en")
    templates = [template for pool in pools for template in _TEMPLATES[pool]]
    return templates[rng.integers(len(templates))].format(d=word)


def _restyle(text: str, rng: np.random.Generator) -> str:
    """Vary case and trailing punctuation."""
    roll = rng.random()
    if roll < 0.1:
        text = text.upper()
    elif roll < 0.3:
        text = text.lower()
    elif roll < 0.45:
        text = text[:1].upper() + text[1:]
    if rng.random() < 0.2:
        text += str(rng.choice([".", "!", "?", " :)", "..."]))
    return text


def render_text(label: int, rng: np.random.Generator, noise: TextNoise) -> str:
    """One caption for `label`: informative, hedged, uninformative or misleading, maybe with typos."""
    roll = rng.random()
    other = int((label + rng.integers(1, 10)) % 10)
    if roll < noise.uninformative_prob:
        text = _UNINFORMATIVE[rng.integers(len(_UNINFORMATIVE))]
    elif roll < noise.uninformative_prob + noise.misleading_prob:
        text = _mention(other, rng)
    elif roll < noise.uninformative_prob + noise.misleading_prob + noise.hedge_prob:
        pair = [_word(label, rng)[1], _word(other, rng)[1]]
        first = int(rng.integers(2))
        text = _HEDGES[rng.integers(len(_HEDGES))].format(a=pair[first], b=pair[1 - first])
    else:
        text = _mention(label, rng)
    text = _restyle(text, rng)
    if rng.random() < noise.typo_prob:
        text = add_typos(text, rng, count=int(rng.integers(1, 4)))
    return text
