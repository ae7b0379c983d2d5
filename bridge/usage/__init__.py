"""Metered billing: usage in (``POST /usage``, the collector), the ledger, usage out.

    endpoint.py   POST /usage and its OpenAPI description (the web process)
    records.py    one incoming record, validated; the per-record outcome
    config.py     the ``[usage]`` TOML: products, sinks, windows, the collector

The ledger itself (record of truth, windows, aggregates and their intents) is the
store's: ``bridge.store.ledger`` and ``bridge.store.counters``. The worker's side
(sealing an aggregate, the sinks' calls, the collector) is in ``jobs.effects.usage``,
``jobs.effects.meter`` (with Stripe's hooks, ``bridge.stripe.meter``) and
``jobs.collector``.
"""
