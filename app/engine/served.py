"""One loaded model in this process: its front end, predictor and batcher, and the one path every call takes
through them: front end (check, decode/preprocess) -> batcher -> predictor -> probabilities, for 1..N samples."""
from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from app.engine.api import Announcement, ModelDescription, Prediction
from app.engine.batcher import DynamicBatcher
from app.engine.frontend import FrontEnd, Outcome, named_error, predictions, raise_first
from app.engine.pipeline import Job, Scored
from app.engine.predictor import Predictor
from app.inputs.budget import ByteBudget
from app.inputs.parts import RawInputs


@dataclass
class ServedModel:
    """One artifact, loaded and ready."""

    front: FrontEnd
    predictor: Predictor
    batcher: DynamicBatcher[Job, Scored]

    @property
    def name(self) -> str:
        return self.front.name

    @property
    def description(self) -> ModelDescription:
        return self.front.description

    async def predict(
        self,
        raws: Sequence[RawInputs],
        announcement: Announcement | None = None,
        budget: ByteBudget | None = None,
        *,
        explain: bool = False,
    ) -> list[Prediction]:
        """Predictions for `raws`, in order; see `Engine.predict`. `announcement` ends once the first sample is
        queued (or refused)."""
        jobs, preprocess_ms = await self.front.jobs(raws, self.batcher.admit, budget, explain=explain)
        return predictions(raws, await self.submit_all(jobs, announcement), preprocess_ms)

    async def submit_all(self, jobs: Sequence[Job], announcement: Announcement | None = None) -> list[Outcome]:
        """Queue every job and wait for all. If one fails (refused, or its sample failed to decode), the others are
        withdrawn (a withdrawn job still queued is skipped) and the error of the first failing sample by position
        is raised, naming it. Cancelling the caller withdraws them all. Each job weighs its rows in a batch."""
        if len(jobs) == 1:
            results = [await self.batcher.submit(jobs[0], announcement, jobs[0].rows)]
        else:
            tasks = [asyncio.ensure_future(self.batcher.submit(j, announcement if i == 0 else None, j.rows))
                     for i, j in enumerate(jobs)]
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            finally:
                for t in tasks:
                    if not t.done():
                        t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            errors = [None if t.cancelled() else t.exception() for t in tasks]
            raise_first([None if e is None else named_error(i, len(jobs), e) for i, e in enumerate(errors)])
            results = [t.result() for t in tasks]
        return [
            Outcome(r.value.probabilities, r.value.preprocess_ms, r.queue_ms, r.value.forward_ms, r.batch_size,
                    r.value.explanation)
            for r in results
        ]
