"""Why a prediction came out as it did, from the calibrated probabilities of every subset of its inputs.

The players are the modalities the caller sent; the value of a subset S, for a label, is the calibrated probability
of that label from S alone (S's own temperature, as a request sending only S gets), and the value of nothing is
1/K, the probability of a label knowing nothing. Shapley values split p(label | all sent) - 1/K among the sent
modalities, exactly (at most 3 players, so every subset is computed: no sampling). No torch here: an explanation is
numbers, built wherever the predictor's output lands.
"""
from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from math import factorial

import numpy as np

from app.model.spec import MODALITIES, Modality

# A modality alone at or above this calibrated probability, on another label than the fused answer, is a conflict.
CONFLICT_PROBABILITY = 0.8


@dataclass(frozen=True, slots=True)
class Explanation:
    """One sample's explanation. Arrays are over the labels in the model's order; `modalities` are the players.

    - `subsets`: calibrated probabilities [K] from each non-empty subset of `modalities` alone, by subset key
      ('image+audio'); the full set's are the prediction itself.
    - `attributions`: [len(modalities), K] Shapley values; each label's column sums to p(label) - `baseline`.
    - `baseline`: v(empty set) = 1/K.
    - `own`: per modality, its own top label (index) and that label's probability from it alone.
    - `agreement`: whether every modality alone has the same top label (true with one modality).
    - `conflicts`: the modalities that alone give a label other than the fused answer a probability of at least
      CONFLICT_PROBABILITY.
    - `fusion`: the fusion's internals (app.model.fusion), their last axis over `modalities`; empty for fusion types
      without any.
    """

    modalities: tuple[Modality, ...]
    subsets: dict[str, np.ndarray]
    attributions: np.ndarray
    baseline: float
    own: tuple[tuple[int, float], ...]
    agreement: bool
    conflicts: tuple[Modality, ...]
    fusion: dict[str, np.ndarray]

    @property
    def conflict(self) -> bool:
        return bool(self.conflicts)


def mask_code(modalities: Sequence[str]) -> int:
    """The bits of a modality subset as `Batch.mask` orders them (image 1, text 2, audio 4)."""
    return sum(1 << MODALITIES.index(m) for m in set(modalities))


def members(code: int) -> tuple[Modality, ...]:
    return tuple(m for i, m in enumerate(MODALITIES) if code >> i & 1)


def proper_subsets(code: int) -> list[int]:
    """The non-empty proper subsets of the bit set `code`, largest first."""
    out, sub = [], (code - 1) & code
    while sub:
        out.append(sub)
        sub = (sub - 1) & code
    return out


def shapley(values: Mapping[int, np.ndarray], players: int) -> np.ndarray:
    """Exact Shapley values [players, ...] of the game whose coalition with bits `s` (player i is bit i) is worth
    `values[s]`; `values[0]` is the empty coalition's worth. Every coalition must be given."""
    worth = np.array([values[s] for s in range(1 << players)], dtype=np.float64)
    return _shapley_weights(players) @ worth


@functools.cache
def _shapley_weights(n: int) -> np.ndarray:
    """[n, 2^n]: phi_i = sum over coalitions s without i of |s|! (n - |s| - 1)! / n! (v(s + i) - v(s)), as one
    linear map of the coalitions' worths."""
    weights = np.zeros((n, 1 << n))
    for i in range(n):
        bit = 1 << i
        for s in range(1 << n):
            if not s & bit:
                w = factorial(s.bit_count()) * factorial(n - s.bit_count() - 1) / factorial(n)
                weights[i, s | bit] += w
                weights[i, s] -= w
    weights.setflags(write=False)
    return weights


def build(
    probabilities: np.ndarray,
    subsets: Mapping[int, np.ndarray],
    sent: int,
    model_modalities: Sequence[Modality],
    fusion: Mapping[str, np.ndarray],
) -> Explanation:
    """The explanation of a sample that sent the modalities with bits `sent`, predicted `probabilities`; `subsets`:
    the probabilities from each non-empty proper subset (by bits); `fusion`: the fusion's internals with their last
    axis over `model_modalities`."""
    players, coalitions, ordered = _layout(sent)
    k = len(probabilities)
    baseline = 1.0 / k
    by_code = {**subsets, sent: probabilities}
    worth = {s: (np.full(k, baseline) if code == 0 else by_code[code]) for s, code in enumerate(coalitions)}
    own = []
    for m in players:
        alone = by_code[1 << MODALITIES.index(m)]
        label = int(alone.argmax())
        own.append((label, float(alone[label])))
    fused = int(probabilities.argmax())
    columns = [model_modalities.index(m) for m in players]
    return Explanation(
        modalities=players,
        subsets={key: by_code[code] for code, key in ordered},
        attributions=shapley(worth, len(players)),
        baseline=baseline,
        own=tuple(own),
        agreement=len({label for label, _ in own}) == 1,
        conflicts=tuple(m for m, (label, p) in zip(players, own) if label != fused and p >= CONFLICT_PROBABILITY),
        fusion={name: np.asarray(v)[..., columns] for name, v in fusion.items()},
    )


@functools.cache
def _layout(sent: int) -> tuple[tuple[Modality, ...], tuple[int, ...], tuple[tuple[int, str], ...]]:
    """For the modalities with bits `sent`: the players; for each coalition of players (bit i: the i-th player),
    the modality bits it stands for; and every non-empty subset's bits and key, smaller subsets first, then in
    MODALITIES order (image, text, audio, image+text, ...)."""
    players = members(sent)
    coalitions = tuple(sum(1 << MODALITIES.index(players[i]) for i in range(len(players)) if s >> i & 1)
                       for s in range(1 << len(players)))
    codes = sorted((c for c in coalitions if c), key=lambda c: (c.bit_count(), [m for m in range(3) if c >> m & 1]))
    return players, coalitions, tuple((c, "+".join(members(c))) for c in codes)
