"""CRM API errors (HubSpot, Pipedrive), on the bridge's one error root.

    CrmApiError
    ├── TransientCrmError (Retryable)   connection refused, 5xx on a read, 429
    │   └── CrmRateLimited                  429, with the Retry-After it gave
    ├── PermanentCrmError (Permanent)   401/403 (a token without the scope), 404, 400
    └── UnknownCrmError (Unknown)       a write without a complete reply: maybe applied

The worker's runner decides with one ``isinstance`` against the root's three kinds; only
setting calls are written to a CRM (a deal property), so an unknown outcome is simply
sent again. Messages carry the method, path and status, never the token.
"""

from __future__ import annotations

from bridge.core.errors import BridgeError, Permanent, Retryable, Unknown


class CrmApiError(BridgeError):
    """A CRM API call failed; see the subclasses for what to do about it."""


class TransientCrmError(CrmApiError, Retryable):
    pass


class CrmRateLimited(TransientCrmError):
    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentCrmError(CrmApiError, Permanent):
    pass


class UnknownCrmError(CrmApiError, Unknown):
    pass
