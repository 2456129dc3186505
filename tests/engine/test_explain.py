"""Explaining a prediction: exact Shapley values over the sent modalities (efficiency, symmetry, dummy), on games and
on constructed models run by the real predictor; each subset's value is what sending only that subset answers;
the encoders run once per sent modality."""
from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from app.engine import explain
from app.engine.predictor import Predictor
from app.model.artifact import load_artifact, save_artifact
from app.model.batch import Sample
from app.model.classifier import FusionClassifier
from app.model.spec import FUSION_TYPES, MODALITIES, ArtifactSpec
from tests.helpers import tiny_spec, write_tiny_artifact

# Distinct temperatures per subset, so that a subset answered with another subset's temperature would show.
TEMPERATURES = {"image": 1.7, "text": 0.6, "audio": 2.3, "image+text": 1.1, "image+audio": 0.8, "text+audio": 1.4,
                "image+text+audio": 0.9}


def full_sample(seed: int = 0) -> Sample:
    g = torch.Generator().manual_seed(seed)
    return Sample(image=torch.randn(1, 16, 16, generator=g), text=torch.randint(2, 200, (9,), generator=g),
                  audio=torch.randn(2000, generator=g) * 0.3)


def only(sample: Sample, modalities: tuple[str, ...]) -> Sample:
    return Sample(**{m: getattr(sample, m) if m in modalities else None for m in MODALITIES})


SUBSETS = [s for r in (1, 2, 3) for s in itertools.combinations(MODALITIES, r)]


def predictor_for(tmp_path: Path, spec: ArtifactSpec, edit: Callable[[FusionClassifier], None] | None = None,
                  seed: int = 0) -> Predictor:
    """The real predictor over an artifact of `spec` (seeded weights, then `edit`ed), as the service loads it."""
    if edit is None:
        return Predictor(load_artifact(write_tiny_artifact(tmp_path / spec.name, spec, seed=seed)), torch.device("cpu"))
    torch.manual_seed(seed)
    model = FusionClassifier(spec)
    with torch.no_grad():
        edit(model)
    save_artifact(tmp_path / spec.name, spec, model, "# constructed\n", metrics={})
    return Predictor(load_artifact(tmp_path / spec.name), torch.device("cpu"))


def explained(predictor: Predictor, sample: Sample) -> explain.Explanation:
    (scores,) = predictor.predict([sample], [True])
    assert scores.subsets is not None
    return explain.build(scores.probabilities, scores.subsets, explain.mask_code(sample.modalities),
                         predictor.spec.ordered_modalities, scores.fusion or {})


# --- the Shapley values themselves, on games -------------------------------------------------------------------

def random_game(players: int, seed: int) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {s: rng.random(4) for s in range(1 << players)}


@pytest.mark.parametrize("players", [1, 2, 3])
def test_shapley_values_are_efficient(players: int) -> None:
    for seed in range(20):
        game = random_game(players, seed)
        phi = explain.shapley(game, players)
        np.testing.assert_allclose(phi.sum(axis=0), game[(1 << players) - 1] - game[0], atol=1e-12)


def test_shapley_values_of_known_games() -> None:
    # Two players, v({0}) = 1, v({1}) = 3, v({0,1}) = 6 (v(0) = 0): phi0 = (1 + (6-3))/2 = 2, phi1 = (3 + (6-1))/2 = 4.
    phi = explain.shapley({0: np.zeros(1), 1: np.ones(1), 2: np.full(1, 3.0), 3: np.full(1, 6.0)}, 2)
    np.testing.assert_allclose(phi[:, 0], [2.0, 4.0])
    # Glove game: player 2 holds a left glove, players 0 and 1 a right one each; a pair is worth 1.
    glove = {s: np.array([1.0 if s & 4 and s & 3 else 0.0]) for s in range(8)}
    np.testing.assert_allclose(explain.shapley(glove, 3)[:, 0], [1 / 6, 1 / 6, 2 / 3])


def test_shapley_values_are_symmetric_and_give_a_dummy_nothing() -> None:
    # Players 0 and 2 are twins (the worth depends only on how many of them play); player 1 is a dummy.
    worth = np.random.default_rng(1).random((3, 4))
    game = {s: worth[(s & 1) + (s >> 2 & 1)] for s in range(8)}
    phi = explain.shapley(game, 3)
    np.testing.assert_allclose(phi[1], 0.0, atol=1e-12)
    np.testing.assert_allclose(phi[0], phi[2], atol=1e-12)
    assert np.abs(phi[0]).max() > 1e-3


# --- on the real predictor ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("fusion", FUSION_TYPES)
def test_attributions_sum_to_the_probability_above_one_in_k(tmp_path: Path, fusion: str) -> None:
    predictor = predictor_for(tmp_path, tiny_spec(name=f"t-{fusion}", fusion=fusion, subset_temperatures=TEMPERATURES))
    sample = full_sample()
    for subset in SUBSETS:
        e = explained(predictor, only(sample, subset))
        (plain,) = predictor.predict([only(sample, subset)])
        assert e.modalities == subset and e.attributions.shape == (len(subset), 3)
        np.testing.assert_allclose(e.attributions.sum(axis=0), plain.probabilities - 1 / 3, atol=1e-5)
        assert e.baseline == pytest.approx(1 / 3)


@pytest.mark.parametrize("fusion", FUSION_TYPES)
def test_each_subset_is_valued_as_that_subset_sent_alone(tmp_path: Path, fusion: str) -> None:
    """v(S) is what a request sending only S gets: S's own temperature, the others' inputs never read."""
    predictor = predictor_for(tmp_path, tiny_spec(name=f"v-{fusion}", fusion=fusion, subset_temperatures=TEMPERATURES))
    sample = full_sample(1)
    e = explained(predictor, sample)
    assert list(e.subsets) == ["+".join(s) for s in SUBSETS]
    alone = predictor.predict([only(sample, s) for s in SUBSETS])
    for subset, scores in zip(SUBSETS, alone):
        np.testing.assert_allclose(e.subsets["+".join(subset)], scores.probabilities, atol=1e-5)
    for m, (label, p) in zip(e.modalities, e.own):
        assert label == int(np.argmax(e.subsets[m])) and p == pytest.approx(float(np.max(e.subsets[m])))


def test_a_batch_mixing_explained_and_plain_samples_answers_each_as_alone(tmp_path: Path) -> None:
    predictor = predictor_for(tmp_path, tiny_spec(name="mixed", subset_temperatures=TEMPERATURES))
    samples = [full_sample(0), only(full_sample(1), ("text",)), only(full_sample(2), ("image", "audio")),
               full_sample(3)]
    flags = [True, True, False, True]
    together = predictor.predict(samples, flags)
    for sample, flag, got in zip(samples, flags, together):
        (alone,) = predictor.predict([sample], [flag])
        np.testing.assert_allclose(got.probabilities, alone.probabilities, atol=1e-5)
        assert (got.subsets is None) == (not flag)
        if flag:
            assert set(got.subsets) == set(alone.subsets)
            for code in got.subsets:
                np.testing.assert_allclose(got.subsets[code], alone.subsets[code], atol=1e-5)


def test_the_encoders_run_once_per_sent_modality_and_fusion_once(tmp_path: Path) -> None:
    predictor = predictor_for(tmp_path, tiny_spec(name="count"))
    rows: dict[str, list[int]] = {"image": [], "text": [], "audio": [], "fusion": []}
    for name, module in [*predictor.model.encoders.items(), ("fusion", predictor.model.fusion)]:
        module.register_forward_hook(lambda mod, args, out, name=name: rows[name].append(out.shape[0]))
    predictor.predict([full_sample(0), only(full_sample(1), ("text", "audio"))], [True, True])
    assert rows == {"image": [1], "text": [2], "audio": [2], "fusion": [2 + 6 + 2]}


def test_a_dummy_modality_gets_zero(tmp_path: Path) -> None:
    """Concat fusion whose layers ignore the audio slot (its features and flag), with no biases and zero absence
    tokens: the answer never depends on audio, and audio alone answers 1/K. The audio encoder still runs."""
    spec = tiny_spec(name="dummy", fusion="concat")
    dim = spec.fusion.dim

    def ignore_audio(model: FusionClassifier) -> None:
        first, second = model.fusion.mlp[0], model.fusion.mlp[3]
        first.weight[:, 2 * dim: 3 * dim] = 0
        first.weight[:, 3 * dim + 2] = 0
        first.bias.zero_()
        second.bias.zero_()
        model.head[1].bias.zero_()

    predictor = predictor_for(tmp_path, spec, ignore_audio)
    for seed in range(3):
        e = explained(predictor, full_sample(seed))
        np.testing.assert_allclose(e.subsets["audio"], 1 / 3, atol=1e-6)
        np.testing.assert_allclose(e.attributions[2], 0.0, atol=1e-6)
        assert np.abs(e.attributions[:2]).max() > 1e-3  # image and text do carry the answer


def test_twin_modalities_get_equal_shares(tmp_path: Path) -> None:
    """Weighted-sum fusion with equal weights, and image and text encoders that output the same vector whatever the
    input: image and text are interchangeable players, so their Shapley values are equal."""
    spec = tiny_spec(name="twins", fusion="weighted_sum")

    def twins(model: FusionClassifier) -> None:
        constant = torch.randn(spec.fusion.dim, generator=torch.Generator().manual_seed(5))
        for proj in (model.encoders["image"].net.proj, model.encoders["text"].proj):
            proj.weight.zero_()
            proj.bias.copy_(constant)

    predictor = predictor_for(tmp_path, spec, twins)
    for seed in range(3):
        e = explained(predictor, full_sample(seed))
        np.testing.assert_allclose(e.attributions[0], e.attributions[1], atol=1e-6)
        assert np.abs(e.attributions[0]).max() > 1e-3 and np.abs(e.attributions[2]).max() > 1e-3


def test_conflict_and_agreement() -> None:
    """A modality alone at 0.8 or more on another label than the fused answer is a conflict; at 0.79 it is not."""
    def probs(label: int, p: float) -> np.ndarray:
        out = np.full(3, (1 - p) / 2)
        out[label] = p
        return out

    full = probs(0, 0.7)
    subsets = {1: probs(1, 0.85), 2: probs(0, 0.9), 4: probs(2, 0.79), 3: probs(0, 0.6), 5: probs(1, 0.5),
               6: probs(0, 0.5)}
    e = explain.build(full, subsets, 7, MODALITIES, {})
    assert e.conflicts == ("image",) and e.conflict and not e.agreement
    assert e.own == ((1, pytest.approx(0.85)), (0, pytest.approx(0.9)), (2, pytest.approx(0.79)))
    agreeing = explain.build(full, {1: probs(0, 0.95), 2: probs(0, 0.4), 3: full}, 3, MODALITIES, {})
    assert agreeing.agreement and not agreeing.conflict
    alone = explain.build(full, {}, 4, MODALITIES, {})
    assert alone.agreement and not alone.conflict and alone.modalities == ("audio",)


@pytest.mark.parametrize(("fusion", "name"), [("weighted_sum", "weights"), ("gated", "gates"),
                                               ("attention", "attention")])
def test_fusion_internals_are_over_the_sent_modalities(tmp_path: Path, fusion: str, name: str) -> None:
    predictor = predictor_for(tmp_path, tiny_spec(name=f"i-{fusion}", fusion=fusion), seed=3)
    e = explained(predictor, only(full_sample(), ("image", "audio")))
    values = e.fusion[name]
    assert set(e.fusion) == {name} and values.shape[-1] == 2
    if name == "weights":
        logits = predictor.model.fusion.weight_logits.detach()[[0, 2]]
        np.testing.assert_allclose(values, torch.softmax(logits, 0).numpy(), atol=1e-6)
    if name == "gates":
        np.testing.assert_allclose(values.sum(), 1.0, atol=1e-6)
    if name == "attention":
        assert values.shape == (predictor.spec.fusion.layers, 2)
        assert ((values > 0) & (values.sum(axis=-1, keepdims=True) < 1)).all()  # the rest is [CLS] on itself


@pytest.mark.parametrize("fusion", ["concat", "product", "late"])
def test_fusion_types_without_internals_report_none(tmp_path: Path, fusion: str) -> None:
    predictor = predictor_for(tmp_path, tiny_spec(name=f"n-{fusion}", fusion=fusion))
    assert explained(predictor, full_sample()).fusion == {}


@pytest.mark.gpu
@pytest.mark.parametrize(("dtype", "tolerance"), [("float32", 1e-4), ("bfloat16", 0.03), ("float16", 0.01)])
def test_on_cuda_explanations_add_up_and_agree_with_the_cpu(tmp_path: Path, dtype: str, tolerance: float) -> None:
    spec = tiny_spec(name=f"cuda-{dtype}", dtype=dtype, subset_temperatures=TEMPERATURES)
    path = write_tiny_artifact(tmp_path / spec.name, spec)
    cpu = Predictor(load_artifact(path), torch.device("cpu"))
    cuda = Predictor(load_artifact(path), torch.device("cuda"))
    samples = [full_sample(0), only(full_sample(1), ("text", "audio")), only(full_sample(2), ("image",))]
    on_cuda = cuda.predict(samples, [True, False, True])
    for sample, scores in zip(samples, on_cuda):
        (reference,) = cpu.predict([sample], [scores.subsets is not None])
        np.testing.assert_allclose(scores.probabilities, reference.probabilities, atol=tolerance)
        if scores.subsets is None:
            continue
        e = explain.build(scores.probabilities, scores.subsets, explain.mask_code(sample.modalities),
                          spec.ordered_modalities, scores.fusion or {})
        np.testing.assert_allclose(e.attributions.sum(axis=0), scores.probabilities - 1 / 3, atol=1e-5)
        for code, probs in scores.subsets.items():
            np.testing.assert_allclose(probs, reference.subsets[code], atol=tolerance)


def test_a_model_served_by_onnx_runtime_explains_as_torch_does(tmp_path: Path) -> None:
    """Plain predictions may run on ONNX Runtime; explanations (the fusion's internals, the subset passes) run on
    torch, and agree with a torch-served model's, including the probabilities of the sample itself."""
    from app.engine.runtime import RuntimeOptions

    spec = tiny_spec(fusion="attention", subset_temperatures=TEMPERATURES)
    folder = write_tiny_artifact(tmp_path / "m", spec, seed=3)
    served = Predictor(load_artifact(folder), torch.device("cpu"), runtime=RuntimeOptions(requested="onnxruntime"))
    reference = Predictor(load_artifact(folder), torch.device("cpu"), runtime=RuntimeOptions(requested="torch"))
    assert served.runtime.name == "onnxruntime"
    sample = full_sample(5)
    got, want = explained(served, sample), explained(reference, sample)
    np.testing.assert_allclose(got.attributions, want.attributions, atol=1e-5)
    assert got.subsets.keys() == want.subsets.keys()
    for key in want.subsets:
        np.testing.assert_allclose(got.subsets[key], want.subsets[key], atol=1e-5)
    assert got.fusion.keys() == want.fusion.keys() and got.fusion  # attention weights, from torch
    (plain,) = served.predict([sample])  # ONNX Runtime's answer
    np.testing.assert_allclose(plain.probabilities, reference.predict([sample])[0].probabilities, atol=1e-4)
