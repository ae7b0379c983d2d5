"""The ``t=<unix>,v1=<hex>`` signature scheme: Stripe's, which the generic CRM contract
shares (``X-Bridge-Signature``), so one check serves both and existing tooling signs it.

Stripe signs ``f"{t}.".encode() + raw_body`` with HMAC-SHA256 keyed by the endpoint's
signing secret and sends ``Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>...][,v0=...]``.
Every ``v1`` counts (Stripe sends one per active secret while a secret is rolled), and we
accept several secrets of our own for the same reason. The official library does the
same check but builds a full ``stripe.Event`` afterwards; the endpoint only needs a yes
or no before it stores the raw body, so we keep it to one HMAC per secret.

Errors, so that the endpoint can map them to status codes::

    SignatureError
    ├── MalformedHeader   (garbled header: 400)
    │   └── MissingHeader     (no header at all)
    └── InvalidSignature  (no v1 matches a secret: 401)
        └── StaleTimestamp    (it matches, but is dated outside the tolerance)

Each has a ``cause``, the name the delivery log and the admin page give the refusal.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Sequence

from bridge.core.errors import Rejected

DEFAULT_TOLERANCE = 300
HEADER = "Stripe-Signature"  # Stripe's name; the CRM contract's is X-Bridge-Signature

# Unix seconds; a sign or spaces would let two headers sign the same bytes differently.
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_HEX_SHA256 = re.compile(r"[0-9a-f]{64}")


class SignatureError(Rejected):
    """The delivery is not proven to come from its sender."""

    cause = "bad_signature"


class MalformedHeader(SignatureError):
    """The signature header cannot be parsed."""

    cause = "malformed_header"


class MissingHeader(MalformedHeader):
    """There is no signature header (or it is blank)."""

    cause = "no_header"


class InvalidSignature(SignatureError):
    """The header parses, but no signature matches a secret."""

    cause = "no_match"


class StaleTimestamp(InvalidSignature):
    """A signature matches, but its timestamp is outside the tolerance."""

    cause = "timestamp"


def _mac(payload: bytes, secret: str, timestamp: int) -> str:
    signed = f"{timestamp}.".encode() + payload
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """The ``Stripe-Signature`` header Stripe would send for ``payload`` (tests, ``send``)."""
    ts = int(time.time()) if timestamp is None else timestamp
    return f"t={ts},v1={_mac(payload, secret, ts)}"


def _parse(header: str | None, name: str) -> tuple[int, list[str]]:
    if not header or not header.strip():
        raise MissingHeader(f"missing {name} header")
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            raise MalformedHeader(f"{name} header has an item without '='")
        if key == "t":
            if timestamp is not None or not _TIMESTAMP.fullmatch(value):
                raise MalformedHeader(f"{name} header has a bad or repeated timestamp")
            timestamp = int(value)
        elif key == "v1":
            signatures.append(value)
        # Other schemes (v0 is Stripe's test-mode legacy scheme) are not signatures we trust.
    if timestamp is None:
        raise MalformedHeader(f"{name} header has no timestamp")
    if not signatures:
        raise MalformedHeader(f"{name} header has no v1 signature")
    return timestamp, signatures


def verify(
    payload: bytes,
    header: str | None,
    secrets: Sequence[str],
    *,
    tolerance: int = DEFAULT_TOLERANCE,
    now: float | None = None,
    header_name: str = HEADER,
) -> None:
    """Return if ``payload`` is signed by one of ``secrets`` within ``tolerance`` seconds.
    ``header_name`` is what the refusals call the header (the sender's name for it).

    Raises :class:`MalformedHeader` or :class:`InvalidSignature`; ``ValueError`` when no
    usable secret is given (an empty secret is an HMAC key anyone can use).
    """
    if not secrets or any(not s for s in secrets):
        raise ValueError("verify needs at least one non-empty signing secret")
    timestamp, signatures = _parse(header, header_name)
    # Non-hex values cannot match, and compare_digest refuses non-ASCII str: drop them.
    candidates = [s for s in signatures if _HEX_SHA256.fullmatch(s)]
    expected = [_mac(payload, secret, timestamp) for secret in secrets]
    # Compare every pair (no early exit), so timing does not tell which secret matched.
    matched = False
    for mac in expected:
        for candidate in candidates:
            matched |= hmac.compare_digest(mac, candidate)
    if not matched:
        raise InvalidSignature("no v1 signature matches a signing secret")
    current = time.time() if now is None else now
    # Stripe's library only refuses old timestamps; a header dated ahead would stay
    # replayable until its date plus tolerance, so we bound both sides.
    if abs(current - timestamp) > tolerance:
        raise StaleTimestamp(f"timestamp {timestamp} is outside the {tolerance}s tolerance")
