"""One root for every error the bridge raises on purpose, by what a caller should do.

    BridgeError
    ├── Permanent            retrying cannot help: fail now, with the message
    │   ├── ConfigError          a missing or placeholder secret, a bad TOML file
    │   ├── Refused              Cryptolens said no (AccessDenied, NotFound, InvalidInput)
    │   ├── PermanentStripeError a bad Stripe key, an unknown session
    │   ├── NoTemplate           nothing names the license template
    │   ├── PermanentCrmError    a bad CRM token, an unknown deal (HubSpot, Pipedrive)
    │   └── Rejected             a delivery refused at the door (its own tree below)
    │       ├── SignatureError       not proven to come from the provider (401)
    │       └── PayloadError         signed, but not what its type promises (400)
    ├── Retryable            certainly not applied: back off and send again
    │   ├── Transient            connection refused, 503 (RateLimited: 429)
    │   ├── TransientStripeError
    │   └── TransientCrmError    a CRM API's 429 or 5xx, a refused connection
    └── OutcomeUnknown       maybe applied: read back before anything is sent again
        └── UnknownCrmError      a CRM call without a complete reply

``jobs.runner`` decides an intent's fate with one ``isinstance`` against these three;
the worker's own run stops (needs review, lease lost, busy, not yet) are in
``jobs.errors``, since they are decisions, not failures. What an operator command
refuses (no such intent, not replayable) is ``bridge.ops.errors.OpsError``, a
``BridgeError`` too, drawn there.
"""

from __future__ import annotations


class BridgeError(Exception):
    """Base class of every error the bridge raises on purpose."""


class Permanent(BridgeError):
    """Retrying cannot help."""


class Retryable(BridgeError):
    """Certainly not applied: safe to try again after a backoff."""


class Unknown(BridgeError):
    """Maybe applied: read back before sending again (``OutcomeUnknown`` below it)."""


class Rejected(Permanent):
    """A delivery refused at the door; nothing of it is stored."""


class NoTemplate(Permanent):
    """Nothing says which template to use: a configuration problem, not retried."""


class ConfigError(Permanent):
    """The configuration cannot run: a missing secret, a placeholder, a bad TOML file."""
