"""How a provider plugs in: its endpoints for the web app, its hooks for the worker.

A provider (Stripe, HubSpot, Pipedrive, the generic CRM contract) has two halves that
import apart, both listed by dotted path in ``bridge.registry``: its web half (a
:data:`Routes` function, in its ``webhook`` module) and its worker half (a
:class:`WorkerHooks` value, in its ``hooks`` module). The web process imports only web
halves, so it never loads a worker's client library (Stripe's SDK); the worker reaches a
provider only through its hooks, looked up by the first part of an intent's license
ref (``hubspot:deal:42`` -> ``hubspot``), never by importing the provider's modules.

The planner's intents carry what a delivery said; the hooks add what the worker must ask
the provider for: a template the payload did not name (Stripe's checkout line items), a
deal's current contact, company and amount (a CRM webhook carries ids only), the
write-back of a new key onto the deal, and a usage aggregate's meter event.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from starlette.routing import BaseRoute

from bridge.core.settings import ConfigTables, Settings


class WorkerContext(Protocol):
    """What a hook may use of the worker (``jobs.runtime.Runtime`` is one)."""

    @property
    def settings(self) -> Settings: ...
    @property
    def config(self) -> ConfigTables:
        """The TOML file: a provider reads its own table (``StripeConfig.of(ctx.config)``)."""

    def provider_client(self, provider: str) -> Any:
        """The provider's client, made once per worker process by :attr:`WorkerHooks.open`."""


@dataclass(frozen=True)
class Buyer:
    """Who a key belongs to: a Cryptolens customer is found by ``email`` or created."""

    email: str | None
    name: str | None = None
    company: str | None = None

    def params(self) -> dict[str, str | None]:
        return {"email": self.email, "name": self.name, "company": self.company}


@dataclass(frozen=True)
class Deal:
    """A CRM deal as the worker fetched it: what the webhook only named by id."""

    id: str
    pipeline: str | None
    amount: Decimal | None
    currency: str | None
    buyer: Buyer | None
    # The buyer's id in the CRM (``hubspot:contact:51``): who a won deal is in
    # myTracker, since an email never goes there.
    customer_id: str | None = None


@dataclass(frozen=True)
class MeterEvent:
    """A usage aggregate as a provider's meter event: ``identifier`` is what the provider
    keeps unique (Stripe: 24 hours at least), so a re-send is counted once."""

    event_name: str
    customer: str
    value: int
    identifier: str
    timestamp: int


TemplateHook = Callable[[WorkerContext, dict[str, Any], bool], Awaitable[tuple[int, str] | None]]
FinalTemplateHook = Callable[
    [WorkerContext, str, dict[str, Any]], Awaitable[tuple[int, str] | None]
]
DealHook = Callable[[WorkerContext, str], Awaitable[Deal]]
WriteBackHook = Callable[[WorkerContext, str, str], Awaitable[dict[str, Any]]]
MeterCustomerHook = Callable[[WorkerContext, str], Awaitable[str | None]]
MeterSendHook = Callable[[WorkerContext, MeterEvent], Awaitable[bool]]


@dataclass(frozen=True)
class WorkerHooks:
    """What a provider offers the worker; each hook is optional.

    ``template(ctx, params, default)``: the template a key creation's params lead to, and
    what named it; None when nothing does (with ``default`` the source's default, or
    ``NoTemplate``). ``final_template(ctx, ref, params)``: for a provider whose start
    comes in several events, the template once none still to come can change it, None
    while one may (without it, ``template`` with the default decides at once).
    ``deal(ctx, deal_id)``: the deal's current facts. ``write_back(ctx,
    deal_id, key)``: the key written onto the deal (a setting: harmless twice).
    ``meter_customer(ctx, license_ref)``: who a usage meter event of that license is
    for (None: the ref is not one the provider bills, e.g. not a subscription);
    ``send_meter(ctx, event)``: the event sent, True when the provider already had it.
    ``open(settings)`` makes the provider's client once per worker; ``close`` ends it.
    Hooks raise the error root's kinds (``bridge.core.errors``): permanent, retryable,
    or outcome unknown.
    """

    template: TemplateHook | None = None
    final_template: FinalTemplateHook | None = None
    deal: DealHook | None = None
    write_back: WriteBackHook | None = None
    meter_customer: MeterCustomerHook | None = None
    send_meter: MeterSendHook | None = None
    open: Callable[[Settings], Any] | None = None
    close: Callable[[Any], Awaitable[None]] | None = None


# A provider's web half: its endpoints as configured (none when it is not: a 404).
Routes = Callable[[Settings], Sequence[BaseRoute]]
