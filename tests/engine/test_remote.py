"""Front ends and a model owner in one test process: the wire format, batches across front ends, an owner that
goes away, and errors that cross the process boundary."""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from app.config import Settings
from app.engine import ipc
from app.engine.config import EngineConfig
from app.engine.owner import run
from app.engine.predictor import Predictor
from app.engine.remote import RemoteEngine
from app.errors import CorruptInput, NotReady, Overloaded
from app.inputs.parts import RawInputs
from app.metrics import ServiceMetrics
from app.model.batch import Sample
from tests.helpers import png_bytes, wav_bytes

RAW = RawInputs(image=png_bytes(), text=b"a cat", audio=wav_bytes())


async def connected(config: EngineConfig, path: Path) -> RemoteEngine:
    """A front end connected to the owner at `path`."""
    front = RemoteEngine(config, [path])
    front.load()
    front.start()
    while not front.healthy:
        await asyncio.sleep(0.01)
    return front


def test_samples_and_errors_survive_the_wire() -> None:
    sample = Sample(image=torch.rand(1, 4, 4), text=torch.tensor([5, 6, 7]), audio=None)
    message = ("predict", 7, "m", ipc.pack_samples([sample]))

    async def roundtrip() -> object:
        reader = asyncio.StreamReader()
        for part in ipc.encode(message):
            reader.feed_data(bytes(part))
        return await ipc.receive(reader)

    kind, rid, name, packed = asyncio.run(roundtrip())
    (back,) = ipc.unpack_samples(packed)
    assert (kind, rid, name) == ("predict", 7, "m")
    assert torch.equal(back.image, sample.image) and torch.equal(back.text, sample.text) and back.audio is None
    error = ipc.error_from_fields(*ipc.error_fields(Overloaded("busy", retry_after_s=3)))
    assert isinstance(error, Overloaded) and error.message == "busy" and error.retry_after_s == 3
    assert type(ipc.error_from_fields("NoSuchError", "x", None)).__name__ == "ModelFailure"


def test_a_corrupt_frame_length_is_refused_not_allocated() -> None:
    async def read() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(ipc._HEADER.pack(ipc.MAX_FRAME_BYTES + 1, 0))
        await ipc.receive(reader)

    with pytest.raises(ConnectionError):
        asyncio.run(read())


class OwnerThread:
    """A model owner on its own event loop in a thread, stoppable."""

    def __init__(self, config: EngineConfig, path: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.stop = asyncio.Event()
        self.thread = threading.Thread(target=self._run, args=(config, path), daemon=True)
        self.thread.start()
        assert self.ready.wait(120)

    def _run(self, config: EngineConfig, path: Path) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(run(config, path, ServiceMetrics(8), self.ready.set, self.stop))

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(30)


@pytest.fixture()
def owned(models_dir: Path, tmp_path: Path) -> Iterator[tuple[EngineConfig, Path, OwnerThread]]:
    config = EngineConfig.from_settings(Settings(models_dir=models_dir, max_batch_size=16, warmup=False))
    path = tmp_path / "owner.sock"
    owner = OwnerThread(config, path)
    try:
        yield config, path, owner
    finally:
        owner.close()


def test_front_ends_share_the_owners_batches(
    owned: tuple[EngineConfig, Path, OwnerThread], monkeypatch: pytest.MonkeyPatch
) -> None:
    config, path, owner = owned
    held, release = threading.Event(), threading.Event()
    original = Predictor.predict

    def hold_first(self: Predictor, samples: list) -> list:
        if not held.is_set():
            held.set()
            assert release.wait(30)
        return original(self, samples)

    monkeypatch.setattr(Predictor, "predict", hold_first)

    async def main() -> list[int]:
        fronts = [await connected(config, path) for _ in range(2)]
        first = asyncio.ensure_future(fronts[0].predict(None, [RAW]))
        while not held.is_set():
            await asyncio.sleep(0.01)
        calls = [asyncio.ensure_future(f.predict(None, [RAW] * 4)) for f in fronts]  # queue while the model is held
        await asyncio.sleep(0.3)
        release.set()
        results = await asyncio.gather(first, *calls)
        for f in fronts:
            await f.stop()
        assert fronts[0].describe(None).device == "cpu"  # what the owner reported
        return [p.batch_size for r in results[1:] for p in r]

    assert asyncio.run(main()) == [8] * 8  # one batch held the samples of both front ends


def test_errors_come_back_as_the_same_error(owned: tuple[EngineConfig, Path, OwnerThread]) -> None:
    config, path, _ = owned

    async def main() -> None:
        front = await connected(config, path)
        with pytest.raises(CorruptInput):  # decoded in the front end: never sent
            await front.predict(None, [RawInputs(image=b"\x89PNG\r\n\x1a\n-truncated")])
        (p,) = await front.predict(None, [RAW])
        assert np.isclose(p.probabilities.sum(), 1) and p.modalities == ("image", "text", "audio")
        await front.stop()

    asyncio.run(main())


def test_a_front_end_without_its_owner_answers_503_at_once(models_dir: Path, tmp_path: Path) -> None:
    config = EngineConfig.from_settings(Settings(models_dir=models_dir))

    async def main() -> None:
        front = RemoteEngine(config, [tmp_path / "nobody.sock"])
        front.load()
        front.start()
        await asyncio.sleep(0.05)
        assert not front.healthy
        with pytest.raises(NotReady) as refused:
            await front.predict(None, [RAW])
        assert refused.value.retry_after_s == 1
        await front.stop()

    asyncio.run(main())


def test_explanations_cross_the_process_boundary(owned: tuple[EngineConfig, Path, OwnerThread]) -> None:
    """Asked to explain, a front end's prediction carries the owner's explanation: its subset values are what the
    owner answers for each subset sent alone, and its attributions add up."""
    config, path, _ = owned

    async def main() -> None:
        front = await connected(config, path)
        (p,) = await front.predict(None, [RAW], explain=True)
        (plain,) = await front.predict(None, [RAW])
        alone = await front.predict(None, [RawInputs(image=RAW.image), RawInputs(text=RAW.text),
                                           RawInputs(audio=RAW.audio)])
        await front.stop()
        e = p.explanation
        assert e is not None and plain.explanation is None
        np.testing.assert_allclose(e.attributions.sum(axis=0), p.probabilities - e.baseline, atol=1e-5)
        np.testing.assert_allclose(p.probabilities, plain.probabilities, atol=1e-5)
        for m, prediction in zip(("image", "text", "audio"), alone):
            np.testing.assert_allclose(e.subsets[m], prediction.probabilities, atol=1e-5)
        assert set(e.fusion) == {"attention"}

    asyncio.run(main())
