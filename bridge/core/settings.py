"""One typed settings object for the web app, the worker and the CLI.

Process settings come from the environment (the names are a stable interface, see the
README); the business mapping (templates, grace days, prices) comes from the TOML file
named by ``BRIDGE_CONFIG``. Both are validated once, at start-up, so a typo stops the
process instead of a payment.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Protocol
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from bridge.core.errors import Permanent
from bridge.mytracker.config import TrackerConfig
from bridge.usage.config import UsageConfig

# Values people paste from examples; a bridge that runs with one of them accepts forgeries.
_PLACEHOLDERS = {"", "changeme", "change-me", "secret", "xxx", "whsec_...", "whsec_xxx", "todo"}


def _secrets(raw: str, name: str) -> tuple[str, ...]:
    """Comma-separated secrets; () when unset; ConfigError for a placeholder among them."""
    if not raw.strip():
        return ()
    parts = tuple(p.strip() for p in raw.split(","))
    if any(p.lower() in _PLACEHOLDERS for p in parts):
        raise ConfigError(f"{name} holds an empty value or a placeholder")
    return parts


# Secrets the operator makes up (the admin token, the Pipedrive webhook's password, usage
# tokens, CRM_SECRET_<SOURCE>) must be hard to guess: online guessing is throttled
# (bridge.core.throttle), but "aaaaaaaaaaaaaaaa" or "p" fall to a short list of guesses.
# Secrets a vendor issues (Stripe's, HubSpot's, API keys) are taken as they come.
SECRET_MIN_LENGTH = 16
SECRET_MIN_DISTINCT = 8  # characters; a random 16-character token has about 13
MAKE_ONE = "make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"


def weakness(value: str) -> str | None:
    """Why ``value`` is too weak to be a secret, or None."""
    if value.lower() in _PLACEHOLDERS:
        return "is empty or a placeholder"
    if len(value) < SECRET_MIN_LENGTH:
        return f"is shorter than {SECRET_MIN_LENGTH} characters"
    if len(set(value)) < SECRET_MIN_DISTINCT:
        return f"has fewer than {SECRET_MIN_DISTINCT} distinct characters"
    return None


def _strong(name: str, values: tuple[str, ...]) -> tuple[str, ...]:
    """``values`` when each is strong; else ConfigError naming ``name`` (never the value)."""
    for value in values:
        why = weakness(value)
        if why is not None:
            which = "one of its values" if len(values) > 1 else "its value"
            raise ConfigError(f"{name}: {which} {why}; {MAKE_ONE}")
    return values


class ConfigError(Permanent):
    """The configuration cannot run: a missing secret, a placeholder, a bad TOML file."""


class PriceMapping(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^(price|plan)_\w+$")
    template_id: int = Field(gt=0)
    grace_days: int | None = Field(default=None, ge=0, le=365)


class StripeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    default_template_id: int | None = Field(default=None, gt=0)
    grace_days: int = Field(default=3, ge=0, le=365)
    # "unpaid" blocks a key when the subscription is unpaid; "past_due" blocks it already
    # on the first failed renewal attempt.
    unpaid_policy: Literal["unpaid", "past_due"] = "unpaid"
    price: tuple[PriceMapping, ...] = ()

    def mapping_for(self, price_id: str | None) -> PriceMapping | None:
        if price_id is None:
            return None
        return next((p for p in self.price if p.id == price_id), None)

    def grace_for(self, price_id: str | None) -> int:
        mapping = self.mapping_for(price_id)
        if mapping is not None and mapping.grace_days is not None:
            return mapping.grace_days
        return self.grace_days


class CryptolensConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Products whose keys the bridge makes with CreateKeyFromTemplate (for an access token
    # feature-locked to a template) instead of CreateKey with its tag in the notes.
    create_from_template: tuple[int, ...] = ()
    # Products in which nobody but the bridge creates keys. A lost CreateKeyFromTemplate
    # reply is settled (by the new untagged keys) only there; elsewhere a person decides.
    sole_key_maker: tuple[int, ...] = ()


# What a CRM deal lost (or deleted) after it was won does to its key.
LostPolicy = Literal["block", "none"]
# A generic source's name: its URL part, its CRM_SECRET_<NAME>, its license refs' part.
SOURCE_NAME = r"^[a-z0-9_]{1,16}$"


class HubSpotPipeline(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    won_stages: tuple[str, ...] = ("closedwon",)
    lost_stages: tuple[str, ...] = ("closedlost",)
    template_id: int | None = Field(default=None, gt=0)


class HubSpotConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    default_template_id: int | None = Field(default=None, gt=0)
    key_property: str = Field(default="license_key", min_length=1)
    lost_policy: LostPolicy = "none"
    pipeline: tuple[HubSpotPipeline, ...] = ()

    def stages(self, kind: Literal["won", "lost"]) -> frozenset[str]:
        """Every pipeline's won (or lost) stages: HubSpot's stage ids are unique in a
        portal, and its webhook names the stage, not the pipeline. Without pipelines,
        the default pipeline's ``closedwon`` / ``closedlost``."""
        pipelines = self.pipeline or (HubSpotPipeline(id="default"),)
        if kind == "won":
            return frozenset(s for p in pipelines for s in p.won_stages)
        return frozenset(s for p in pipelines for s in p.lost_stages)

    def template_for(self, pipeline: str | None) -> tuple[int, str] | None:
        return _pipeline_template(self.pipeline, pipeline, self.default_template_id)


class _Pipeline(Protocol):
    @property
    def id(self) -> str | int: ...
    @property
    def template_id(self) -> int | None: ...


def _pipeline_template(
    pipelines: Sequence[_Pipeline], pipeline: str | int | None, default: int | None
) -> tuple[int, str] | None:
    """A CRM deal's template: its pipeline's (HubSpot's and Pipedrive's rule), else the
    source's default, else None."""
    for p in pipelines:
        if p.id == pipeline and p.template_id is not None:
            return p.template_id, "pipeline"
    return (default, "default") if default is not None else None


class PipedrivePipeline(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: int = Field(gt=0)
    template_id: int | None = Field(default=None, gt=0)


class PipedriveConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    default_template_id: int | None = Field(default=None, gt=0)
    # The key of the deal custom field the key is written to (a 40-hex hash in Pipedrive);
    # none: no write-back.
    key_field: str | None = Field(default=None, min_length=1)
    lost_policy: LostPolicy = "none"
    pipeline: tuple[PipedrivePipeline, ...] = ()

    def template_for(self, pipeline: int | None) -> tuple[int, str] | None:
        return _pipeline_template(self.pipeline, pipeline, self.default_template_id)


class ProductMapping(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    template_id: int = Field(gt=0)


class CrmSourceConfig(BaseModel):
    """One ``[crm.<source>]`` table: a CRM that posts the generic signed contract."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default_template_id: int | None = Field(default=None, gt=0)
    lost_policy: LostPolicy = "none"
    product: tuple[ProductMapping, ...] = ()

    def template_for(self, template_id: int | None, product: str | None) -> tuple[int, str] | None:
        """``deal.template_id``, else the product table's, else the default."""
        if template_id is not None:
            return template_id, "deal"
        for p in self.product:
            if p.id == product:
                return p.template_id, "product"
        if self.default_template_id is not None:
            return self.default_template_id, "default"
        return None


class BridgeConfig(BaseModel):
    """The TOML file: what each Stripe price and each CRM deal becomes in Cryptolens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stripe: StripeConfig = StripeConfig()
    cryptolens: CryptolensConfig = CryptolensConfig()
    usage: UsageConfig = UsageConfig()
    mytracker: TrackerConfig = TrackerConfig()

    hubspot: HubSpotConfig = HubSpotConfig()
    pipedrive: PipedriveConfig = PipedriveConfig()
    crm: dict[str, CrmSourceConfig] = {}

    @field_validator("crm")
    @classmethod
    def _source_names(cls, value: dict[str, CrmSourceConfig]) -> dict[str, CrmSourceConfig]:
        for name in value:
            if not re.fullmatch(SOURCE_NAME, name):
                raise ValueError(f"[crm.{name}]: a source name is 1-16 of a-z, 0-9 and _")
        return value

    @classmethod
    def load(cls, path: Path | None) -> BridgeConfig:
        if path is None:
            return cls()
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read BRIDGE_CONFIG {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"BRIDGE_CONFIG {path} is not valid TOML: {exc}") from None
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"BRIDGE_CONFIG {path}: {exc}") from None


class Settings(BaseSettings):
    """Process settings from the environment (and a ``.env`` file if present)."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    database_url: str = Field(default="sqlite:///./bridge.db", alias="BRIDGE_DATABASE_URL")
    redis_url: str = Field(default="redis://127.0.0.1:6379/0", alias="BRIDGE_REDIS_URL")
    config_path: Path | None = Field(default=None, alias="BRIDGE_CONFIG")

    cryptolens_api_url: str = Field(
        default="https://api.cryptolens.io/api/", alias="CRYPTOLENS_API_URL"
    )
    cryptolens_token: SecretStr = Field(default=SecretStr(""), alias="CRYPTOLENS_TOKEN")
    cryptolens_connect_timeout: float = Field(default=5.0, gt=0, alias="CRYPTOLENS_CONNECT_TIMEOUT")
    cryptolens_read_timeout: float = Field(default=20.0, gt=0, alias="CRYPTOLENS_READ_TIMEOUT")
    # Connections to Cryptolens per worker process; a call waits up to the connect timeout
    # for one, then fails as transient (nothing was sent).
    cryptolens_max_connections: int = Field(default=100, ge=1, alias="CRYPTOLENS_MAX_CONNECTIONS")

    stripe_webhook_secret: SecretStr = Field(default=SecretStr(""), alias="STRIPE_WEBHOOK_SECRET")
    stripe_api_key: SecretStr | None = Field(default=None, alias="STRIPE_API_KEY")
    # Only for tests and staging: where the official stripe library sends its API calls.
    stripe_api_base: str | None = Field(default=None, alias="STRIPE_API_BASE")
    # Bearer tokens that may post usage (POST /usage), several separated by commas during
    # a rotation. None: the endpoint does not exist (404).
    usage_tokens: SecretStr = Field(default=SecretStr(""), alias="BRIDGE_USAGE_TOKENS")
    signature_tolerance: int = Field(default=300, ge=1, alias="BRIDGE_SIGNATURE_TOLERANCE")
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024, alias="BRIDGE_MAX_BODY_BYTES")

    # What one client may hold of a web process (bridge/serve.py): a request's head must
    # be complete within header_timeout of the connection opening (or of the previous
    # response) and within max_header_bytes (431); its body within body_timeout of its
    # head (408). Past max_connections open connections a request is answered 503; an
    # idle keep-alive connection is closed after keep_alive_timeout.
    max_header_bytes: int = Field(default=64 * 1024, ge=1024, alias="BRIDGE_MAX_HEADER_BYTES")
    header_timeout: float = Field(default=10.0, gt=0, alias="BRIDGE_HEADER_TIMEOUT")
    body_timeout: float = Field(default=10.0, gt=0, alias="BRIDGE_BODY_TIMEOUT")
    max_connections: int = Field(default=1000, ge=1, alias="BRIDGE_MAX_CONNECTIONS")
    keep_alive_timeout: float = Field(default=5.0, gt=0, alias="BRIDGE_KEEP_ALIVE_TIMEOUT")

    # Retry policy for transient Cryptolens errors: exponential backoff with full jitter.
    max_attempts: int = Field(default=8, ge=1, alias="BRIDGE_MAX_ATTEMPTS")
    retry_base_seconds: float = Field(default=0.25, gt=0, alias="BRIDGE_RETRY_BASE_SECONDS")
    retry_cap_seconds: float = Field(default=300.0, gt=0, alias="BRIDGE_RETRY_CAP_SECONDS")
    # How long a claimed intent is protected; past this a crashed worker's intent is retaken.
    # A live run renews its leases every third of this; it must outlast two calls (below).
    lease_seconds: float = Field(default=60.0, gt=0, alias="BRIDGE_LEASE_SECONDS")
    # After a call's reply is lost, how long past the call's own bound the service may
    # still apply it: a read-back that finds nothing decides "not applied" only then.
    settle_seconds: float = Field(default=30.0, ge=0, alias="BRIDGE_SETTLE_SECONDS")
    # A subscription's key creation that no start event names a template for waits this
    # long (from when it was stored) for the other start events, before the default.
    start_wait_seconds: float = Field(default=60.0, ge=0, alias="BRIDGE_START_WAIT_SECONDS")
    # arq's poll delay: its default (0.5 s) alone would dominate webhook-to-key latency. A
    # job waits half of it on average; 5 ms measured better than 10 (wait) and 2 (the
    # polling's own CPU) at 100 purchases/s in the bench.
    worker_poll_delay: float = Field(default=0.005, gt=0, alias="BRIDGE_WORKER_POLL_DELAY")
    # Jobs one worker process runs at once. A purchase waits on Cryptolens most of its
    # time (a round trip per call), so tens in flight are what makes a launch burst fast;
    # each has at most two calls open at once, so CRYPTOLENS_MAX_CONNECTIONS >= 2 x this.
    worker_max_jobs: int = Field(default=50, ge=1, alias="BRIDGE_WORKER_MAX_JOBS")
    relay_interval_seconds: int = Field(default=30, ge=1, alias="BRIDGE_RELAY_INTERVAL")
    # Days a delivery's body and its buyer's fields are kept once its intents finished
    # (bridge.store.retention); 0: pruned as soon as they have.
    retention_days: int = Field(default=90, ge=0, le=36500, alias="BRIDGE_RETENTION_DAYS")
    # On SIGTERM or SIGINT the worker takes no new job and lets those under way finish for
    # up to this long before cancelling them (arq's job_completion_wait). A cancelled job
    # is safe (its intent is retaken with a read-back once its lease runs out) but later.
    worker_shutdown_wait: int = Field(default=10, ge=0, alias="BRIDGE_WORKER_SHUTDOWN_WAIT")

    log_level: str = Field(default="INFO", alias="BRIDGE_LOG_LEVEL")
    # Metrics and details tell the sales volume and the setup: served where only operators
    # reach them. `serve`: /metrics and the detailed /readyz on this host:port ("off": not
    # served), never on the webhook port. `worker`: its metrics on this port (0: not
    # served) of this address.
    metrics_address: str = Field(default="127.0.0.1:9464", alias="BRIDGE_METRICS_ADDRESS")
    worker_metrics_port: int = Field(default=0, ge=0, le=65535, alias="BRIDGE_WORKER_METRICS_PORT")
    worker_metrics_address: str = Field(
        default="127.0.0.1", min_length=1, alias="BRIDGE_WORKER_METRICS_ADDRESS"
    )

    # The operator's page at /admin: off (404) unless set; at least 16 characters.
    admin_token: SecretStr = Field(default=SecretStr(""), alias="BRIDGE_ADMIN_TOKEN")

    # Where the bridge is reached from outside (https://bridge.example.com): HubSpot
    # signs the URL it called, rebuilt from this (required with HubSpot on: the Host a
    # request names is the client's claim). BRIDGE_TRUST_FORWARDED: X-Forwarded-Proto/Host
    # (their last values, the proxy's) only name the URL a refused signature was for.
    public_url: str | None = Field(default=None, alias="BRIDGE_PUBLIC_URL")
    trust_forwarded: bool = Field(default=False, alias="BRIDGE_TRUST_FORWARDED")

    # HubSpot: the app's client secret (several, comma-separated, during a rotation), the
    # private app's token for the CRM API, and the API root (without /crm/v3). v1/v2
    # signatures bind no time (v1 no URL either) and HubSpot sends them beside v3: off
    # unless an app cannot send v3 (weaker: a captured request replays for ever).
    hubspot_client_secret: SecretStr = Field(default=SecretStr(""), alias="HUBSPOT_CLIENT_SECRET")
    hubspot_accept_legacy_signatures: bool = Field(
        default=False, alias="HUBSPOT_ACCEPT_LEGACY_SIGNATURES"
    )
    hubspot_token: SecretStr = Field(default=SecretStr(""), alias="HUBSPOT_TOKEN")
    hubspot_api_url: str = Field(default="https://api.hubapi.com", alias="HUBSPOT_API_URL")
    # Pipedrive: the webhook's HTTP Basic credentials, the API token and root (no /api/v2).
    pipedrive_webhook_user: SecretStr = Field(default=SecretStr(""), alias="PIPEDRIVE_WEBHOOK_USER")
    pipedrive_webhook_password: SecretStr = Field(
        default=SecretStr(""), alias="PIPEDRIVE_WEBHOOK_PASSWORD"
    )
    pipedrive_api_token: SecretStr = Field(default=SecretStr(""), alias="PIPEDRIVE_API_TOKEN")
    pipedrive_api_url: str = Field(default="https://api.pipedrive.com", alias="PIPEDRIVE_API_URL")
    # CRM API calls (HubSpot, Pipedrive): one client per worker, these bounds per call.
    crm_timeout: float = Field(default=10.0, gt=0, alias="CRM_TIMEOUT")
    # myTracker's S2S import, on when the TOML names an app ([mytracker] app_id): the
    # app's API key (sent as the Authorization header) and, for tests and staging, the
    # API root.
    mytracker_api_key: SecretStr = Field(default=SecretStr(""), alias="MYTRACKER_API_KEY")
    mytracker_api_url: str = Field(default="https://tracker-s2s.my.com", alias="MYTRACKER_API_URL")

    @property
    def call_bound_seconds(self) -> float:
        """The longest one Cryptolens call may take: connect, then the reply (+1 s to write)."""
        return self.cryptolens_connect_timeout + self.cryptolens_read_timeout + 1.0

    @model_validator(mode="after")
    def _lease_outlasts_calls(self) -> Settings:
        # A run sends a call only while its lease covers the call's bound, and renews the
        # lease every third of it: shorter, a slow reply would outlive the lease, and
        # another worker could take the intent over while the call is in flight.
        needed = 2 * self.call_bound_seconds
        if self.lease_seconds < needed:
            raise ValueError(
                f"BRIDGE_LEASE_SECONDS={self.lease_seconds:g} is shorter than two Cryptolens "
                f"calls can take ({needed:g} s: 2 x (CRYPTOLENS_CONNECT_TIMEOUT + "
                "CRYPTOLENS_READ_TIMEOUT + 1)); raise it or lower the timeouts"
            )
        return self

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        url = urlsplit(value.strip())
        if url.scheme not in ("http", "https") or not url.hostname or url.query or url.fragment:
            raise ValueError(
                "BRIDGE_PUBLIC_URL must be the http(s) URL the bridge is reached at, without"
                " a query (https://bridge.example.com)"
            )
        return value.strip()

    @field_validator("cryptolens_api_url")
    @classmethod
    def _trailing_slash(cls, value: str) -> str:
        return value if value.endswith("/") else value + "/"

    def webhook_secrets(self) -> tuple[str, ...]:
        """The Stripe signing secrets, several during a rotation; () when Stripe is not
        configured (its endpoint is then not served). Refuses an empty one in a list and
        placeholders: an empty secret verifies against an empty key, which anyone can
        forge."""
        raw = self.stripe_webhook_secret.get_secret_value()
        if not raw.strip():
            return ()
        parts = tuple(p.strip() for p in raw.split(","))
        if any(p.lower() in _PLACEHOLDERS for p in parts):
            raise ConfigError(
                "STRIPE_WEBHOOK_SECRET is empty or a placeholder; set the endpoint's signing "
                "secret (whsec_...), several separated by commas during a rotation"
            )
        return parts

    def hubspot_secrets(self) -> tuple[str, ...]:
        """HubSpot's client secrets (several during a rotation); none: no endpoint.
        Refused without BRIDGE_PUBLIC_URL: the signed URL must be the one HubSpot called,
        not one the client names (a signature for another host would verify)."""
        found = _secrets(self.hubspot_client_secret.get_secret_value(), "HUBSPOT_CLIENT_SECRET")
        if found and not self.public_url:
            raise ConfigError(
                "HUBSPOT_CLIENT_SECRET is set but BRIDGE_PUBLIC_URL is not: set it to the URL"
                " HubSpot calls the bridge at, without /webhooks/hubspot"
                " (https://bridge.example.com)"
            )
        return found

    def pipedrive_credentials(self) -> tuple[str, str] | None:
        """The Basic auth user and password Pipedrive sends; None: no endpoint."""
        user = self.pipedrive_webhook_user.get_secret_value().strip()
        password = self.pipedrive_webhook_password.get_secret_value().strip()
        if not user and not password:
            return None
        if user.lower() in _PLACEHOLDERS or password.lower() in _PLACEHOLDERS:
            raise ConfigError(
                "PIPEDRIVE_WEBHOOK_USER and PIPEDRIVE_WEBHOOK_PASSWORD must both be set, "
                "to values that are not placeholders"
            )
        _strong("PIPEDRIVE_WEBHOOK_PASSWORD", (password,))
        return user, password

    @staticmethod
    def crm_secrets(source: str) -> tuple[str, ...]:
        """The signing secrets of generic source ``source`` from ``CRM_SECRET_<SOURCE>``
        (read from the process environment: the names depend on the sources); none: the
        source's endpoint answers 404."""
        name = f"CRM_SECRET_{source.upper()}"
        return _strong(name, _secrets(os.environ.get(name, ""), name))

    def usage_tokens_list(self) -> tuple[str, ...]:
        """The usage endpoint's bearer tokens; empty when none is configured. A
        placeholder is refused: it would let anyone bill a customer."""
        raw = self.usage_tokens.get_secret_value()
        return _strong("BRIDGE_USAGE_TOKENS", tuple(p.strip() for p in raw.split(",") if p.strip()))

    def mytracker_key(self) -> str | None:
        """myTracker's API key; None when unset; a placeholder is refused."""
        key = self.mytracker_api_key.get_secret_value().strip()
        if not key:
            return None
        if key.lower() in _PLACEHOLDERS:
            raise ConfigError("MYTRACKER_API_KEY is a placeholder")
        return key

    def token(self) -> str:
        token = self.cryptolens_token.get_secret_value().strip()
        if token.lower() in _PLACEHOLDERS:
            raise ConfigError("CRYPTOLENS_TOKEN is empty or a placeholder")
        return token

    def webhook_sources(self) -> list[str]:
        """Where signed data may come in, as configured: the app refuses to start with
        none (a bridge that takes nothing is a misconfiguration, not a quiet success)."""
        sources = ["stripe"] if self.webhook_secrets() else []
        sources += ["hubspot"] if self.hubspot_secrets() else []
        sources += ["pipedrive"] if self.pipedrive_credentials() is not None else []
        crm = [
            name.removeprefix("CRM_SECRET_").lower()
            for name, value in os.environ.items()
            if name.startswith("CRM_SECRET_") and value.strip()
        ]
        self._crm_secrets_apart(crm)
        sources += ["crm:" + name for name in crm]
        sources += ["usage"] if self.usage_tokens_list() else []
        return sources

    def _crm_secrets_apart(self, sources: list[str]) -> None:
        """Refuse a weak secret (it stops the start, not only its source) and a secret two
        generic sources share (or one shares with Stripe, whose scheme they use): the
        signature does not cover the source, so each would take the other's events."""
        owner = dict.fromkeys(self.webhook_secrets(), "STRIPE_WEBHOOK_SECRET")
        for source in sorted(sources):
            name = f"CRM_SECRET_{source.upper()}"
            try:
                secrets = _secrets(os.environ.get(name, ""), name)
            except ConfigError:
                continue  # a placeholder: the source stays closed (its endpoint says so)
            for secret in _strong(name, secrets):
                other = owner.setdefault(secret, name)
                if other != name:
                    raise ConfigError(
                        f"{name} and {other} share a secret: each source needs its own,"
                        " or either would accept the other's events"
                    )

    def admin_token_value(self) -> str | None:
        """The admin page's token, or None when the page is off; refuses weak ones."""
        token = self.admin_token.get_secret_value().strip()
        if not token:
            return None
        why = weakness(token)
        if why is not None:
            raise ConfigError(
                f"BRIDGE_ADMIN_TOKEN {why}; {MAKE_ONE} (or leave it empty to turn the admin "
                "page off)"
            )
        return token

    def bridge_config(self) -> BridgeConfig:
        return BridgeConfig.load(self.config_path)
