"""FUSION_RUNTIME: ONNX Runtime serves a model only where it answers as the model as trained; exports are cached
(next to the artifact, or in the cache folder when that is read-only) and re-checked at every load; `auto` serves
the faster; whatever fails leaves torch serving, with one warning."""
from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from app.engine import runtime as runtime_module
from app.engine.predictor import Predictor
from app.engine.runtime import RuntimeOptions
from app.model import onnx_parts
from app.model.artifact import load_artifact
from app.model.batch import Sample
from app.model.export_cache import ARTIFACT_SUBDIR, ExportCache
from app.model.spec import FUSION_TYPES, TextSpec
from app.model.classifier import FusionClassifier
from tests.helpers import tiny_spec, write_tiny_artifact
from tests.model.test_cpu_inference import mixed_samples

PARTS = ("all", "audio", "fusion", "image", "text")  # "all": every encoder and the fusion head in one graph


def predictor(folder: Path, requested: str, cache: Path) -> Predictor:
    return Predictor(load_artifact(folder), torch.device("cpu"),
                     runtime=RuntimeOptions(requested=requested, cache_dir=cache, timing_batch=4))


def assert_same_answers(a: Predictor, b: Predictor, samples: list[Sample]) -> None:
    for got_scores, want_scores in zip(a.predict(samples), b.predict(samples)):
        got, want = got_scores.probabilities, want_scores.probabilities
        assert int(got.argmax()) == int(want.argmax())
        assert float(np.abs(got - want).max()) < 1e-4


def copy_without_cache(folder: Path, to: Path) -> Path:
    shutil.copytree(folder, to, ignore=shutil.ignore_patterns(ARTIFACT_SUBDIR))
    return to


def cached_file(folder: Path, part: str) -> Path:
    (path,) = (folder / ARTIFACT_SUBDIR).glob(f"{part}-*.onnx")
    return path


def export_from(folder: Path, change: Callable[[str, bytes], bytes] = lambda part, data: data):
    """A stand-in for `onnx_parts.export` giving the genuine export cached in `folder`, changed by `change`."""
    def export(part: onnx_parts.Part) -> bytes:
        return change(part.name, cached_file(folder, part.name).read_bytes())
    return export


def perturbed(data: bytes) -> bytes:
    """The same graph with its weights changed: a valid model that answers differently."""
    model = onnx.load_from_string(data)
    for init in model.graph.initializer:
        if init.data_type == onnx.TensorProto.FLOAT and np.prod(init.dims) > 8:
            values = numpy_helper.to_array(init) * 1.5 + 0.1
            init.CopyFrom(numpy_helper.from_array(values.astype(np.float32), init.name))
    return model.SerializeToString()


def test_onnxruntime_answers_as_the_model_as_trained(exported: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    def no_export(part: onnx_parts.Part) -> bytes:
        raise AssertionError("exported again although the cache holds it")

    monkeypatch.setattr(onnx_parts, "export", no_export)
    served = predictor(exported, "onnxruntime", tmp_path / "cache")
    eager = predictor(exported, "torch", tmp_path / "cache")
    report = served.runtime
    assert report.name == "onnxruntime" and report.onnx_parts == PARTS
    assert report.parity is not None and report.parity <= 1e-4
    assert any(isinstance(m, onnx_parts.OrtPart) for m in served.model.modules())
    assert isinstance(served.model, onnx_parts.AllInputsPath)  # batches with every input in one session run
    # Every modality subset, batches of several sizes (the exports' batch and text axes are dynamic).
    samples = mixed_samples(12)
    assert_same_answers(served, eager, samples)
    assert_same_answers(served, eager, samples[:1])
    assert_same_answers(served, eager, [samples[5]] * 9)


def test_read_only_model_folder_caches_in_the_cache_folder(exported: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    folder = copy_without_cache(exported, tmp_path / "m")
    (folder / ARTIFACT_SUBDIR).write_text("not a folder")  # as on a read-only mount: nothing can be made there
    monkeypatch.setattr(onnx_parts, "export", export_from(exported))
    cache = tmp_path / "cache"
    assert predictor(folder, "onnxruntime", cache).runtime.name == "onnxruntime"
    assert sorted(p.name.split("-")[0] for p in cache.glob("*.onnx")) == list(PARTS)
    assert oct(cache.stat().st_mode & 0o777) == oct(0o700)

    def no_export(part: onnx_parts.Part) -> bytes:
        raise AssertionError("exported again although the cache folder holds it")

    monkeypatch.setattr(onnx_parts, "export", no_export)
    assert predictor(folder, "onnxruntime", cache).runtime.onnx_parts == PARTS


def test_a_cache_folder_others_may_write_to_is_not_used(exported: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    folder = copy_without_cache(exported, tmp_path / "m")
    (folder / ARTIFACT_SUBDIR).write_text("not a folder")
    cache = tmp_path / "cache"
    cache.mkdir()
    for part in PARTS:  # planted by someone else: a model that answers differently
        shutil.copy(cached_file(exported, part), cache / cached_file(exported, part).name)
        (cache / cached_file(exported, part).name).write_bytes(perturbed(cached_file(exported, part).read_bytes()))
    cache.chmod(0o777)
    exports: list[str] = []
    monkeypatch.setattr(onnx_parts, "export", lambda part: exports.append(part.name) or export_from(exported)(part))
    served = predictor(folder, "onnxruntime", cache)
    assert served.runtime.onnx_parts == PARTS and sorted(exports) == list(PARTS)


def test_a_cached_export_that_disagrees_is_exported_again(exported: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "m"
    shutil.copytree(exported, folder)
    stale = cached_file(folder, "fusion")
    stale.write_bytes(perturbed(stale.read_bytes()))
    exports: list[str] = []
    fresh = export_from(exported)
    monkeypatch.setattr(onnx_parts, "export", lambda part: exports.append(part.name) or fresh(part))
    served = predictor(folder, "onnxruntime", tmp_path / "cache")
    assert served.runtime.onnx_parts == PARTS and served.runtime.parity is not None
    assert served.runtime.parity <= 1e-4
    assert exports == ["fusion"]
    assert stale.read_bytes() == cached_file(exported, "fusion").read_bytes()  # the cache holds the good one now


def test_a_part_that_disagrees_is_served_by_torch(exported: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    folder = copy_without_cache(exported, tmp_path / "m")
    monkeypatch.setattr(onnx_parts, "export",
                        export_from(exported, lambda part, data: perturbed(data) if part == "image" else data))
    with caplog.at_level(logging.WARNING, logger="app.engine.runtime"):
        served = predictor(folder, "onnxruntime", tmp_path / "cache")
    assert served.runtime.name == "onnxruntime"
    assert served.runtime.onnx_parts == ("all", "audio", "fusion", "text")
    assert "image disagreed" in served.runtime.note
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert not list((folder / ARTIFACT_SUBDIR).glob("image-*"))  # a bad export is never cached
    assert_same_answers(served, predictor(folder, "torch", tmp_path / "cache"), mixed_samples(8))


def test_when_no_part_agrees_torch_serves_with_one_warning(exported: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    folder = copy_without_cache(exported, tmp_path / "m")
    monkeypatch.setattr(onnx_parts, "export", export_from(exported, lambda part, data: perturbed(data)))
    with caplog.at_level(logging.WARNING):
        served = predictor(folder, "auto", tmp_path / "cache")
    assert served.runtime.name == "torch" and served.runtime.onnx_parts == ()
    assert not any(isinstance(m, onnx_parts.OrtPart) for m in served.model.modules())
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "torch serves instead" in warnings[0].getMessage()


def test_a_part_that_cannot_be_exported_is_served_by_torch(exported: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    folder = copy_without_cache(exported, tmp_path / "m")
    genuine = export_from(exported)

    def export(part: onnx_parts.Part) -> bytes:
        if part.name == "text":
            raise RuntimeError("unsupported operator\nmore detail")
        return genuine(part)

    monkeypatch.setattr(onnx_parts, "export", export)
    served = predictor(folder, "onnxruntime", tmp_path / "cache")
    assert served.runtime.onnx_parts == ("all", "audio", "fusion", "image")
    assert "text did not export (RuntimeError: unsupported operator)" in served.runtime.note


@pytest.mark.parametrize(("torch_s", "ort_s", "expected"), [(2.0, 1.0, "onnxruntime"), (1.0, 2.0, "torch")])
def test_auto_serves_the_faster(exported: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                torch_s: float, ort_s: float, expected: str) -> None:
    def timed(models, samples, sizes):  # noqa: ANN001, ANN202 - stands in for the measurement at load
        assert list(models) == ["torch", "onnxruntime"] and sizes == [1, 4]
        return {"torch": {s: torch_s * s for s in sizes}, "onnxruntime": {s: ort_s * s for s in sizes}}

    monkeypatch.setattr(runtime_module, "time_models", timed)
    served = predictor(exported, "auto", tmp_path / "cache")
    assert served.runtime.name == expected and served.runtime.requested == "auto"
    assert served.runtime.speedup == {1: torch_s / ort_s, 4: torch_s / ort_s}


def test_auto_times_both_for_real(exported: Path, tmp_path: Path) -> None:
    served = predictor(exported, "auto", tmp_path / "cache")
    assert served.runtime.name in ("torch", "onnxruntime")
    assert set(served.runtime.speedup) == {1, 4} and all(x > 0 for x in served.runtime.speedup.values())


@pytest.mark.parametrize("requested", ["auto", "onnxruntime"])
def test_without_onnxruntime_torch_serves(exported: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          caplog: pytest.LogCaptureFixture, requested: str) -> None:
    def missing() -> dict[str, str]:
        raise ModuleNotFoundError("No module named 'onnxruntime'", name="onnxruntime")

    monkeypatch.setattr(onnx_parts, "versions", missing)
    with caplog.at_level(logging.INFO, logger="app.engine.runtime"):
        served = predictor(exported, requested, tmp_path / "cache")
    assert served.runtime.name == "torch" and "onnxruntime missing" in served.runtime.note
    level = logging.WARNING if requested == "onnxruntime" else logging.INFO
    assert [r.levelno for r in caplog.records if "not installed" in r.getMessage()] == [level]


def test_torch_serves_when_asked(exported: Path, tmp_path: Path) -> None:
    served = predictor(exported, "torch", tmp_path / "cache")
    assert served.runtime.name == "torch" and served.runtime.requested == "torch"
    assert not any(isinstance(m, onnx_parts.OrtPart) for m in served.model.modules())


@pytest.mark.slow
@pytest.mark.parametrize("fusion", FUSION_TYPES)
def test_every_fusion_head_exports_and_agrees(fusion: str) -> None:
    torch.manual_seed(0)
    model = FusionClassifier(tiny_spec(fusion=fusion)).eval()
    (part,) = [p for p in onnx_parts.parts_of(model) if p.name == "fusion"]
    session = onnx_parts.session(onnx_parts.export(part), 1)
    g = torch.Generator().manual_seed(1)
    for rows in (1, 2, 7):
        feats = torch.randn(rows, 3, 16, generator=g)
        mask = torch.rand(rows, 3, generator=g) > 0.4
        mask[:, 1] |= ~mask.any(dim=1)
        with torch.inference_mode():
            want = part.module(feats, mask)
        got = onnx_parts.OrtPart(session, part.inputs)(feats, mask)
        assert float((got - want).abs().max()) < 1e-4


@pytest.mark.slow
def test_a_recurrent_text_encoder_stays_torch_and_the_rest_is_served(tmp_path: Path) -> None:
    spec = tiny_spec(name="rnn").model_copy(
        update={"text": TextSpec(encoder="lstm", embed_dim=16, layers=1, heads=2, max_tokens=32)})
    folder = write_tiny_artifact(tmp_path / "rnn", spec)
    served = predictor(folder, "onnxruntime", tmp_path / "cache")
    assert served.runtime.name == "onnxruntime"
    assert "text" not in served.runtime.onnx_parts and "fusion" in served.runtime.onnx_parts
    assert_same_answers(served, predictor(folder, "torch", tmp_path / "cache"), mixed_samples(8))


def test_a_damaged_cached_file_is_exported_again(exported: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "m"
    shutil.copytree(exported, folder)
    cached_file(folder, "audio").write_bytes(b"\x08\x07garbage")
    exports: list[str] = []
    fresh = export_from(exported)
    monkeypatch.setattr(onnx_parts, "export", lambda part: exports.append(part.name) or fresh(part))
    assert predictor(folder, "onnxruntime", tmp_path / "cache").runtime.onnx_parts == PARTS
    assert exports == ["audio"]


def test_processes_loading_the_same_model_export_it_once(exported: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """While one process holds the model's cache lock (it is exporting), another waits, then reads what the first
    cached instead of exporting again."""
    folder = copy_without_cache(exported, tmp_path / "m")
    exports: list[str] = []
    monkeypatch.setattr(onnx_parts, "export", lambda part: exports.append(part.name) or b"")
    digest = onnx_parts.weights_digest(load_artifact(folder).model)
    cache = ExportCache.for_artifact(folder, tmp_path / "cache")
    result: dict[str, Predictor] = {}
    with cache.locked(digest[:16]):  # a separate open file: flock excludes it even within one process
        loader = threading.Thread(target=lambda: result.setdefault("p", predictor(folder, "onnxruntime",
                                                                                   tmp_path / "cache")))
        loader.start()
        loader.join(2.0)
        assert loader.is_alive() and not exports  # waiting for the lock, not exporting
        shutil.copytree(exported / ARTIFACT_SUBDIR, folder / ARTIFACT_SUBDIR, dirs_exist_ok=True)
    loader.join(120)
    assert not exports and result["p"].runtime.onnx_parts == PARTS
