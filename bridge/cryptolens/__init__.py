"""Cryptolens Web API 3: the async client (over httpx), its typed results and its error tree."""

from bridge.cryptolens.client import CryptolensClient
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
from bridge.cryptolens.transport import DEFAULT_BASE_URL, make_http_client, make_http_clients

__all__ = [
    "DEFAULT_BASE_URL",
    "AccessDenied",
    "CryptolensClient",
    "CryptolensError",
    "InvalidInput",
    "NotFound",
    "OutcomeUnknown",
    "RateLimited",
    "Refused",
    "Transient",
    "make_http_client",
    "make_http_clients",
]
