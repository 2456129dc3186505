"""The CUDA path for real (skipped without a CUDA device; bench/gpu.sh runs these first): the model on the device,
batched forward passes in the artifact's dtype, pinned-memory non-blocking copies, a real out-of-memory error split
and retried, warm-up, and the service ready on the GPU."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from app.engine.predictor import Predictor
from app.engine.runtime import RuntimeOptions
from app.model.artifact import load_artifact
from app.model.batch import Batch, Sample
from app.model.spec import ImageSpec
from tests.helpers import TEXT, tiny_spec, write_tiny_artifact
from tests.model.test_cpu_inference import mixed_samples
from tests.server import running_server

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")


def probabilities_of(predictor: Predictor, samples: list[Sample]) -> list[np.ndarray]:
    return [scores.probabilities for scores in predictor.predict(samples)]

def on(device: torch.device, folder: Path, requested: str = "auto") -> Predictor:
    return Predictor(load_artifact(folder), device, runtime=RuntimeOptions(requested=requested))


def test_the_model_runs_on_the_device_and_answers_as_on_the_cpu(tmp_path: Path) -> None:
    folder = write_tiny_artifact(tmp_path / "m")
    gpu, cpu = on(CUDA, folder), on(torch.device("cpu"), folder, "torch")
    assert all(p.device.type == "cuda" for p in gpu.model.parameters())
    assert gpu.runtime.name == "torch"  # auto on a GPU: torch (ONNX Runtime serves CPU models only)
    samples = mixed_samples(12)  # every modality subset, in one batch
    got, want = probabilities_of(gpu, samples), probabilities_of(cpu, samples)
    assert len(got) == 12
    for g, w in zip(got, want):
        assert g.dtype == np.float32 and abs(float(g.sum()) - 1) < 1e-4
        assert float(np.abs(g - w).max()) < 1e-2  # TF32 convolutions on the GPU: close, not bit-equal


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_mixed_precision_follows_the_artifact_dtype(tmp_path: Path, dtype: str) -> None:
    folder = write_tiny_artifact(tmp_path / "m", tiny_spec(name="m", dtype=dtype))
    predictor = on(CUDA, folder)
    seen: dict[str, torch.dtype] = {}

    def record(name: str):  # noqa: ANN202 - a forward hook
        def hook(module: nn.Module, inputs: object, output: torch.Tensor) -> None:
            seen[name] = output.dtype
        return hook

    model = predictor.model
    next(m for m in model.encoders["image"].modules() if isinstance(m, nn.Conv2d)).register_forward_hook(
        record("conv"))
    next(m for m in model.modules() if isinstance(m, nn.Linear)).register_forward_hook(record("linear"))
    model.encoders["audio"].features.register_forward_hook(record("log-mel"))
    probabilities = probabilities_of(predictor, mixed_samples(6))
    expected = getattr(torch, dtype)
    assert seen == {"conv": expected, "linear": expected, "log-mel": torch.float32}
    as_float32 = probabilities_of(on(CUDA, write_tiny_artifact(tmp_path / "f", tiny_spec(name="f"))), mixed_samples(6))
    for p, q in zip(probabilities, as_float32):
        assert p.dtype == np.float32 and abs(float(p.sum()) - 1) < 1e-3
        assert float(np.abs(p - q).max()) < 0.05  # the same weights, in reduced precision


def test_batches_go_to_the_device_from_pinned_memory_without_blocking(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    predictor = on(CUDA, write_tiny_artifact(tmp_path / "m"))
    copies: list[tuple[bool, bool]] = []
    to = Batch.to

    def spy(self: Batch, device: torch.device, *, non_blocking: bool = False) -> Batch:
        copies.append((all(t.is_pinned() for t in (self.mask, self.image, self.text, self.audio) if t is not None),
                       non_blocking))
        return to(self, device, non_blocking=non_blocking)

    monkeypatch.setattr(Batch, "to", spy)
    assert len(predictor.predict(mixed_samples(5))) == 5
    assert copies == [(True, True)]


def test_a_real_out_of_memory_error_is_split_and_retried(tmp_path: Path) -> None:
    """Fill the GPU until a large batch cannot fit but a quarter of it can: the batch is answered in full, by halves,
    with the answers it gets when memory is plentiful."""
    spec = tiny_spec(name="big", modalities=("image",)).model_copy(
        update={"image": ImageSpec(size=160, channels=1, width=16)})
    predictor = on(CUDA, write_tiny_artifact(tmp_path / "big", spec))
    g = torch.Generator().manual_seed(0)
    samples = [Sample(image=torch.rand(1, 160, 160, generator=g) * 2 - 1) for _ in range(256)]
    expected = probabilities_of(predictor, samples[:32]) + probabilities_of(predictor, samples[32:64])
    # Memory one more sample takes, from the peaks of two batch sizes.
    peaks = []
    for n in (16, 64):
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        predictor.predict(samples[:n])
        peaks.append(torch.cuda.max_memory_allocated() - base)
    per_sample = max((peaks[1] - peaks[0]) / 48, 1)
    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info()
    headroom = int(peaks[0] + 80 * per_sample)  # a batch of 64 fits; 256 needs ~4x that
    hog = torch.empty(max(free - headroom, 0), dtype=torch.uint8, device=CUDA)
    try:
        splits = predictor.oom_splits
        got = probabilities_of(predictor, samples)
        assert predictor.oom_splits > splits  # it really ran out, and split
    finally:
        del hog
        torch.cuda.empty_cache()
    assert len(got) == 256
    for a, b in zip(got[:64], expected):
        assert float(np.abs(a - b).max()) < 1e-3
    assert predictor.predict(samples[:4])  # and it serves afterwards


def test_warmup_takes_the_memory_the_largest_batch_needs(tmp_path: Path) -> None:
    predictor = on(CUDA, write_tiny_artifact(tmp_path / "m"))
    torch.cuda.empty_cache()
    before = torch.cuda.memory_reserved()
    predictor.warmup(64)
    warmed = torch.cuda.memory_reserved()
    assert warmed > before
    full = predictor.example_sample()
    for size in (64, 37, 5, 1):  # sizes on and between the warm-up's rungs
        predictor.predict([full] * size)
    assert torch.cuda.memory_reserved() - warmed <= 0.25 * (warmed - before)  # (almost) nothing new to allocate


def test_the_service_warms_up_on_the_gpu_and_reports_ready(models_dir: Path) -> None:
    with running_server(models_dir, device="cuda", runtime="auto", max_batch_size=32) as s, s.client() as c:
        assert c.get("/readyz").status_code == 200
        info = c.get("/v1/models/tiny").json()
        assert info["device"].startswith("cuda") and info["runtime"]["name"] == "torch"
        r = c.post("/v1/predict", files=TEXT)
        assert r.status_code == 200, r.text
        assert abs(sum(r.json()["probabilities"].values()) - 1) < 1e-4


def test_onnxruntime_asked_for_on_a_gpu_is_torch_with_a_warning(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    predictor = on(CUDA, write_tiny_artifact(tmp_path / "m"), "onnxruntime")
    assert predictor.runtime.name == "torch" and "CPU models only" in predictor.runtime.note
    assert "FUSION_RUNTIME=onnxruntime" in caplog.text
