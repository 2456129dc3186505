"""How many processes of which kind a service runs, decided once from the settings and the host."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from app.config import Settings
from app.host import available_cpus, decode_threads


def cuda_devices() -> tuple[str, ...]:
    import torch

    return tuple(f"cuda:{i}" for i in range(torch.cuda.device_count())) if torch.cuda.is_available() else ()


@dataclass(frozen=True)
class Plan:
    """`workers` front-end processes; `devices`: one model owner each (empty: every worker loads its own copy of the
    models). `cpus`: the CPUs this service may use, which the processes' thread counts share."""

    settings: Settings
    workers: int
    devices: tuple[str, ...]
    cpus: int

    @classmethod
    def from_settings(cls, s: Settings) -> Plan:
        cpus = available_cpus()
        placement = s.model_placement
        cuda = () if s.device == "cpu" else cuda_devices()
        if placement == "auto":
            placement = "owner" if cuda or s.devices else "per_worker"
        devices = () if placement == "per_worker" else (tuple(s.devices) or cuda or ("cpu",))
        return cls(settings=s, workers=s.workers or cpus, devices=devices, cpus=cpus)

    @property
    def single_process(self) -> bool:
        """One worker with its own models: the service runs in this process, no supervisor."""
        return self.workers == 1 and not self.devices

    def worker_settings(self) -> Settings:
        """A worker's settings: with its own models, its share of the CPUs for its forward pass; feeding owners,
        one thread (it decodes and preprocesses; its parallelism is the other workers). Its decode pool (when
        automatic) is sized for its share of the CPUs too."""
        s = self.settings
        share = max(1, self.cpus // self.workers)
        threads = s.torch_threads or (1 if self.devices else share)
        pool = s.preprocess_workers if s.preprocess_workers >= 0 else decode_threads(share)
        return s.model_copy(update={"torch_threads": threads, "preprocess_workers": pool})

    def owner_settings(self, device: str) -> Settings:
        """An owner's settings: on the CPU, half the CPUs for the forward pass (the workers need the rest)."""
        s = self.settings
        threads = s.torch_threads or (max(1, self.cpus // 2) if device == "cpu" else 1)
        return s.model_copy(update={"torch_threads": threads})

    def owner_sockets(self, rundir: Path) -> list[Path]:
        return [rundir / f"owner-{i}.sock" for i in range(len(self.devices))]

