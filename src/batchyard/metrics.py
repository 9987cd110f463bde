"""Prometheus metrics in the text exposition format, kept per process.

Counters and histograms are recorded as things happen; the database-backed figures
(requests by state, queue depth) are read when ``/metrics`` is scraped.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

Labels = tuple[tuple[str, str], ...]


_KEYS: dict[tuple[tuple[str, str], ...], Labels] = {}  # labels as a call site passes them -> sorted


def _labels(labels: dict[str, str]) -> Labels:
    given = tuple(labels.items())
    key = _KEYS.get(given)
    if key is None:
        key = tuple(sorted(given))
        if len(_KEYS) < 10_000:  # (label sets are few; this only bounds a surprise)
            _KEYS[given] = key
    return key


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _render_labels(labels: Labels, extra: Iterable[tuple[str, str]] = ()) -> str:
    pairs = list(labels) + list(extra)
    if not pairs:
        return ""
    return "{" + ",".join(f'{key}="{_escape(value)}"' for key, value in pairs) + "}"


class Counter:
    def __init__(self, name: str, help_text: str) -> None:
        self.name, self.help = name, help_text
        self.values: dict[Labels, float] = defaultdict(float)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        self.values[_labels(labels)] += amount

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        lines += [f"{self.name}{_render_labels(k)} {v:g}" for k, v in sorted(self.values.items())]
        return lines


class Histogram:
    def __init__(self, name: str, help_text: str, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.name, self.help, self.buckets = name, help_text, buckets
        self.counts: dict[Labels, list[int]] = {}
        self.sums: dict[Labels, float] = defaultdict(float)

    def observe(self, value: float, **labels: str) -> None:
        key = _labels(labels)
        counts = self.counts.setdefault(key, [0] * (len(self.buckets) + 1))
        counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sums[key] += value

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        for key, counts in sorted(self.counts.items()):
            running = 0
            for bound, count in zip(self.buckets, counts, strict=False):
                running += count
                lines.append(f"{self.name}_bucket{_render_labels(key, [('le', f'{bound:g}')])} {running}")
            running += counts[-1]
            lines.append(f"{self.name}_bucket{_render_labels(key, [('le', '+Inf')])} {running}")
            lines.append(f"{self.name}_sum{_render_labels(key)} {self.sums[key]:g}")
            lines.append(f"{self.name}_count{_render_labels(key)} {running}")
        return lines


def gauge_lines(name: str, help_text: str, values: dict[Labels, float]) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
    lines += [f"{name}{_render_labels(k)} {v:g}" for k, v in sorted(values.items())]
    return lines


def count_tokens(metrics: Metrics, workspace_id: str, model: str, tier: str, tokens: Any) -> None:
    """Add one answer's tokens (a ``protocol.usage.Tokens``) to ``batchyard_tokens_total``."""
    for kind, amount in (
        ("uncached_input", tokens.uncached_input),
        ("cache_creation", tokens.cache_creation),
        ("cache_read", tokens.cache_read),
        ("output", tokens.output),
    ):
        if amount:
            metrics.tokens.inc(amount, workspace=workspace_id, model=model, service_tier=tier, type=kind)


class Metrics:
    """Everything one process records."""

    def __init__(self) -> None:
        self.http_requests = Counter("batchyard_http_requests_total", "API requests by handler and status.")
        self.http_latency = Histogram("batchyard_http_request_duration_seconds", "API request latency by handler.")
        self.backend_calls = Counter(
            "batchyard_backend_calls_total", "Calls to backends by route, kind (batch/interactive) and outcome."
        )
        self.backend_latency = Histogram("batchyard_backend_latency_seconds", "Backend call latency by route.")
        self.retries = Counter("batchyard_batch_request_retries_total", "Batch requests scheduled for another attempt.")
        self.results = Counter("batchyard_batch_results_total", "Batch request results written, by result type.")
        self.stale_outcomes = Counter(
            "batchyard_stale_outcomes_total",
            "Attempts found no longer holding their lease (source: finish, renew, closed); not results.",
        )
        self.client_disconnects = Counter(
            "batchyard_client_disconnects_total", "Requests whose client went away before the body was read."
        )
        self.tokens = Counter(
            "batchyard_tokens_total",
            "Tokens used, by workspace, model, service tier (batch/standard) and type, as this process recorded them.",
        )
        self.webhook_attempts = Counter(
            "batchyard_webhook_attempts_total",
            "Webhook delivery attempts by outcome (delivered, http_error, error, refused).",
        )
        self.webhook_latency = Histogram("batchyard_webhook_attempt_duration_seconds", "Webhook delivery attempt time.")
        self.webhook_deliveries = Counter(
            "batchyard_webhook_deliveries_total", "Webhook deliveries finished, by result (delivered, failed: given up)."
        )

    def render(self) -> list[str]:
        lines: list[str] = []
        for metric in (
            self.http_requests,
            self.http_latency,
            self.backend_calls,
            self.backend_latency,
            self.retries,
            self.results,
            self.stale_outcomes,
            self.client_disconnects,
            self.tokens,
            self.webhook_attempts,
            self.webhook_latency,
            self.webhook_deliveries,
        ):
            lines += metric.render()
        return lines
