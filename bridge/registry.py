"""The providers the bridge knows: the one list the web app and the worker look up.

Each provider has a web half (its endpoints: a ``routes(settings)`` function) and a
worker half (its :class:`~bridge.core.providers.WorkerHooks`), named here by dotted path
and imported only when asked for: the web process imports web halves only (so it never
loads the Stripe SDK), the worker hooks only.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any

from bridge.core.providers import Routes, WorkerHooks
from bridge.crm.deals import OCCURRED_PER_SECOND as DEAL_OCCURRED_PER_SECOND


@dataclass(frozen=True)
class Entry:
    """``name`` prefixes the provider's license refs and names its stored deliveries;
    ``web`` and ``worker`` are ``module:attribute`` of its halves (``worker`` None: it
    has no hook). ``occurred_per_second``: the unit of its intents' ``occurred_at``, 1
    for unix seconds (Stripe), 1000 for unix milliseconds (a CRM deal's: see
    ``bridge.crm.deals``)."""

    name: str
    web: str
    worker: str | None
    occurred_per_second: int = 1


_ENTRIES = (
    Entry("stripe", web="bridge.stripe.webhook:routes", worker="bridge.stripe.hooks:HOOKS"),
    Entry(
        "crm",
        web="bridge.crm.webhook:routes",
        worker=None,
        occurred_per_second=DEAL_OCCURRED_PER_SECOND,
    ),
    Entry(
        "hubspot",
        web="bridge.hubspot.webhook:routes",
        worker="bridge.hubspot.hooks:HOOKS",
        occurred_per_second=DEAL_OCCURRED_PER_SECOND,
    ),
    Entry(
        "pipedrive",
        web="bridge.pipedrive.webhook:routes",
        worker="bridge.pipedrive.hooks:HOOKS",
        occurred_per_second=DEAL_OCCURRED_PER_SECOND,
    ),
)
PROVIDERS = {entry.name: entry for entry in _ENTRIES}


def _load(path: str) -> Any:
    module, attr = path.split(":")
    return getattr(importlib.import_module(module), attr)


def names() -> list[str]:
    return list(PROVIDERS)


@cache
def web(name: str) -> Routes:
    """Provider ``name``'s web half; ``KeyError`` if there is none."""
    routes: Routes = _load(PROVIDERS[name].web)
    assert callable(routes)
    return routes


@cache
def worker(name: str) -> WorkerHooks:
    """Provider ``name``'s worker half (no hook at all for one without); ``KeyError`` if
    there is no such provider."""
    path = PROVIDERS[name].worker
    if path is None:
        return WorkerHooks()
    hooks = _load(path)
    assert isinstance(hooks, WorkerHooks)
    return hooks


def name_of(license_ref: str) -> str | None:
    """The provider whose license ref this is (``hubspot:deal:42`` -> ``hubspot``)."""
    name = license_ref.split(":", 1)[0]
    return name if name in PROVIDERS else None


def hooks_for(license_ref: str) -> WorkerHooks | None:
    """The worker half of the provider whose license ref this is; None for none."""
    name = name_of(license_ref)
    return worker(name) if name is not None else None


def occurred_time(license_ref: str, occurred_at: int) -> datetime | None:
    """When an intent's change happened, from its ``occurred_at`` in its provider's unit
    (:attr:`Entry.occurred_per_second`: a CRM deal's are milliseconds, Stripe's seconds;
    a ref of no provider, a key's usage, seconds). None for a value no date has."""
    name = name_of(license_ref)
    per_second = PROVIDERS[name].occurred_per_second if name is not None else 1
    try:
        return datetime.fromtimestamp(occurred_at / per_second, UTC)
    except (OverflowError, OSError, ValueError):
        return None
