"""The key written back to Stripe: metadata on the subscription or the payment intent.

With ``[stripe] write_back = true`` each purchase's ``stripe_write_back`` intent
(``bridge.stripe.handover``) sets, once its key exists::

    cryptolens_key         = the license key
    cryptolens_product_id  = its Cryptolens product

on the subscription (``stripe:sub:`` licenses) or the payment intent (``stripe:pi:``), so
the vendor's app, receipts and support tools read it from Stripe. Stripe merges the
metadata it is sent into what the object holds: the vendor's other keys stay.

Exactly once, as the worker does it (``jobs.effects.stripe_writeback``): the object's
metadata is read first; the values already there (an earlier send whose reply was lost)
settle the intent without a second send; a *different* value already there is never
overwritten (the intent goes to ``needs_review``); only absent values are written, with
an attempt row before the call. Stripe offers no compare-and-set on metadata: a vendor
writing the same fields between the read and the write loses the race, which is theirs
to avoid (the fields are the bridge's).

This module is the Stripe half (the calls and the decision); it imports nothing of the
worker. Errors are ``bridge.stripe.api``'s: transient (retry; after a send, its outcome is
unknown and read back) or permanent (a bad key, no such object).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import stripe

from bridge.stripe.api import _client, _translate

KEY_FIELD = "cryptolens_key"
PRODUCT_FIELD = "cryptolens_product_id"
Kind = Literal["subscription", "payment_intent"]
Found = Literal["present", "absent", "conflict"]


def wanted(key: str, product_id: int) -> dict[str, str]:
    """The metadata the bridge writes for a key (Stripe keeps metadata values as text)."""
    return {KEY_FIELD: key, PRODUCT_FIELD: str(product_id)}


def found(metadata: Mapping[str, Any], want: Mapping[str, str]) -> Found:
    """``present``: every field holds our value; ``conflict``: one holds another value
    (not to be overwritten); ``absent``: the rest (nothing there, or part of ours)."""
    values = {name: metadata.get(name) for name in want}
    if values == dict(want):
        return "present"
    if any(v not in (None, "", want[name]) for name, v in values.items()):
        return "conflict"
    return "absent"


def _service(client: stripe.StripeClient, kind: Kind) -> Any:
    return client.v1.subscriptions if kind == "subscription" else client.v1.payment_intents


async def read_metadata(
    kind: Kind,
    object_id: str,
    *,
    api_key: str,
    api_base: str | None,
    http_client: stripe.HTTPClient | None,
) -> dict[str, Any]:
    """The object's metadata as Stripe holds it now."""
    client = _client(api_key, api_base, http_client)
    try:
        found_object = await _service(client, kind).retrieve_async(object_id)
    except stripe.StripeError as exc:
        _translate(exc, api_key)
    metadata = found_object.to_dict().get("metadata")
    return dict(metadata) if isinstance(metadata, Mapping) else {}


async def write_metadata(
    kind: Kind,
    object_id: str,
    values: Mapping[str, str],
    *,
    api_key: str,
    api_base: str | None,
    http_client: stripe.HTTPClient | None,
) -> None:
    """POST the fields in ``values`` onto the object's metadata (Stripe merges them)."""
    client = _client(api_key, api_base, http_client)
    try:
        await _service(client, kind).update_async(object_id, {"metadata": dict(values)})
    except stripe.StripeError as exc:
        _translate(exc, api_key)
