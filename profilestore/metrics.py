"""Prometheus metrics. Counters never carry personal data: only outcomes, reasons and routes."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

EVENTS = Counter(
    "profilestore_events_total",
    "Behavioural events received, by outcome (accepted, duplicate, dropped) and reason",
    ["outcome", "reason"],
    registry=REGISTRY,
)
REQUESTS = Histogram(
    "profilestore_request_seconds",
    "HTTP request latency by route and status class",
    ["method", "route", "status"],
    registry=REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
