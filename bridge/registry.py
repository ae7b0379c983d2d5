"""The providers the bridge knows: the one list the web app and the worker look up.

Each entry is imported only when asked for, so ``serve`` loads no worker-side client
library it does not need and a provider's import cost stays its own.
"""

from __future__ import annotations

import importlib
from datetime import UTC, datetime
from functools import cache

from bridge.core.providers import Provider

# name -> "module:attribute" of its Provider; the name is its license refs' first part.
_PROVIDERS = {
    "stripe": "bridge.stripe.provider:PROVIDER",
    "crm": "bridge.crm.provider:PROVIDER",
    "hubspot": "bridge.hubspot.provider:PROVIDER",
    "pipedrive": "bridge.pipedrive.provider:PROVIDER",
}


@cache
def get(name: str) -> Provider:
    """The provider called ``name``; ``KeyError`` if there is none."""
    module, attr = _PROVIDERS[name].split(":")
    provider = getattr(importlib.import_module(module), attr)
    assert isinstance(provider, Provider) and provider.name == name
    return provider


def names() -> list[str]:
    return list(_PROVIDERS)


def all_providers() -> list[Provider]:
    return [get(name) for name in _PROVIDERS]


def for_ref(license_ref: str) -> Provider | None:
    """The provider whose license ref this is (``hubspot:deal:42`` -> HubSpot)."""
    name = license_ref.split(":", 1)[0]
    return get(name) if name in _PROVIDERS else None


def occurred_time(license_ref: str, occurred_at: int) -> datetime | None:
    """When an intent's change happened, from its ``occurred_at`` in its provider's unit
    (``Provider.occurred_per_second``: a CRM deal's are milliseconds, Stripe's seconds;
    a ref of no provider, a key's usage, seconds). None for a value no date has."""
    provider = for_ref(license_ref)
    per_second = provider.occurred_per_second if provider is not None else 1
    try:
        return datetime.fromtimestamp(occurred_at / per_second, UTC)
    except (OverflowError, OSError, ValueError):
        return None
