"""Why a prediction came out as it did, from the calibrated probabilities of every subset of its inputs.

The players are the modalities the caller sent; the value of a subset S, for a label, is the calibrated probability
of that label from S alone (S's own temperature, as a request sending only S gets), and the value of nothing is
1/K, the probability of a label knowing nothing. Shapley values split p(label | all sent) - 1/K among the sent
modalities, exactly (at most 3 players, so every subset is computed: no sampling). No torch here: an explanation is
numbers, built wherever the predictor's output lands.
"""
from __future__ import annotations

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
    n = players
    weight = [factorial(size) * factorial(n - size - 1) / factorial(n) for size in range(n)]
    phi = np.zeros((n, *np.shape(values[0])), dtype=np.float64)
    for i in range(n):
        bit = 1 << i
        for s in range(1 << n):
            if not s & bit:
                phi[i] += weight[s.bit_count()] * (np.asarray(values[s | bit], np.float64) - values[s])
    return phi


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
    players = members(sent)
    k = len(probabilities)
    baseline = 1.0 / k
    by_code = {**subsets, sent: probabilities}
    # Coalitions of the players (bit i: the i-th sent modality) -> the subset of modalities they stand for.
    codes = [sum(1 << MODALITIES.index(players[i]) for i in range(len(players)) if s >> i & 1)
             for s in range(1 << len(players))]
    values = {s: (np.full(k, baseline) if code == 0 else by_code[code]) for s, code in enumerate(codes)}
    attributions = shapley(values, len(players))
    own = tuple((int(np.argmax(by_code[mask_code([m])])), float(np.max(by_code[mask_code([m])]))) for m in players)
    fused = int(np.argmax(probabilities))
    conflicts = tuple(m for m, (label, p) in zip(players, own) if label != fused and p >= CONFLICT_PROBABILITY)
    columns = [list(model_modalities).index(m) for m in players]
    return Explanation(
        modalities=players,
        subsets={"+".join(members(code)): np.asarray(by_code[code]) for code in sorted(by_code, key=_subset_order)},
        attributions=attributions,
        baseline=baseline,
        own=own,
        agreement=len({label for label, _ in own}) == 1,
        conflicts=conflicts,
        fusion={name: np.asarray(v)[..., columns] for name, v in fusion.items()},
    )


def _subset_order(code: int) -> tuple[int, list[int]]:
    """Smaller subsets first, then in MODALITIES order: image, text, audio, image+text, ..."""
    return code.bit_count(), [i for i in range(len(MODALITIES)) if code >> i & 1]
