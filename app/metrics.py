"""Prometheus metrics of one service instance, in a registry of its own (several apps may share a process).

With several processes (`--workers`, model owners), prometheus-client's multiprocess mode is on: the supervisor sets
PROMETHEUS_MULTIPROC_DIR before it starts them, every process writes its values there, and whichever worker answers
`/metrics` adds them all up, under the same names as a single process exports.
"""
from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector

from app.inputs.budget import ByteBudget
from app.model.spec import subset_key

if TYPE_CHECKING:
    from app.engine.api import Prediction

# No `*_created` series beside every counter and histogram: they double the series count and nothing here reads them.
disable_created_metrics()

# Seconds; fine at the low end, where a small model on a GPU answers.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
REJECT_REASONS = ("queue_full", "deadline")  # 503 and 504
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED_ROUTE = "unmatched"


def batch_size_buckets(max_batch_size: int) -> tuple[float, ...]:
    """Powers of two up to the largest batch, and the largest batch itself."""
    edges = [1]
    while edges[-1] * 2 < max_batch_size:
        edges.append(edges[-1] * 2)
    if edges[-1] != max_batch_size:
        edges.append(max_batch_size)
    return tuple(float(e) for e in edges)


class ServiceMetrics:
    """Every metric the service exports, registered in `self.registry`."""

    def __init__(self, max_batch_size: int) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.http_requests = Counter(
            "fusion_http_requests_total",
            "HTTP requests answered, by method, route template and status code.",
            ("method", "route", "status"),
            registry=r,
        )
        self.http_duration = Histogram(
            "fusion_http_request_duration_seconds",
            "Time from a request's arrival to the end of its response, by method and route template.",
            ("method", "route"),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "fusion_queue_wait_seconds",
            "Time a request waited in the batcher's queue before its batch started.",
            ("model",),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "fusion_batch_size_requests",
            "Requests per forward pass.",
            ("model",),
            buckets=batch_size_buckets(max_batch_size),
            registry=r,
        )
        self.inference = Histogram(
            "fusion_inference_duration_seconds",
            "Time the inference thread spends on one batch (decoding uploads when it does that, collate, forward pass, softmax).",
            ("model",),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queued = Gauge(
            "fusion_queued_requests",
            "Requests waiting in the batcher's queue.",
            ("model",),
            registry=r,
            multiprocess_mode="livesum",  # every model owner's queue, added up
        )
        self.rejected = Counter(
            "fusion_rejected_requests_total",
            "Requests refused by the batcher: queue_full (503) or deadline (504, never computed).",
            ("model", "reason"),
            registry=r,
        )
        # A gauge at 1 (what an Info exports), so that it works in multiprocess mode too.
        self.model_info = Gauge(
            "fusion_model_info",
            "A served model: its version and device.",
            ("model", "version", "device"),
            registry=r,
            multiprocess_mode="max",
        )
        self.predictions = Counter(
            "fusion_predictions_total",
            "Samples predicted, by model and the inputs each sent (the modality mix: image, image+text, ...).",
            ("model", "modalities"),
            registry=r,
        )
        self.explained = Counter(
            "fusion_explained_predictions_total", "Samples predicted with an explanation.", ("model",), registry=r
        )
        self.conflicts = Counter(
            "fusion_modality_conflicts_total",
            "Explained predictions where an input alone gives another label than the answer a calibrated probability "
            "of 0.8 or more, by that input (a prediction with two such inputs counts under each).",
            ("model", "modality"),
            registry=r,
        )
        self.inflight_bytes = Gauge(
            "fusion_inflight_bytes",
            "Bytes that requests in flight hold on the memory budget: bodies as admitted or received, inputs while "
            "they are decoded.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.inflight_limit = Gauge(
            "fusion_inflight_bytes_limit", "The memory budget for requests in flight (0 until set).", registry=r,
            multiprocess_mode="livesum",
        )
        self.inflight_reserve = Gauge(
            "fusion_inflight_bytes_reserve", "The part of the budget that only decoding may use.", registry=r,
            multiprocess_mode="livesum",
        )
        self.inflight_refusals = Counter(
            "fusion_inflight_bytes_refusals",
            "Bodies and decodes the memory budget had no room for (503 with Retry-After; 413 for a body larger than "
            "it could ever hold).",
            registry=r,
        )
        self._http: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def watch_budget(self, budget: ByteBudget) -> None:
        """Export the memory budget's state as it changes."""
        budget.observer = BudgetMetrics(self)
        if budget.limit is not None:
            budget.observer.configured(budget.limit, budget.reserve)

    def batch_observer(self, model: str) -> BatchMetrics:
        """The batcher's observer for one model (`ModelRegistry(observer_factory=...)`)."""
        return BatchMetrics(self, model)

    def model_loaded(self, model: str, version: str, device: str, modalities: Sequence[str] = ()) -> None:
        """Record a served model; its prediction series (every modality mix, explanations, conflicts) start at 0
        from the first scrape, so a mix nobody sends shows as 0 rather than as no data."""
        self.model_info.labels(model, version, device).set(1)
        for size in range(1, len(modalities) + 1):
            for subset in itertools.combinations(modalities, size):
                self.predictions.labels(model, subset_key(subset))
        self.explained.labels(model)
        for modality in modalities:
            self.conflicts.labels(model, modality)

    def observe_predictions(self, model: str, predictions: Sequence[Prediction]) -> None:
        """Count answered samples by modality mix, and the explained ones and their conflicts."""
        for p in predictions:
            self.predictions.labels(model, subset_key(p.modalities)).inc()
            if p.explanation is not None:
                self.explained.labels(model).inc()
                for modality in p.explanation.conflicts:
                    self.conflicts.labels(model, modality).inc()

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered HTTP request. `route` must be a template (bounded), never the raw path."""
        if method not in METHODS:
            method = "other"  # clients choose the method: keep the label set bounded
        key = (method, route, status)
        children = self._http.get(key)
        if children is None:
            children = (
                self.http_requests.labels(method, route, str(status)),
                self.http_duration.labels(method, route),
            )
            self._http[key] = children
        counter, histogram = children
        counter.inc()
        histogram.observe(seconds)

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition (Prometheus text, or OpenMetrics when the scraper asks for it) and its content type."""
        encoder, content_type = choose_encoder(accept or "")
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return encoder(registry), content_type
        return encoder(self.registry), content_type


class BudgetMetrics:
    """A `BudgetObserver`: the memory budget for requests in flight, as gauges (added up over a multi-process
    service's processes) and a counter of refusals."""

    def __init__(self, metrics: ServiceMetrics) -> None:
        self._metrics = metrics

    def configured(self, limit: int, reserve: int) -> None:
        self._metrics.inflight_limit.set(limit)
        self._metrics.inflight_reserve.set(reserve)

    def held(self, in_use: int) -> None:
        self._metrics.inflight_bytes.set(in_use)

    def refused(self) -> None:
        self._metrics.inflight_refusals.inc()


class BatchMetrics:
    """A `BatchObserver` that records one model's batches, queue and rejections."""

    __slots__ = ("_batch_size", "_inference", "_queue_wait", "_queued", "_rejected", "_metrics", "_model")

    def __init__(self, metrics: ServiceMetrics, model: str) -> None:
        self._metrics = metrics
        self._model = model
        self._batch_size = metrics.batch_size.labels(model)
        self._inference = metrics.inference.labels(model)
        self._queue_wait = metrics.queue_wait.labels(model)
        self._queued = metrics.queued.labels(model)
        # Created up front so that every series exists (at 0) from the first scrape.
        self._rejected = {reason: metrics.rejected.labels(model, reason) for reason in REJECT_REASONS}

    def batch_done(self, size: int, queue_waits_s: Sequence[float], compute_s: float) -> None:
        self._batch_size.observe(size)
        self._inference.observe(compute_s)
        for wait in queue_waits_s:
            self._queue_wait.observe(wait)

    def rejected(self, reason: str) -> None:
        counter = self._rejected.get(reason)
        if counter is None:
            counter = self._rejected[reason] = self._metrics.rejected.labels(self._model, reason)
        counter.inc()

    def queue_depth(self, depth: int) -> None:
        self._queued.set(depth)
