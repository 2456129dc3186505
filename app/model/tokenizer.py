"""Tokenizers saved inside the artifact: UTF-8 bytes, or a word vocabulary built from training texts."""
from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable

from app.model.spec import TokenizerSpec

PAD_ID = 0
UNK_ID = 1
_N_SPECIAL = 2
_WORD_RE = re.compile(r"\w+|[^\w\s]", re.UNICODE)


class Tokenizer:
    """Turns a text into token ids (never empty for a non-empty text); id 0 is padding."""

    def __init__(self, spec: TokenizerSpec) -> None:
        self.spec = spec
        self._index = {w: i + _N_SPECIAL for i, w in enumerate(spec.vocab)}

    @property
    def vocab_size(self) -> int:
        return _N_SPECIAL + (256 if self.spec.type == "bytes" else len(self.spec.vocab))

    def encode(self, text: str, max_tokens: int) -> list[int]:
        text = unicodedata.normalize("NFC", text)
        if self.spec.lowercase:
            text = text.lower()
        if self.spec.type == "bytes":
            ids = [b + _N_SPECIAL for b in text.encode("utf-8")[:max_tokens]]
        else:
            ids = [self._index.get(w, UNK_ID) for w in words(text)[:max_tokens]]
        return ids or [UNK_ID]


def words(text: str) -> list[str]:
    """Word-level split used by the `words` tokenizer: runs of word characters, and single punctuation marks."""
    return _WORD_RE.findall(text)


def build_vocab(texts: Iterable[str], *, max_size: int = 20000, min_count: int = 2, lowercase: bool = True) -> TokenizerSpec:
    """A `words` tokenizer over the most frequent words of `texts` (ties broken alphabetically, so it is deterministic)."""
    counts: Counter[str] = Counter()
    for t in texts:
        t = unicodedata.normalize("NFC", t)
        counts.update(words(t.lower() if lowercase else t))
    ranked = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    return TokenizerSpec(type="words", vocab=tuple(ranked[:max_size]), lowercase=lowercase)
