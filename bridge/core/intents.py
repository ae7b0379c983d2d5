"""What a webhook means for Cryptolens: intents, one per intended effect.

An intent's id is taken from the business object, never from the delivery: ``invoice
in_X`` paying period P means "the key of subscription S expires at P.end + grace",
whichever of invoice.paid / invoice.payment_succeeded / a redelivery carries it. Storing
intents under a unique id is what turns at-least-once deliveries into one effect each.

Providers (Stripe, HubSpot, Pipedrive, the generic CRM contract) and the usage
endpoint turn a verified payload into a :class:`Plan`; the
worker turns each stored intent into exactly one Cryptolens call (or none, when a
read-back shows the effect is already there).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Effect(StrEnum):
    #: CreateKey with the template's parameters, the intent's tag in the notes and the
    #: buyer (or, per product, CreateKeyFromTemplate, then ChangeNotes and ChangeCustomer).
    #: One key per license ref.
    CREATE_KEY = "create_key"
    #: ExtendLicense towards an absolute target: params["expires_at"] (unix seconds).
    EXTEND = "extend"
    #: BlockKey / UnblockKey. Applied only when newer (``occurred_at``) than the last
    #: block decision on the same license, so reordered deliveries converge.
    BLOCK = "block"
    UNBLOCK = "unblock"
    #: RegisterEvent with Value in minor units and Metadata carrying the intent id.
    REGISTER_EVENT = "register_event"
    #: RecordUsage of params["amount"]. Nothing produces it: usage goes in aggregates
    #: (REPORT_USAGE, whose cryptolens sink sends RecordUsage). Kept while the worker's
    #: handler, the store's lease-free effects and the dry run still name it; an intent
    #: with it can only come from an operator's hand.
    RECORD_USAGE = "record_usage"
    #: One usage aggregate (bridge.store.ledger) to its product's sink: RecordUsage, or
    #: a Stripe meter event. The intent's id is the aggregate's; params name the sink.
    REPORT_USAGE = "report_usage"
    #: Link the key to the buyer's Cryptolens customer (found by email, else added), once
    #: the key exists and the buyer is known, whichever came first: params["customer"].
    LINK_CUSTOMER = "link_customer"
    #: A CRM deal's contact or company changed: ChangeCustomer to the customer found (or
    #: added) for params["customer"], or for the deal's current contact fetched from the
    #: CRM (params["deal_id"]). Applied only when newer (``occurred_at``) than the last
    #: customer decision on the license.
    SET_CUSTOMER = "set_customer"
    #: Write the key onto the CRM deal (a property / custom field): a setting, harmless
    #: twice; the intent's result records it.
    WRITE_BACK = "write_back"
    #: Read a Stripe purchase's new key back (GetKey: a read, repeated freely) and keep
    #: its expiry in the result, for the buyer's lookup (bridge.stripe.lookup).
    READ_KEY = "read_key"
    #: Stripe metadata ``cryptolens_key`` / ``cryptolens_product_id`` on the subscription
    #: or payment intent (bridge.stripe.writeback): read back before it is sent again,
    #: never over a different value.
    STRIPE_WRITE_BACK = "stripe_write_back"
    #: myTracker (bridge.mytracker), when configured: a payment as customRevenue,
    #: params["item"] (idTransaction = the Stripe invoice or session id, which myTracker
    #: dedupes, so a lost reply is sent again).
    TRACK_REVENUE = "track_revenue"
    #: myTracker customEvent (a refund, a won deal), params["item"]: not deduped by
    #: myTracker, so a lost reply goes to a person.
    TRACK_EVENT = "track_event"


class Status(StrEnum):
    PENDING = "pending"  # stored, not yet (successfully) run; the relay re-enqueues these
    WAITING = "waiting"  # its prerequisite (the license key) does not exist yet
    RUNNING = "running"  # claimed by a worker until ``lease_until``
    DONE = "done"
    FAILED = "failed"  # permanent error or retries exhausted; replayable
    NEEDS_REVIEW = "needs_review"  # the read-back was ambiguous: a person must decide


TERMINAL = frozenset({Status.DONE, Status.FAILED, Status.NEEDS_REVIEW})

#: Blocks that end a license: applied whatever their age, never lifted.
ENDING_BLOCKS = frozenset({"canceled", "refund", "dispute"})

#: What starts every key creation's tag (see :func:`notes_tag`).
TAG_PREFIX = "cryptolens-bridge-"


def notes_tag(intent_id: str) -> str:
    """What a key creation writes into its key's notes: how a read-back (GetKeys with
    ``notes.contains("<tag>")``) recognises the key as this intent's.

    Letters, digits and ``-`` only (nothing a search string must escape), lower case,
    and of one fixed length: tag X occurs inside tag Y only when X is Y, with or without
    case. The intent id is hashed, as it may hold any character.
    """
    return TAG_PREFIX + hashlib.sha256(intent_id.encode()).hexdigest()[:32]


def creation_notes(template_notes: str | None, tag: str) -> str:
    """A new key's notes: its template's, then the tag, within CreateKey's 500 characters
    (the template's are cut, never the tag)."""
    kept = (template_notes or "").strip()[: 500 - len(tag) - 1]
    return f"{kept} {tag}" if kept else tag


#: How a license key appears in ids: never itself (it is the end user's credential, and
#: ids leave the database: logs, the Stripe meter event's identifier, trace attributes,
#: arq's job ids), a digest of it instead.
KEY_DIGEST_PREFIX = "sha256-"
_KEY_DIGEST_HEX = 24  # 96 bits: no two keys of one product collide in practice


def key_digest(key: str) -> str:
    """``sha256-<24 hex>``: the key's stand-in in ids, the same for the same key forever.

    A plain (unkeyed) SHA-256 is enough: a Cryptolens key is 20 random letters (about 94
    bits), so a digest cannot be reversed by trying keys, and a keyed hash would tie
    every id to a secret that could then never change. Truncation keeps ids short; two
    keys of one product meeting in 96 bits is not a case to design for.
    """
    digest = hashlib.sha256(key.encode()).hexdigest()[:_KEY_DIGEST_HEX]
    return KEY_DIGEST_PREFIX + digest


def usage_intent_id(product_id: int, key: str, meter: str, window_start: int) -> str:
    """``usage:<product>:<key digest>:<meter or ->:<window start>``: one usage aggregate,
    and its intent. Read from the right it is unambiguous: a meter holds no ``:`` and
    never starts with ``-``."""
    return f"usage:{product_id}:{key_digest(key)}:{meter or '-'}:{window_start}"


def usage_license_ref(product_id: int, key: str) -> str:
    """``key:<product>:<key digest>``: a license known only by its key (usage records)."""
    return f"key:{product_id}:{key_digest(key)}"


# Before key digests, usage ids held the key itself: ``usage:<product>:<key>:<meter or
# ->:<window>``. Such rows stay as they are (an aggregate's id is its meter event's
# identifier and its attempts' and records' reference; rewriting it could make Stripe
# count a re-send twice), and are only open until their window is sent. Where one leaves
# the database it is shown by :func:`public_id`. A key is printable ASCII without spaces.
_LEGACY_USAGE = re.compile(r"usage:(\d+):([!-~]+?):([!-9;-~]*):(\d+)(?!\d)")
_DIGEST = re.compile(KEY_DIGEST_PREFIX + f"[0-9a-f]{{{_KEY_DIGEST_HEX}}}")


def _public(match: re.Match[str]) -> str:
    product, key, meter, window = match.groups()
    if _DIGEST.fullmatch(key):
        return match.group(0)
    # Marked: it must not pass for the id a new aggregate of that window gets.
    return f"usage:{product}:{key_digest(key)}:{meter}:{window}:legacy"


def public_id(intent_id: str) -> str:
    """The intent id as it may leave the database: itself, unless it is a usage id from
    before key digests, whose key is then replaced by its digest."""
    if not intent_id.startswith("usage:"):
        return intent_id
    return _LEGACY_USAGE.sub(_public, intent_id)


def public_text(text: str) -> str:
    """``text`` with every usage id from before key digests shown as :func:`public_id`."""
    return _LEGACY_USAGE.sub(_public, text) if "usage:" in text else text


#: How specific a ``create_key`` template hint is (``params["template_rank"]``): a later
#: delivery's hint replaces the stored one only when it ranks higher.
TEMPLATE_RANKS = {
    "default": 0,
    "mapping": 1,
    "pipeline": 1,  # a CRM deal's pipeline
    "product": 2,
    "price": 3,
    "purchase": 4,  # the purchase's own metadata: a one-off's session, a subscription's
    "deal": 4,  # a CRM deal that names its template itself
    # A subscription's Checkout Session: the buyer chose there, the subscription's own
    # metadata only says what it was created with.
    "session": 5,
}

#: ``params["hints_from"]`` of a subscription's ``create_key``: the template sources the
#: start events merged so far carried in full (what they did not name, their objects lack).
HINTS_FROM = "hints_from"


def merge_start(params: dict[str, Any], later: dict[str, Any]) -> dict[str, Any]:
    """A ``create_key`` intent's params with what a later delivery of the same start adds.

    The more specific template hint wins (ties keep the first); ``hints_from`` is the union
    of both; every other field, and each field of the buyer, is filled where it is still
    missing. The result does not
    depend on which delivery was stored first when their hints rank differently, and
    merging the same hint twice changes nothing.
    """
    merged = dict(params)
    for name, value in later.items():
        if name in ("template_id", "template_rank", "template_source", "customer", HINTS_FROM):
            continue
        if merged.get(name) is None and value is not None:
            merged[name] = value
    if (
        later.get("template_id") is not None
        and int(later.get("template_rank") or 0) > int(merged.get("template_rank") or 0)
    ) or (merged.get("template_id") is None and later.get("template_id") is not None):
        for name in ("template_id", "template_rank", "template_source"):
            merged[name] = later.get(name)
    buyer = dict(merged.get("customer") or {})
    for name, value in (later.get("customer") or {}).items():
        if buyer.get(name) is None and value is not None:
            buyer[name] = value
    if buyer:
        merged["customer"] = buyer
    if params.get(HINTS_FROM) is not None or later.get(HINTS_FROM) is not None:
        carried = {*(params.get(HINTS_FROM) or ()), *(later.get(HINTS_FROM) or ())}
        merged[HINTS_FROM] = sorted(carried)
    return merged


@dataclass(frozen=True)
class IntentSpec:
    """One intended Cryptolens effect, as a provider's planner derives it from a payload.

    ``id`` is deterministic and unique across providers (it starts with the license ref).
    ``license_ref`` names the license the effect applies to, e.g. ``stripe:sub:sub_123``
    (a subscription) or ``stripe:pi:pi_123`` (a one-off payment). ``params`` is JSON-able.
    ``occurred_at`` is when the provider says the change happened (unix seconds; a CRM
    deal's intents, unix milliseconds: see ``bridge.crm.deals``).
    """

    id: str
    effect: Effect
    license_ref: str
    params: dict[str, Any]
    occurred_at: int


@dataclass(frozen=True)
class Plan:
    """What one verified delivery implies.

    ``aliases`` maps another ref to a license ref (``stripe:pi:pi_1`` -> ``stripe:sub:sub_1``
    when invoice in_1 of subscription sub_1 was paid by pi_1), so that a later dispute on
    pi_1 finds the subscription's key. ``ignored`` says why a delivery implies nothing.
    """

    intents: list[IntentSpec] = field(default_factory=list)
    aliases: list[tuple[str, str]] = field(default_factory=list)
    ignored: str | None = None
