"""What the bench's load generator (``devtools.loadgen``) sends: one-off Checkout
payments to ``POST /webhooks/stripe``, won deals to ``POST /webhooks/crm/bench`` and usage
records to ``POST /usage``, each request made and signed at send time.

Events are one-off Checkout payments, each with its own event id, session, payment
intent and customer, so every request implies new intents; bodies have the same size.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from bridge.core.signing import sign


def checkout_event(run: str, n: int, now: int) -> dict[str, Any]:
    """A paid one-off Checkout Session event; ``n`` makes every id in it unique."""
    suffix = f"{run}{n:08d}"
    return {
        "id": f"evt_bench{suffix}",
        "object": "event",
        "api_version": "2024-06-20",
        "created": now,
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": "checkout.session.completed",
        "data": {
            "object": {
                "id": f"cs_test_bench{suffix}",
                "object": "checkout.session",
                "amount_subtotal": 1099,
                "amount_total": 1099,
                "automatic_tax": {"enabled": False, "liability": None, "status": None},
                "cancel_url": "https://example.com/cancel",
                "client_reference_id": None,
                "client_secret": None,
                "created": now,
                "currency": "usd",
                "custom_fields": [],
                "customer": None,
                "customer_creation": "if_required",
                "customer_details": {
                    "address": None,
                    "email": f"buyer{suffix}@example.com",
                    "name": f"Buyer {suffix}",
                    "phone": None,
                    "tax_exempt": "none",
                    "tax_ids": [],
                },
                "customer_email": None,
                "expires_at": now + 86400,
                "invoice": None,
                "livemode": False,
                "locale": None,
                "metadata": {},
                "mode": "payment",
                "payment_intent": payment_intent(run, n),
                "payment_link": None,
                "payment_method_types": ["card"],
                "payment_status": "paid",
                "shipping_address_collection": None,
                "status": "complete",
                "submit_type": None,
                "subscription": None,
                "success_url": "https://example.com/success",
                "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
                "ui_mode": "hosted",
                "url": None,
            }
        },
    }


def payment_intent(run: str, n: int) -> str:
    return f"pi_bench{run}{n:08d}"


def license_ref(run: str, n: int) -> str:
    """The license the bridge keys a one-off payment by (see ``stripe_plan._checkout``)."""
    return f"stripe:pi:{payment_intent(run, n)}"


class Requests:
    """Signed webhook requests, made on demand (signing happens at send time, as Stripe's)."""

    def __init__(self, host: str, port: int, run: str, secret: str) -> None:
        self.head = f"POST /webhooks/stripe HTTP/1.1\r\nHost: {host}:{port}\r\n"
        self.run = run
        self.secret = secret

    def __call__(self, n: int) -> bytes:
        now = int(time.time())
        body = json.dumps(checkout_event(self.run, n, now), separators=(",", ":")).encode()
        return (
            f"{self.head}Content-Type: application/json\r\n"
            f"Stripe-Signature: {sign(body, self.secret, now)}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body


def deal_event(run: str, n: int, now: int) -> dict[str, Any]:
    """A won deal of the generic CRM contract (``docs/crm-contract.md``), one per ``n``."""
    return {
        "id": f"evt_{run}_{n}",
        "occurred_at": datetime.fromtimestamp(now, UTC).isoformat(),
        "type": "deal.won",
        "deal": {"id": f"{run}-{n}", "amount": "25.30", "currency": "EUR"},
        "customer": {"email": f"buyer-{run}-{n}@example.com", "name": "Bench Buyer"},
    }


CRM_SOURCE = "bench"


class CrmRequests(Requests):
    """Signed contract deliveries to ``POST /webhooks/crm/bench`` (X-Bridge-Signature)."""

    def __init__(self, host: str, port: int, run: str, secret: str) -> None:
        super().__init__(host, port, run, secret)
        self.head = f"POST /webhooks/crm/{CRM_SOURCE} HTTP/1.1\r\nHost: {host}:{port}\r\n"

    def __call__(self, n: int) -> bytes:
        now = int(time.time())
        body = json.dumps(deal_event(self.run, n, now), separators=(",", ":")).encode()
        return (
            f"{self.head}Content-Type: application/json\r\n"
            f"X-Bridge-Signature: {sign(body, self.secret, now)}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body


USAGE_PRODUCT = 1001
USAGE_KEYS = 16


class UsageRequests:
    """``POST /usage`` requests of ``batch`` records each, over ``USAGE_KEYS`` keys; every
    record has its own idempotency key, so each one is new to the ledger."""

    def __init__(self, host: str, port: int, run: str, token: str, batch: int) -> None:
        self.head = (
            f"POST /usage HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
        )
        self.run = run
        self.batch = batch

    def __call__(self, n: int) -> bytes:
        records = [
            {
                "key": f"BENCH-{self.run}-{(n * self.batch + i) % USAGE_KEYS}",
                "product_id": USAGE_PRODUCT,
                "quantity": 1,
                "idempotency_key": f"{self.run}-{n}-{i}",
                "timestamp": "2026-12-01T14:00:00Z",
            }
            for i in range(self.batch)
        ]
        body = json.dumps(records[0] if self.batch == 1 else records).encode()
        return (
            f"{self.head}Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
