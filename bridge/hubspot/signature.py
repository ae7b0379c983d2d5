"""HubSpot request signatures: v3, and v1/v2 for legacy apps.

    v3  X-HubSpot-Signature-v3 = base64(HMAC-SHA256(client secret,
            method + URI + body + X-HubSpot-Request-Timestamp)), the URI as HubSpot
            called it with its %-escapes decoded; refused when the timestamp (ms) is
            more than 5 minutes away from our clock
    v2  X-HubSpot-Signature = hex(SHA-256(client secret + method + URI + body))
    v1  X-HubSpot-Signature = hex(SHA-256(client secret + body))

v1 and v2 are chosen by ``X-HubSpot-Signature-Version`` and only where no v3 header is
present: a request that carries v3 is judged by v3 alone, so a stripped or stale v3
cannot fall back to an older scheme without a timestamp. Every secret of a rotation is
compared, each with ``hmac.compare_digest``, without an early exit.

    SignatureError (Rejected)
    ├── MalformedSignature   no signature header, a bad timestamp (400)
    └── InvalidSignature     no secret matches, or the timestamp is stale (401)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from urllib.parse import unquote

from bridge.core.errors import Rejected

MAX_AGE_MS = 5 * 60 * 1000
_MILLIS = re.compile(r"[0-9]{1,15}")


class SignatureError(Rejected):
    """The request is not proven to come from HubSpot."""


class MalformedSignature(SignatureError):
    pass


class InvalidSignature(SignatureError):
    pass


def sign_v3(secret: str, method: str, uri: str, body: bytes, timestamp_ms: int) -> str:
    signed = f"{method}{unquote(uri)}".encode() + body + str(timestamp_ms).encode()
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def sign_v2(secret: str, method: str, uri: str, body: bytes) -> str:
    return hashlib.sha256(f"{secret}{method}{uri}".encode() + body).hexdigest()


def sign_v1(secret: str, body: bytes) -> str:
    return hashlib.sha256(secret.encode() + body).hexdigest()


def _any_matches(expected: list[str], given: str) -> bool:
    if not given.isascii():  # compare_digest refuses non-ASCII str; it cannot match
        return False
    matched = False
    for value in expected:
        matched |= hmac.compare_digest(value, given)
    return matched


def verify(
    *,
    method: str,
    uri: str,
    body: bytes,
    headers: Mapping[str, str],
    secrets: Sequence[str],
    now_ms: int,
) -> str:
    """The scheme that proved the request ("v3", "v2" or "v1"); raises SignatureError."""
    if not secrets or any(not s for s in secrets):
        raise ValueError("verify needs at least one non-empty client secret")
    v3 = headers.get("x-hubspot-signature-v3")
    if v3 is not None:
        raw = headers.get("x-hubspot-request-timestamp", "")
        if not _MILLIS.fullmatch(raw):
            raise MalformedSignature("X-HubSpot-Request-Timestamp is missing or not milliseconds")
        timestamp = int(raw)
        expected = [sign_v3(s, method, uri, body, timestamp) for s in secrets]
        if not _any_matches(expected, v3.strip()):
            raise InvalidSignature("the v3 signature matches no client secret (or another URI)")
        # Both sides: a timestamp ahead of our clock would stay replayable for longer.
        if abs(now_ms - timestamp) > MAX_AGE_MS:
            raise InvalidSignature(f"the request timestamp {timestamp} is over 5 minutes away")
        return "v3"
    version = headers.get("x-hubspot-signature-version", "").strip().lower()
    given = headers.get("x-hubspot-signature")
    if given is None or version not in ("v1", "v2"):
        raise MalformedSignature(
            "no X-HubSpot-Signature-v3, nor a v1/v2 X-HubSpot-Signature with its version"
        )
    if version == "v2":
        expected = [sign_v2(s, method, uri, body) for s in secrets]
    else:
        expected = [sign_v1(s, body) for s in secrets]
    if not _any_matches(expected, given.strip().lower()):
        raise InvalidSignature(f"the {version} signature matches no client secret")
    return version
