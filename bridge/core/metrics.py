"""Prometheus counters, served at ``GET /metrics``."""

from __future__ import annotations

from prometheus_client import Counter

WEBHOOKS = Counter(
    "bridge_webhooks_total", "Webhook deliveries by provider and outcome", ["provider", "outcome"]
)
ENQUEUE_FAILURES = Counter(
    "bridge_enqueue_failures_total", "Intents left for the relay because Redis failed"
)
