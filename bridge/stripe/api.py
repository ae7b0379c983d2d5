"""The Stripe API calls the worker makes: a checkout's line items, what a subscription's
start names (its Checkout Session and its items), usage meter events.

Webhooks never carry a session's line items, so when the planner cannot resolve a
template it leaves ``checkout_session`` in the create_key params and the worker asks
here. A subscription's key creation asks here what its start events that have not
arrived yet would say (:func:`subscription_start_hints`) instead of waiting for them.
The ``stripe_meter`` usage sink sends Billing Meter events, for the customer of the
key's subscription. We use the official library (it knows pagination, API versions
and error types), on its httpx-based async client.

Errors, translated at this edge so the worker decides retry vs fail in one place::

    StripeApiError
    ├── TransientStripeError   (connection failure, timeout, 429, 5xx: retry later)
    └── PermanentStripeError   (401/403 bad key, 404 unknown session, 400, bad metadata: fail)

Messages carry the HTTP status, Stripe's error code and request id, never the API key.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

import stripe

from bridge.core.errors import BridgeError, Permanent, Retryable
from bridge.core.logs import register_secrets, scrub
from bridge.core.providers import MeterEvent
from bridge.stripe.plan_specs import TEMPLATE_KEY

DEFAULT_TIMEOUT = 20.0
_PAGE = 100
_POSITIVE_INT = re.compile(r"[1-9][0-9]{0,9}")


class StripeApiError(BridgeError):
    """A Stripe API call failed; see the subclasses for what to do about it."""


class TransientStripeError(StripeApiError, Retryable):
    """Worth retrying: Stripe or the network failed, or we were rate limited."""


class PermanentStripeError(StripeApiError, Permanent):
    """Retrying will not help: a bad key, an unknown session, a malformed request."""


@dataclass(frozen=True)
class LineItemHint:
    """What one checkout line item says about the Cryptolens template."""

    price_id: str | None
    price_template_id: int | None
    product_template_id: int | None
    quantity: int | None

    @property
    def template_id(self) -> int | None:
        """The price's hint, else the product's: the price is the more specific."""
        return self.price_template_id or self.product_template_id


class _ScrubStripeLogs(logging.Filter):
    """The library logs error messages and (at DEBUG) raw bodies on the "stripe" logger;
    Stripe masks keys in them, a proxy or a fake might not. Filtering at the logger
    covers every handler, not only the ones bridge.core.logs configures."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = scrub(record.getMessage()), None
        return True


logging.getLogger("stripe").addFilter(_ScrubStripeLogs())


def make_http_client(*, timeout: float = DEFAULT_TIMEOUT) -> stripe.HTTPXClient:
    """An httpx-based client to share (make it at start-up, ``await close_async()`` at exit)."""
    return stripe.HTTPXClient(timeout=timeout)


def _template(owner: Any, where: str) -> int | None:
    metadata = owner.get("metadata") if isinstance(owner, Mapping) else None
    raw = metadata.get(TEMPLATE_KEY) if isinstance(metadata, Mapping) else None
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str) or not _POSITIVE_INT.fullmatch(raw.strip()):
        raise PermanentStripeError(f"{where} metadata {TEMPLATE_KEY}={raw!r} is not a positive id")
    return int(raw.strip())


@dataclass(frozen=True)
class StartHints:
    """What Stripe says now about a subscription's template, by source.

    ``session``: the metadata of the Checkout Session that created the subscription (None
    when no session did, or it names none); ``subscription``: the subscription's own
    metadata; ``items``: its items' prices (and expanded products).
    """

    session: int | None
    subscription: int | None
    items: list[LineItemHint]


def _hint(line: Mapping[str, Any]) -> LineItemHint:
    price = line.get("price")
    price = price if isinstance(price, Mapping) else None
    price_id = price.get("id") if price else None
    product = price.get("product") if price else None  # expanded, or a deleted product
    quantity = line.get("quantity")
    return LineItemHint(
        price_id=price_id if isinstance(price_id, str) else None,
        price_template_id=_template(price, f"price {price_id}"),
        product_template_id=_template(product, f"product of price {price_id}"),
        quantity=quantity if isinstance(quantity, int) else None,
    )


def _describe(exc: stripe.StripeError, api_key: str) -> str:
    parts = [type(exc).__name__]
    if exc.http_status is not None:
        parts.append(f"HTTP {exc.http_status}")
    if exc.code:
        parts.append(f"code {exc.code}")
    if exc.request_id:
        parts.append(f"request {exc.request_id}")
    text = f"Stripe API error ({', '.join(parts)})"
    message = exc.user_message if isinstance(exc.user_message, str) else None
    if message:
        # Stripe masks keys in its own messages; a proxy or a fake might not.
        text += ": " + message.replace(api_key, "[redacted]")
    return text


def _translate(exc: stripe.StripeError, api_key: str) -> NoReturn:
    status = exc.http_status
    transient = (
        isinstance(exc, stripe.APIConnectionError | stripe.RateLimitError)
        or status == 429
        or (isinstance(exc, stripe.APIError) and (status is None or status >= 500))
        or (status is not None and status >= 500)
    )
    kind = TransientStripeError if transient else PermanentStripeError
    # "from None": the library's exception holds the request headers and raw body.
    raise kind(_describe(exc, api_key)) from None


def _client(
    api_key: str, api_base: str | None, http_client: stripe.HTTPClient | None
) -> stripe.StripeClient:
    if not api_key:
        raise PermanentStripeError("no Stripe API key configured")
    register_secrets([api_key])
    return stripe.StripeClient(
        api_key,
        base_addresses={"api": api_base} if api_base else None,
        http_client=http_client,
        # One retry policy, the worker's: the library would otherwise retry on its own.
        max_network_retries=0,
    )


async def subscription_customer(
    subscription_id: str,
    *,
    api_key: str,
    api_base: str | None,
    http_client: stripe.HTTPClient | None,
) -> str:
    """The id of the customer who holds subscription ``subscription_id``."""
    client = _client(api_key, api_base, http_client)
    try:
        subscription = await client.v1.subscriptions.retrieve_async(subscription_id)
    except stripe.StripeError as exc:
        _translate(exc, api_key)
    customer = subscription.to_dict().get("customer")
    if isinstance(customer, Mapping):
        customer = customer.get("id")
    if not isinstance(customer, str) or not customer:
        raise PermanentStripeError(f"subscription {subscription_id} names no customer")
    return customer


async def subscription_start_hints(
    subscription_id: str,
    *,
    api_key: str,
    api_base: str | None,
    http_client: stripe.HTTPClient | None,
) -> StartHints:
    """The template hints of subscription ``subscription_id`` as Stripe has them now: its
    Checkout Session's metadata (List Checkout Sessions filtered by ``subscription``),
    its own metadata and its items' prices with their products. Both reads side by side.

    Checkout creates the subscription while it completes the session (the session's
    ``subscription`` is set then), before Stripe sends any of their events: what we rely
    on is that a subscription made through Checkout is found here once any start event
    has arrived, so none found means no ``checkout.session.completed`` will come.
    """
    client = _client(api_key, api_base, http_client)
    sessions_params: dict[str, Any] = {"subscription": subscription_id, "limit": 10}
    sub_params: dict[str, Any] = {"expand": ["items.data.price.product"]}
    try:
        sessions, subscription = await asyncio.gather(
            client.v1.checkout.sessions.list_async(
                sessions_params,  # type: ignore[arg-type]
            ),
            client.v1.subscriptions.retrieve_async(
                subscription_id,
                sub_params,  # type: ignore[arg-type]
            ),
        )
    except stripe.StripeError as exc:
        _translate(exc, api_key)
    found = [
        s
        for s in sessions.to_dict().get("data") or []
        if isinstance(s, Mapping) and s.get("subscription") == subscription_id
    ]
    # One session creates a subscription; were there more, the complete one counts.
    found.sort(key=lambda s: s.get("status") != "complete")
    sub = subscription.to_dict()
    items = (sub.get("items") or {}).get("data") or []
    return StartHints(
        session=_template(found[0], f"checkout session {found[0].get('id')}") if found else None,
        subscription=_template(sub, f"subscription {subscription_id}"),
        items=[_hint(item) for item in items if isinstance(item, Mapping)],
    )


class DuplicateMeterEvent(PermanentStripeError):
    """Stripe already has an event with this identifier: the one sent before counts."""


def _names_duplicate(exc: stripe.StripeError) -> bool:
    text = f"{exc.code or ''} {exc.user_message or ''}".lower()
    return "already_exists" in text or "already exists" in text or "duplicate" in text


async def create_meter_event(
    event: MeterEvent,
    *,
    api_key: str,
    api_base: str | None,
    http_client: stripe.HTTPClient | None,
) -> str:
    """POST /v1/billing/meter_events; returns the identifier Stripe recorded.

    A re-send with the same identifier inside 24 hours is counted once by Stripe; when
    Stripe answers it as a duplicate, that is :class:`DuplicateMeterEvent` (the event is
    there). No idempotency key: Stripe would replay a first 500 to every re-send.
    """
    client = _client(api_key, api_base, http_client)
    params: dict[str, Any] = {
        "event_name": event.event_name,
        "identifier": event.identifier,
        "timestamp": event.timestamp,
        "payload": {"stripe_customer_id": event.customer, "value": str(event.value)},
    }
    try:
        created = await client.v1.billing.meter_events.create_async(
            params,  # type: ignore[arg-type]
        )
    except stripe.StripeError as exc:
        if exc.http_status == 400 and _names_duplicate(exc):
            raise DuplicateMeterEvent(_describe(exc, api_key)) from None
        _translate(exc, api_key)
    identifier = created.to_dict().get("identifier")
    return identifier if isinstance(identifier, str) else event.identifier


async def checkout_template_hints(
    session_id: str,
    *,
    api_key: str,
    api_base: str | None,
    http_client: stripe.HTTPClient | None = None,
) -> list[LineItemHint]:
    """The template hints of every line item of checkout session ``session_id``.

    ``api_base`` points the library elsewhere (tests, staging). Pass a shared
    ``http_client`` from :func:`make_http_client` in long-running processes; without one
    a client is made and closed for this call.
    """
    if not api_key:
        raise PermanentStripeError("no Stripe API key configured")
    register_secrets([api_key])
    own = http_client is None
    transport = make_http_client() if http_client is None else http_client
    client = stripe.StripeClient(
        api_key,
        base_addresses={"api": api_base} if api_base else None,
        http_client=transport,
        # One retry policy, the worker's: the library would otherwise retry on its own.
        max_network_retries=0,
    )
    hints: list[LineItemHint] = []
    params: dict[str, Any] = {"limit": _PAGE, "expand": ["data.price.product"]}
    try:
        while True:
            page = await client.v1.checkout.sessions.line_items.list_async(
                session_id,
                params=params,  # type: ignore[arg-type]
            )
            lines = page.to_dict().get("data") or []
            hints += [_hint(line) for line in lines if isinstance(line, Mapping)]
            if not page.has_more or not lines:
                return hints
            params = {**params, "starting_after": lines[-1]["id"]}
    except stripe.StripeError as exc:
        _translate(exc, api_key)
    finally:
        if own:
            await transport.close_async()  # type: ignore[no-untyped-call]
