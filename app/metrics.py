"""Prometheus metrics of one app instance (its own registry, so several apps can live in one process).

The rest of the app changes counters only through `Metrics`' methods; nothing else imports prometheus_client.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, Info, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """Request counts and latencies, predictions, model version and reloads."""

    content_type = CONTENT_TYPE_LATEST  # of `render()`'s text

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("ocr_requests_total", "HTTP requests by endpoint, method and status code.",
                                ["endpoint", "method", "status"], registry=self.registry)
        self.latency = Histogram("ocr_request_duration_seconds", "Request latency by endpoint and status code.",
                                 ["endpoint", "method", "status"], buckets=LATENCY_BUCKETS,
                                 registry=self.registry)
        self.predictions = Counter("ocr_predictions_total", "Digits returned, by digit and status.",
                                   ["digit", "status"], registry=self.registry)
        self.refusals = Counter("ocr_refusals_total", "Marks answered `no_digit`, by reason (blank, too_small, dot, "
                                "not_a_digit, ...).", ["reason"], registry=self.registry)
        self.model = Info("ocr_model", "The model version being served.", registry=self.registry)
        self.reloads = Counter("ocr_model_reloads_total", "Model reload attempts by result.",
                               ["result"], registry=self.registry)
        self.feedback = Counter("ocr_feedback_total", "Corrections stored, by whether they agree with the answer.",
                                ["agrees"], registry=self.registry)
        self.unrecorded = Counter("ocr_predictions_unrecorded_total", "Predictions answered but not stored for "
                                  "feedback (feedback database unreachable).", registry=self.registry)
        for result in ("reloaded", "unchanged", "refused"):
            self.reloads.labels(result=result)

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        """Count one finished request."""
        labels = {"endpoint": endpoint, "method": method, "status": str(status)}
        self.requests.labels(**labels).inc()
        self.latency.labels(**labels).observe(seconds)

    def observe_prediction(self, digit: int | None, status: str, reason: str | None = None) -> None:
        """Count one answered digit, and a refusal (`no_digit`) by its reason."""
        self.predictions.labels(digit="none" if digit is None else str(digit), status=status).inc()
        if status == "no_digit":
            self.refusals.labels(reason=reason or "unknown").inc()

    def observe_reload(self, result: str) -> None:
        """Count one model check by its result: reloaded, unchanged or refused."""
        self.reloads.labels(result=result).inc()

    def observe_feedback(self, agrees: bool) -> None:
        """Count one stored correction by whether it agrees with the model's answer."""
        self.feedback.labels(agrees=str(agrees).lower()).inc()

    def set_model(self, name: str, version: str, alias: str | None, source: str) -> None:
        """Publish the served model as an info metric."""
        self.model.info({"name": name, "version": version, "alias": alias or "", "source": source})

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)
