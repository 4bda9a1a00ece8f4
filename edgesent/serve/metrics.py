"""Prometheus metrics of one app, in its own ``CollectorRegistry`` so several apps (tests) never collide."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest


_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class ServeMetrics:
    """The server's metrics (names start with ``edgesent_``).

    Attributes:
        registry: the app's own registry; :meth:`render` exposes it in the Prometheus text format.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "edgesent_requests",
            "HTTP requests by route template, method and status.",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "edgesent_request_duration_seconds",
            "HTTP request latency by route.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "edgesent_requests_in_flight", "HTTP requests being handled, by route.", ["route"], registry=r
        )
        self.batch_size = Histogram(
            "edgesent_batch_size", "Texts per model call.", ["model"], buckets=_BATCH_BUCKETS, registry=r
        )
        self.batch_seconds = Histogram(
            "edgesent_batch_duration_seconds",
            "Seconds per model call.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge("edgesent_queue_depth", "Texts waiting for a model call.", ["model"], registry=r)
        self.texts = Counter(
            "edgesent_texts_predicted",
            "Texts the model predicted, error rows aside (per model call).",
            ["model"],
            registry=r,
        )
        self.labels = Counter(
            "edgesent_predictions",
            "Predictions by label: a classifier's top label per text, a span model's label per span (watch the mix "
            "for drift).",
            ["model", "label"],
            registry=r,
        )
        self.text_errors = Counter(
            "edgesent_text_errors",
            "Texts the model answered with a per-item error (per model call).",
            ["model", "error"],
            registry=r,
        )
        self.rejected = Counter(
            "edgesent_rejected_requests",
            "Requests refused: queue full (429) or timed out (503).",
            ["model", "reason"],
            registry=r,
        )
        self.load_seconds = Gauge(
            "edgesent_model_load_seconds", "Seconds to load and verify the model.", ["model"], registry=r
        )
        self.ready = Gauge("edgesent_ready", "1 once every model is loaded and warmed up.", registry=r)

    def add_model(self, name: str, labels: Sequence[str], load_seconds: float) -> None:
        """Register a model: its load time, and zeroed per-label counters so every label shows from the start.

        ``labels`` are a classifier's labels or a span model's span labels (not its BIO tags).
        """
        self.load_seconds.labels(name).set(load_seconds)
        self.queue_depth.labels(name).set(0)
        self.texts.labels(name)
        for label in labels:
            self.labels.labels(name, label)

    def observe_batch(self, name: str, size: int, seconds: float, rows: Sequence[dict[str, Any]]) -> None:
        """Record one model call: its size, duration, the texts predicted and their labels, and the error rows.

        Every per-text count comes from the model call, so the batch sizes add up to texts predicted plus text
        errors, also when a caller timed out while its texts were in the model (its rows were computed). A
        classifier's row counts its top label; a span model's row (``spans``) counts each span's label, so a text
        with three aspects adds three and a text without any adds none.
        """
        self.batch_size.labels(name).observe(size)
        self.batch_seconds.labels(name).observe(seconds)
        texts = 0
        counts: dict[str, int] = {}
        for row in rows:
            if row.get("error"):
                self.text_errors.labels(name, row["error"]).inc()
                continue
            texts += 1
            found = [span["label"] for span in row["spans"]] if "spans" in row else [row["label"]]
            for label in found:
                counts[label] = counts.get(label, 0) + 1
        self.texts.labels(name).inc(texts)
        for label, count in counts.items():
            self.labels.labels(name, label).inc(count)

    def render(self) -> bytes:
        """Every metric in the Prometheus text exposition format."""
        return generate_latest(self.registry)
