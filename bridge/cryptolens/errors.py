"""Every way a Cryptolens call can fail, as one tree the retry logic can act on.

    CryptolensError
    ├── Refused              the service answered and said no: retrying cannot help
    │   ├── AccessDenied     the token lacks the method, or is locked to another product/key
    │   ├── NotFound         no such key, product, license template or customer
    │   └── InvalidInput     the parameters were rejected (format, length, range)
    ├── Transient            the request was certainly not applied: safe to send again
    │   └── RateLimited      HTTP 429; ``retry_after`` is the server's hint, if any
    └── OutcomeUnknown       the request may have been applied and the reply was lost
                             (read timeout after sending, connection dropped mid-reply,
                             502/504/500, a 200 whose body is not the API's JSON)

``Transient`` versus ``OutcomeUnknown`` is what exactly-once rests on: a transient error is
re-sent, an unknown outcome is first read back from Cryptolens (GetKey, GetWebAPILog,
GetEvents) and only re-sent once the read-back shows the effect is absent. For read-only
methods the two are equivalent. Which of httpx's exceptions lands on which side is drawn
in :mod:`bridge.cryptolens.transport` (:func:`~bridge.cryptolens.transport.classify`).

Messages never contain the access token: requests carry it in the form body, which no
error includes, and ``str(error)`` holds only the method name and the service's words.
"""

from __future__ import annotations

from bridge.core.errors import BridgeError, Permanent, Retryable, Unknown


class CryptolensError(BridgeError):
    """Base class: ``method`` is the Web API method, e.g. ``key/ExtendLicense``."""

    def __init__(self, method: str, message: str) -> None:
        super().__init__(f"{method}: {message}")
        self.method = method
        self.message = message


class Refused(CryptolensError, Permanent):
    """``result: 1``: the service processed the request and refused it. Permanent."""


class AccessDenied(Refused):
    pass


class NotFound(Refused):
    pass


class InvalidInput(Refused):
    pass


class Transient(CryptolensError, Retryable):
    """The request never took effect (connection refused, 503, 429): send it again."""


class RateLimited(Transient):
    def __init__(self, method: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(method, message)
        self.retry_after = retry_after


class OutcomeUnknown(CryptolensError, Unknown):
    """The request may have been applied: read back before sending it again."""


def refused_from_message(method: str, message: str) -> Refused:
    """Map the reference's error messages to the narrowest ``Refused`` subclass."""
    text = message.strip().lower()
    if text.startswith("access denied"):
        return AccessDenied(method, message)
    if text.startswith("could not find") or "not found" in text:
        return NotFound(method, message)
    if "input parameters were incorrect" in text or "cannot be more than" in text:
        return InvalidInput(method, message)
    if "wrong format" in text or "not correctly formatted" in text or "limited to" in text:
        return InvalidInput(method, message)
    if "search query causes problems" in text:  # GetKeys' SearchQuery
        return InvalidInput(method, message)
    return Refused(method, message)
