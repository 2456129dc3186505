"""How many processes of which kind `fusion-serve serve` runs, from the settings and the host."""
from __future__ import annotations

from pathlib import Path

import pytest

from app.config import Settings
from app.host import available_cpus
from app.http import plan as plan_module
from app.http.plan import Plan


@pytest.fixture()
def host(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    def make(cpus: int, gpus: int = 0) -> None:
        monkeypatch.setattr(plan_module, "available_cpus", lambda: cpus)
        monkeypatch.setattr(plan_module, "cuda_devices", lambda: tuple(f"cuda:{i}" for i in range(gpus)))

    return make


def test_a_cpu_host_runs_one_worker_per_cpu_each_with_its_own_models(host) -> None:  # noqa: ANN001
    host(8)
    plan = Plan.from_settings(Settings())
    assert (plan.workers, plan.devices) == (8, ())
    worker = plan.worker_settings()
    assert worker.torch_threads == 1 and worker.preprocess_workers == 0


def test_a_gpu_host_runs_one_model_owner_per_gpu_fed_by_every_worker(host) -> None:  # noqa: ANN001
    host(16, gpus=2)
    plan = Plan.from_settings(Settings())
    assert (plan.workers, plan.devices) == (16, ("cuda:0", "cuda:1"))
    assert plan.worker_settings().torch_threads == 1  # the workers only decode and preprocess
    assert plan.owner_settings("cuda:1").torch_threads == 1


def test_explicit_settings_win(host) -> None:  # noqa: ANN001
    host(8, gpus=2)
    plan = Plan.from_settings(Settings(workers=3, model_placement="owner", devices="cuda:1", torch_threads=2))
    assert (plan.workers, plan.devices) == (3, ("cuda:1",))
    assert plan.worker_settings().torch_threads == 2
    assert Plan.from_settings(Settings(device="cpu")).devices == ()  # cpu: no owner on a GPU
    cpu_owner = Plan.from_settings(Settings(workers=2, model_placement="owner"))
    assert cpu_owner.devices == ("cuda:0", "cuda:1")
    host(4)
    cpu_owner = Plan.from_settings(Settings(workers=2, model_placement="owner"))
    assert cpu_owner.devices == ("cpu",) and cpu_owner.owner_settings("cpu").torch_threads == 2


def test_one_worker_with_its_own_models_is_a_single_process(host) -> None:  # noqa: ANN001
    host(1)
    plan = Plan.from_settings(Settings())
    assert plan.single_process and plan.worker_settings().torch_threads == 1


@pytest.mark.parametrize(("cpu_max", "expected"), [("max 100000", 64), ("400000 100000", 4), ("150000 100000", 2),
                                                   ("1000 100000", 1), ("garbage", 64)])
def test_a_containers_cpu_quota_bounds_the_cpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cpu_max: str,
                                                expected: int) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(64)))
    (tmp_path / "cpu.max").write_text(cpu_max + "\n")
    assert available_cpus(tmp_path / "cpu.max") == expected
    assert available_cpus(tmp_path / "absent") == 64
