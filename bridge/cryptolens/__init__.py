"""Cryptolens Web API 3: the async client, its HTTP pool, its typed results and its error tree."""

from bridge.cryptolens.client import DEFAULT_BASE_URL, CryptolensClient, make_http_client
from bridge.cryptolens.errors import (
    AccessDenied,
    CryptolensError,
    InvalidInput,
    NotFound,
    OutcomeUnknown,
    RateLimited,
    Refused,
    Transient,
)
from bridge.cryptolens.http import HTTPPool

__all__ = [
    "DEFAULT_BASE_URL",
    "AccessDenied",
    "CryptolensClient",
    "CryptolensError",
    "HTTPPool",
    "InvalidInput",
    "NotFound",
    "OutcomeUnknown",
    "RateLimited",
    "Refused",
    "Transient",
    "make_http_client",
]
