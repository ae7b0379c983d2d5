"""One error tree: each error the bridge raises on purpose says what to do about it."""

from __future__ import annotations

import pytest

from bridge.core.errors import BridgeError, ConfigError, Permanent, Rejected, Retryable, Unknown
from bridge.core.signing import InvalidSignature, MalformedHeader, SignatureError
from bridge.cryptolens.errors import (
    AccessDenied,
    InvalidInput,
    NotFound,
    OutcomeUnknown,
    RateLimited,
    Refused,
    Transient,
)
from bridge.stripe.api import PermanentStripeError, TransientStripeError
from bridge.stripe.payload import PayloadError
from bridge.template_choice import NoTemplate
from jobs.runner import _permanent


@pytest.mark.parametrize(
    ("error", "branch"),
    [
        (ConfigError, Permanent),
        (Refused, Permanent),
        (AccessDenied, Permanent),
        (NotFound, Permanent),
        (InvalidInput, Permanent),
        (PermanentStripeError, Permanent),
        (NoTemplate, Permanent),
        (SignatureError, Rejected),
        (MalformedHeader, Rejected),
        (InvalidSignature, Rejected),
        (PayloadError, Rejected),
        (Transient, Retryable),
        (RateLimited, Retryable),
        (TransientStripeError, Retryable),
        (OutcomeUnknown, Unknown),
    ],
)
def test_each_error_has_one_branch(error: type[Exception], branch: type[BridgeError]) -> None:
    assert issubclass(error, branch)
    others = {Permanent, Retryable, Unknown} - {branch if branch is not Rejected else Permanent}
    assert not any(issubclass(error, other) for other in others)


def test_the_runner_fails_permanent_errors_at_once_and_retries_the_rest() -> None:
    assert _permanent(Refused("key/GetKey", "no"))
    assert _permanent(NoTemplate("nothing names one"))
    assert not _permanent(Transient("key/GetKey", "503"))
    assert not _permanent(OutcomeUnknown("key/ExtendLicense", "timeout"))
    assert not _permanent(RuntimeError("a bug"))
