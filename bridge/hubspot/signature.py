"""HubSpot request signatures: v3, and v1/v2 only for legacy apps that opt in.

    v3  X-HubSpot-Signature-v3 = base64(HMAC-SHA256(client secret,
            method + URI + body + X-HubSpot-Request-Timestamp)), the URI as HubSpot
            called it with its %-escapes decoded; refused when the timestamp (ms) is
            more than 5 minutes away from our clock
    v2  X-HubSpot-Signature = hex(SHA-256(client secret + method + URI + body))
    v1  X-HubSpot-Signature = hex(SHA-256(client secret + body))

HubSpot sends v1 (or v2) beside v3 on every webhook, and neither older scheme binds a
time (v1 not even the URL): a captured request with its v3 headers removed would replay
for ever. So v3 alone proves a request, unless ``legacy`` is on
(``HUBSPOT_ACCEPT_LEGACY_SIGNATURES``, for apps that cannot send v3: weaker). Even then
v1 and v2 are chosen by ``X-HubSpot-Signature-Version`` and only where no v3 header is
present: a request that carries v3 is judged by v3 alone. Every secret of a rotation is
compared, each with ``hmac.compare_digest``, without an early exit.

    SignatureError (Rejected)
    ├── MalformedSignature   a bad timestamp, a v1/v2 signature without its version (400)
    │   └── MissingSignature     no signature header at all
    └── InvalidSignature     no secret matches (401)
        ├── StaleTimestamp       a secret matches, but the timestamp is stale
        ├── UrlMismatch          a secret matches, but for another URL than ours
        └── LegacySignature      only a v1/v2 signature, and legacy ones are off

Each has a ``cause``, the name the delivery log and the admin page give the refusal.
A URL mismatch is told apart from a wrong secret where it can be: only after nothing
matched, the caller's other candidate URLs (its own address, the forwarded one, the
other scheme) are tried, so the happy path signs once per secret, as before.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from urllib.parse import unquote

from bridge.core.errors import Rejected

MAX_AGE_MS = 5 * 60 * 1000
_MILLIS = re.compile(r"[0-9]{1,15}")


class SignatureError(Rejected):
    """The request is not proven to come from HubSpot."""

    cause = "bad_signature"


class MalformedSignature(SignatureError):
    cause = "malformed_header"


class MissingSignature(MalformedSignature):
    cause = "no_header"


class InvalidSignature(SignatureError):
    cause = "no_match"


class StaleTimestamp(InvalidSignature):
    cause = "timestamp"


class UrlMismatch(InvalidSignature):
    """A client secret signed this request, for ``signed_uri`` rather than ours."""

    cause = "url_mismatch"

    def __init__(self, message: str, signed_uri: str) -> None:
        super().__init__(message)
        self.signed_uri = signed_uri


class LegacySignature(InvalidSignature):
    """Only a v1/v2 signature, which proves neither when nor (v1) where it was sent."""

    cause = "legacy_signature"


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


def _check(
    version: str,
    sign: Callable[[str], list[str]],
    uri: str,
    given: str,
    others: Callable[[], Iterable[str]],
) -> None:
    """Return if a secret signed ``given`` for ``uri``; else tell a signature for one of
    the ``others`` (read only now, on the failure path) from one of no secret at all."""
    if _any_matches(sign(uri), given):
        return
    for other in others():
        if _any_matches(sign(other), given):
            raise UrlMismatch(f"the {version} signature is for another URL", other)
    raise InvalidSignature(f"the {version} signature matches no client secret (or another URI)")


def verify(
    *,
    method: str,
    uri: str,
    body: bytes,
    headers: Mapping[str, str],
    secrets: Sequence[str],
    now_ms: int,
    other_uris: Callable[[], Iterable[str]] = tuple,
    legacy: bool = False,
) -> str:
    """The scheme that proved the request ("v3", or with ``legacy`` "v2" or "v1");
    raises SignatureError.

    ``other_uris`` gives the URLs HubSpot may have signed instead of ``uri``; they are
    read only when no secret matches ``uri``, to refuse with :class:`UrlMismatch`.
    """
    if not secrets or any(not s for s in secrets):
        raise ValueError("verify needs at least one non-empty client secret")
    v3 = headers.get("x-hubspot-signature-v3")
    if v3 is not None:
        raw = headers.get("x-hubspot-request-timestamp", "")
        if not _MILLIS.fullmatch(raw):
            raise MalformedSignature("X-HubSpot-Request-Timestamp is missing or not milliseconds")
        timestamp = int(raw)

        def sign3(at: str) -> list[str]:
            return [sign_v3(s, method, at, body, timestamp) for s in secrets]

        _check("v3", sign3, uri, v3.strip(), other_uris)
        # Both sides: a timestamp ahead of our clock would stay replayable for longer.
        if abs(now_ms - timestamp) > MAX_AGE_MS:
            raise StaleTimestamp(f"the request timestamp {timestamp} is over 5 minutes away")
        return "v3"
    version = headers.get("x-hubspot-signature-version", "").strip().lower()
    given = headers.get("x-hubspot-signature")
    if given is None:
        raise MissingSignature("no X-HubSpot-Signature-v3, nor a v1/v2 X-HubSpot-Signature")
    if not legacy:
        raise LegacySignature(
            "no X-HubSpot-Signature-v3: v1/v2 signatures are not accepted"
            " (HUBSPOT_ACCEPT_LEGACY_SIGNATURES)"
        )
    if version not in ("v1", "v2"):
        raise MalformedSignature("an X-HubSpot-Signature needs X-HubSpot-Signature-Version v1/v2")
    given = given.strip().lower()
    if version == "v2":

        def sign2(at: str) -> list[str]:
            return [sign_v2(s, method, at, body) for s in secrets]

        _check("v2", sign2, uri, given, other_uris)
    elif not _any_matches([sign_v1(s, body) for s in secrets], given):
        raise InvalidSignature("the v1 signature matches no client secret")
    return version
