"""The `explanation` block of a /v1 prediction (`?explain=true`): app.engine.explain's numbers, named by label and
input (the schema, with every field's meaning, is `app.http.v1.schemas.Explanation`)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from app.engine.explain import Explanation


def explanation_body(labels: Sequence[str], fusion_type: str, e: Explanation, top: Sequence[int]) -> dict[str, Any]:
    """The block for the labels `top` (indices, in the order of the response's `top`)."""
    return {
        "baseline": e.baseline,
        "attributions": {
            labels[i]: {m: float(e.attributions[j, i]) for j, m in enumerate(e.modalities)} for i in top
        },
        "subsets": {key: {labels[i]: float(p[i]) for i in top} for key, p in e.subsets.items()},
        "modalities": {
            m: {"label": labels[label], "probability": p} for m, (label, p) in zip(e.modalities, e.own)
        },
        "agreement": e.agreement,
        "conflict": e.conflict,
        "conflicting": list(e.conflicts),
        "fusion": {"type": fusion_type, **_internals(e)},
    }


def _internals(e: Explanation) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, values in e.fusion.items():
        if values.ndim == 1:  # weights, gates: one value per sent input
            out[name] = dict(zip(e.modalities, values.tolist()))
        else:  # attention: one row per layer
            out[name] = [dict(zip(e.modalities, row)) for row in values.tolist()]
    return out
