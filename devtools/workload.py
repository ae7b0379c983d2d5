"""The chaos run's workload: purchases as Stripe would report them, and what each must become.

Events are built from the bundled samples (``bridge/stripe/samples``, the vendor fixtures
the tests use), their ids rewritten per purchase and their timestamps moved so the
subscription timeline starts now. Each :class:`Purchase` says what the bridge must have
done for it once everything settled: one key of a template, its expiry, whether it is
blocked, its buyer, the analytics events it registered.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import bridge

SAMPLES = Path(bridge.__file__).parent / "stripe" / "samples"
DAY = 86400
TEMPLATE_KEY = "cryptolens_template_id"

# The sandbox's templates (all of product 1001) and their periods in days.
PERIODS = {1: 30, 2: 30, 3: 30, 4: 0, 5: 365}
DEFAULT_TEMPLATE = 1
GRACE_DAYS = 3
MAPPED_PRICE = "price_chaos_pro"  # TOML mapping: template 2, 5 grace days
MAPPED_TEMPLATE, MAPPED_GRACE = 2, 5

BRIDGE_CONFIG = f"""
[stripe]
default_template_id = {DEFAULT_TEMPLATE}
grace_days = {GRACE_DAYS}
unpaid_policy = "unpaid"

[[stripe.price]]
id = "{MAPPED_PRICE}"
template_id = {MAPPED_TEMPLATE}
grace_days = {MAPPED_GRACE}
"""

SANDBOX_CONFIG = "\n".join(
    [
        '[[products]]\nid = 1001\nname = "Chaos Product"\n',
        '[[tokens]]\nvalue = "sandbox-demo-token-0001"\nname = "bridge"\n',
        *(
            f'[[templates]]\nid = {t}\nname = "T{t}"\nproduct = 1001\nperiod = {p}\n'
            f"f1 = {'true' if p else 'false'}\n"
            for t, p in PERIODS.items()
        ),
    ]
)

# Ids of the sample timeline, rewritten per purchase.
_SUB = "sub_1OPouiJN5vQBdWExOgfg6t5C"
_CUSTOMER = "cus_PEHTIoPSgT0tXQ"
_ITEM = "si_PEHTru8PmLRCo3"
_PRICE = "price_1OPouiJN5vQBdWExAQaqTooZ"
_SESSION = "cs_test_a12et9VnHfV9NETJktvuOmVoyrOB40recOCQWiVNeDlBe4IqxEIRNi1Qdf"
_FIRST_INVOICE = "in_1OPouhJN5vQBdWExQl3czOuP"
_RENEW_INVOICE = "in_1OPouhJN5vQBdWExRENEW001"
_RENEW_LINE = "il_1OPouhJN5vQBdWExRENEW001"
_RENEW_PI = "pi_1OPouhJN5vQBdWExRENEW001"
_RENEW_CHARGE = "ch_1OPouhJN5vQBdWExRENEW001"
_ONE_OFF_PI = "pi_1OPougJN5vQBdWEx8s2Dj0YR"
_DISPUTE = "dp_1OPoujJN5vQBdWExZXzZC5oN"
_T0 = 1703175361  # the sample subscription's start
_T1 = 1705853761  # its first renewal
_T2 = 1708532161  # the end of its second period


@cache
def _raw(name: str) -> str:
    return (SAMPLES / f"{name}.json").read_text(encoding="utf-8")


def _load(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(_raw(name))
    return event


def _obj(event: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = event["data"]["object"]
    return data


def _moved(value: Any, delta: int) -> Any:
    if isinstance(value, dict):
        return {k: _moved(v, delta) for k, v in value.items()}
    if isinstance(value, list):
        return [_moved(v, delta) for v in value]
    is_time = isinstance(value, int) and not isinstance(value, bool)
    return value + delta if is_time and 1_600_000_000 <= value <= 1_800_000_000 else value


def _renamed(event: dict[str, Any], ids: dict[str, str]) -> dict[str, Any]:
    text = json.dumps(event)
    for old, new in sorted(ids.items(), key=lambda i: -len(i[0])):
        text = text.replace(f'"{old}"', f'"{new}"')
    renamed: dict[str, Any] = json.loads(text)
    return renamed


@dataclass
class Purchase:
    """One purchase and what it must have become in Cryptolens."""

    ref: str  # the bridge's license ref
    kind: str  # "one-off" or "subscription"
    template: int
    email: str | None
    blocked: bool
    events: dict[str, int]  # RegisterEvent names and how many
    # Subscriptions: the expiry the payments say (period end + grace); None for a one-off,
    # whose key keeps its template's period.
    target: int | None = None
    story: list[str] = field(default_factory=list)


@dataclass
class Workload:
    events: list[dict[str, Any]]  # each once; the run delivers each several times
    purchases: list[Purchase]


class _Builder:
    def __init__(self, tag: str, now: int) -> None:
        self.tag = tag
        self.delta = now - _T0
        self.events: list[dict[str, Any]] = []

    def at(self, sample_time: int) -> int:
        return sample_time + self.delta

    def add(self, event: dict[str, Any], ids: dict[str, str]) -> None:
        event = _renamed(_moved(event, self.delta), ids)
        event["id"] = f"evt_chaos_{self.tag}_{len(self.events):03d}"
        self.events.append(event)


def _price(price_id: str, template: int | None) -> dict[str, Any]:
    price: dict[str, Any] = _obj(_load("customer.subscription.created"))["items"]["data"][0][
        "price"
    ]
    price["id"] = price_id
    price["metadata"] = {TEMPLATE_KEY: str(template)} if template else {}
    return price


def _one_off(b: _Builder, i: int) -> Purchase:
    n = f"{b.tag}o{i:02d}"
    pi, charge, session = f"pi_chaos{n}", f"ch_chaos{n}", f"cs_test_chaos{n}"
    ids = {_ONE_OFF_PI: pi, _SESSION: session, "ch_1OPoueJN5vQBdWExHvNS496R": charge}
    email = None if i % 6 == 5 else f"buyer{i % 9}@chaos.example"
    amount = 1000 + 100 * i
    event = _load("checkout.session.completed.payment")
    s = _obj(event)
    s["amount_total"] = s["amount_subtotal"] = amount
    s["customer_details"]["email"] = email
    story = []
    template = DEFAULT_TEMPLATE
    choice = i % 5
    if choice in (1, 2):
        template = 5 if choice == 1 else 4
        s["metadata"] = {TEMPLATE_KEY: str(template)}
        story.append(f"template {template} in metadata")
    elif choice == 3:
        template = MAPPED_TEMPLATE
        s["line_items"] = {"object": "list", "data": [{"price": _price(MAPPED_PRICE, None)}]}
        story.append("mapped price")
    b.add(event, ids)
    events = {"purchase": 1}
    blocked = False
    ending = i % 4
    if i == 9:  # a partial refund changes nothing
        refund = _load("charge.refunded")
        c = _obj(refund)
        c.update(amount=amount, amount_refunded=amount // 2, refunded=False, invoice=None)
        c["payment_intent"], c["id"] = pi, charge
        b.add(refund, ids)
        story.append("partly refunded")
    elif ending == 1 or i == 5:
        refund = _load("charge.refunded")
        c = _obj(refund)
        c.update(amount=amount, amount_refunded=amount, refunded=True, invoice=None)
        c["payment_intent"], c["id"] = pi, charge
        b.add(refund, ids)
        events["refund"] = 1
        blocked = True
        story.append("refunded")
    if ending == 2 or i == 5:
        dispute = _load("charge.dispute.created")
        d = _obj(dispute)
        d["payment_intent"], d["charge"], d["id"] = pi, charge, f"dp_chaos{n}"
        b.add(dispute, ids)
        blocked = True
        story.append("disputed")
    return Purchase(f"stripe:pi:{pi}", "one-off", template, email, blocked, events, None, story)


def _subscription(b: _Builder, k: int) -> Purchase:
    n = f"{b.tag}s{k:02d}"
    first_pi, first_charge = f"pi_chaos{n}f", f"ch_chaos{n}f"
    ids = {
        _SUB: f"sub_chaos{n}",
        _CUSTOMER: f"cus_chaos{n}",
        _ITEM: f"si_chaos{n}",
        _SESSION: f"cs_test_chaos{n}",
        _FIRST_INVOICE: f"in_chaos{n}f",
        _RENEW_INVOICE: f"in_chaos{n}r",
        _RENEW_LINE: f"il_chaos{n}r",
        _RENEW_PI: f"pi_chaos{n}r",
        _RENEW_CHARGE: f"ch_chaos{n}r",
    }
    email = None if k % 3 == 2 else f"buyer{(k + 4) % 9}@chaos.example"
    story: list[str] = []
    metadata: dict[str, str] = {}
    price = _price(_PRICE, None)
    template, grace = DEFAULT_TEMPLATE, GRACE_DAYS
    if k % 4 == 0:
        template = 3
        metadata = {TEMPLATE_KEY: "3"}
        story.append("template 3 in metadata")
    elif k % 4 == 1:
        price = _price(MAPPED_PRICE, None)
        template, grace = MAPPED_TEMPLATE, MAPPED_GRACE
        story.append("mapped price")
    elif k % 4 == 2:
        # The price's metadata (rank 3) outranks the TOML mapping (rank 1).
        price = _price(MAPPED_PRICE, 3)
        template, grace = 3, MAPPED_GRACE
        story.append("mapped price with template 3 in its metadata")

    def sub_event(name: str, **changes: Any) -> dict[str, Any]:
        event = _load(name)
        s = _obj(event)
        s["metadata"] = dict(metadata)
        s["items"]["data"][0]["price"] = copy.deepcopy(price)
        s.update(changes)
        return event

    session = _load("checkout.session.completed.subscription")
    _obj(session)["metadata"] = dict(metadata)
    _obj(session)["customer_details"]["email"] = email
    b.add(session, ids)
    b.add(sub_event("customer.subscription.created"), ids)

    def invoice(reason: str) -> dict[str, Any]:
        event = _load("invoice.paid.subscription_cycle")
        inv = _obj(event)
        inv["billing_reason"] = reason
        inv["customer_email"] = email
        inv["subscription_details"]["metadata"] = dict(metadata)
        line = inv["lines"]["data"][0]
        line["price"] = copy.deepcopy(price)
        if reason == "subscription_create":
            inv["id"] = line["invoice"] = _FIRST_INVOICE
            inv["payment_intent"], inv["charge"] = first_pi, first_charge
            inv["created"] = inv["period_start"] = inv["period_end"] = _T0
            inv["status_transitions"]["paid_at"] = _T0 + 1
            line["period"] = {"start": _T0, "end": _T1}
            line["id"] = f"il_chaos{n}f"
        return event

    b.add(invoice("subscription_create"), ids)
    events = {"purchase": 1}
    period_end = _T1
    if k % 2 == 0:
        b.add(invoice("subscription_cycle"), ids)
        events["renewal"] = 1
        period_end = _T2
        story.append("renewed")

    def status(new: str, old: str, at: int) -> None:
        event = sub_event("customer.subscription.updated.renewal", status=new)
        event["data"]["previous_attributes"] = {"status": old}
        event["created"] = at
        b.add(event, ids)

    blocked = False
    if k in (2, 6):
        status("unpaid", "active", _T1 + 5 * DAY)
        status("active", "unpaid", _T1 + 6 * DAY)
        story.append("unpaid, then active")
    if k == 3:
        status("unpaid", "active", _T1 + 5 * DAY)
        blocked = True
        story.append("unpaid")
    if k in (1, 5, 6):
        b.add(sub_event("customer.subscription.deleted"), ids)
        blocked = True
        story.append("canceled")
    if k == 7:
        # Disputed by its first payment: the invoice's alias leads to the subscription.
        dispute = _load("charge.dispute.created")
        d = _obj(dispute)
        d["payment_intent"], d["charge"], d["id"] = first_pi, first_charge, f"dp_chaos{n}"
        b.add(dispute, ids)
        blocked = True
        story.append("disputed")
    return Purchase(
        f"stripe:sub:{ids[_SUB]}",
        "subscription",
        template,
        email,
        blocked,
        events,
        b.at(period_end) + grace * DAY,
        story,
    )


def build(*, seed: int, now: int, one_offs: int = 20, subscriptions: int = 8) -> Workload:
    """The purchases of one run and their events (each event once, in story order)."""
    b = _Builder(f"{seed}", now)
    purchases = [_one_off(b, i) for i in range(one_offs)]
    purchases += [_subscription(b, k) for k in range(subscriptions)]
    return Workload(b.events, purchases)
