"""A delivery's text as the database keeps it: without secrets, and storable on both
databases (no NUL, no lone surrogate, within the column's bound)."""

from __future__ import annotations

import codecs
import hashlib
import json
import re
from typing import Any

# Keys whose values are secrets even inside a provider's payload (a Checkout Session's
# client_secret lets anyone complete it from a browser). They are never stored.
SECRET_KEYS = frozenset({"client_secret", "secret", "api_key", "password", "token"})
REDACTED = "[redacted]"

# In raw JSON, each secret key as a quoted name (a key spelled with \u escapes would not
# match, hence the second check in ``stored_body``), and what follows one whose value is
# null. A match inside a string value only costs the slow path.
_SECRET_NAMES = tuple(b'"%s"' % k.encode() for k in sorted(SECRET_KEYS))
_NULL_VALUE = re.compile(rb"\s*:\s*null\b")
_BOM = codecs.BOM_UTF8


def redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: (REDACTED if k in SECRET_KEYS and v is not None else redact(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def stored_payload(payload: dict[str, Any]) -> str:
    """The payload as stored: compact JSON without secrets."""
    return json.dumps(redact(payload), separators=(",", ":"))


def stored_body(body: bytes, payload: dict[str, Any]) -> str:
    """What to store for a raw JSON ``body`` that parsed to ``payload``: the body itself
    when it provably holds no secret to redact (no secret key with a non-null value, no
    ``\\u`` escape that could spell one) and is UTF-8 without a byte order mark or a NUL,
    else :func:`stored_payload`. (UTF-16/32 text whose characters are ASCII decodes as
    UTF-8 with a NUL after each: the search for a secret key would miss it, and
    PostgreSQL refuses NULs in text.)"""
    if (
        b"\\u" not in body
        and b"\x00" not in body
        and not body.startswith(_BOM)
        and not _names_a_secret(body)
    ):
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return stored_payload(payload)


def _names_a_secret(body: bytes) -> bool:
    """Whether a secret key with a value other than null may be in ``body`` (a find per
    key: a regular expression with the keys as alternatives tried each quote instead)."""
    for name in _SECRET_NAMES:
        at = body.find(name)
        while at != -1:
            at += len(name)
            if _NULL_VALUE.match(body, at) is None:
                return True
            at = body.find(name, at)
    return False


def fits(text: str, limit: int) -> bool:
    """Whether both databases store ``text`` as it is: no NUL (PostgreSQL refuses one in
    text), no lone surrogate (JSON's ``\\ud800`` makes one; UTF-8 has none) and within
    the column's bound."""
    if len(text) > limit or "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def escaped(text: str, limit: int) -> str:
    """``text`` as JSON escapes it (``\\u0000``), the same for every redelivery; over
    ``limit`` its SHA-256 instead."""
    escaped = json.dumps(text)[1:-1]
    if len(escaped) <= limit:
        return escaped
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def storable_text(text: str, limit: int) -> str:
    """``text`` as a text column of ``limit`` characters takes it on both databases:
    itself, or escaped (:func:`escaped`)."""
    return text if fits(text, limit) else escaped(text, limit)
