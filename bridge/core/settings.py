"""One typed settings object for the web app, the worker and the CLI.

Process settings come from the environment (the names are a stable interface, see the
README). The business mapping (templates, grace days, prices) comes from the TOML file
named by ``BRIDGE_CONFIG``: core keeps its tables as read (:class:`ConfigTables`), and
each package parses its own with its own :class:`Section` (``bridge.config`` checks them
all). Both are validated once, at start-up, so a typo stops the process instead of a
payment.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Self, TypeVar
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

from bridge.core.errors import ConfigError
from bridge.core.secrets import MAKE_ONE, PLACEHOLDERS, SecretList, weakness


class ConfigTables:
    """The TOML file named by ``BRIDGE_CONFIG``: its tables as read. Each package parses
    its own table with its own model (:class:`Section`), once: core knows none of them.
    ``bridge.config.BridgeConfig`` checks every table at start-up."""

    def __init__(self, tables: Mapping[str, Any] | None = None, *, origin: str = "") -> None:
        self.tables: dict[str, Any] = dict(tables or {})
        self.origin = origin or "BRIDGE_CONFIG"
        self._parsed: dict[str, BaseModel] = {}

    @classmethod
    def read(cls, path: Path | None) -> dict[str, Any]:
        """The file's tables; {} without a file; ConfigError for one unread or not TOML."""
        if path is None:
            return {}
        try:
            return tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read BRIDGE_CONFIG {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"BRIDGE_CONFIG {path} is not valid TOML: {exc}") from None

    def section(self, name: str, model: type[_Model]) -> _Model:
        """Table ``[name]`` read by ``model`` (its defaults when the file has none), parsed
        on first use and kept; ConfigError naming the table when it does not fit."""
        found = self._parsed.get(name)
        if found is None:
            try:
                found = model.model_validate(self.tables.get(name, {}))
            except ValidationError as exc:
                raise ConfigError(f"{self.origin} [{name}]: {exc}") from None
            self._parsed[name] = found
        if not isinstance(found, model):
            raise TypeError(f"[{name}] is read by {type(found).__name__}, not {model.__name__}")
        return found


_Model = TypeVar("_Model", bound=BaseModel)


class Section(BaseModel):
    """A table of the TOML file, defined by the package that owns it (``TABLE``: its name)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    TABLE: ClassVar[str]

    @classmethod
    def of(cls, config: ConfigTables) -> Self:
        """This table of ``config``, parsed once."""
        return config.section(cls.TABLE, cls)


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
        return SecretList.parse(
            "STRIPE_WEBHOOK_SECRET",
            self.stripe_webhook_secret.get_secret_value(),
            hint="STRIPE_WEBHOOK_SECRET is empty or a placeholder; set the endpoint's signing "
            "secret (whsec_...), several separated by commas during a rotation",
        )

    def hubspot_secrets(self) -> tuple[str, ...]:
        """HubSpot's client secrets (several during a rotation); none: no endpoint.
        Refused without BRIDGE_PUBLIC_URL: the signed URL must be the one HubSpot called,
        not one the client names (a signature for another host would verify)."""
        raw = self.hubspot_client_secret.get_secret_value()
        found = SecretList.parse("HUBSPOT_CLIENT_SECRET", raw)
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
        if user.lower() in PLACEHOLDERS or password.lower() in PLACEHOLDERS:
            raise ConfigError(
                "PIPEDRIVE_WEBHOOK_USER and PIPEDRIVE_WEBHOOK_PASSWORD must both be set, "
                "to values that are not placeholders"
            )
        SecretList.parse("PIPEDRIVE_WEBHOOK_PASSWORD", password, strong=True)
        return user, password

    def crm_secrets(self) -> dict[str, tuple[str, ...]]:
        """The signing secrets of each generic source, from ``CRM_SECRET_<SOURCE>`` (read
        from the process environment: the names depend on the sources). A source with a
        placeholder is left out (its endpoint answers 404; the error is logged by the
        caller); a weak secret, or one two sources share (or one shares with Stripe,
        whose scheme they use), is refused: the signature does not cover the source, so
        each would take the other's events."""
        found: dict[str, tuple[str, ...]] = {}
        owner = dict.fromkeys(self.webhook_secrets(), "STRIPE_WEBHOOK_SECRET")
        for name in sorted(os.environ):
            if not name.startswith("CRM_SECRET_") or not os.environ[name].strip():
                continue
            try:
                secrets = SecretList.parse(name, os.environ[name])
            except ConfigError:
                continue  # a placeholder: the source stays closed
            for secret in SecretList.parse(name, os.environ[name], strong=True):
                other = owner.setdefault(secret, name)
                if other != name:
                    raise ConfigError(
                        f"{name} and {other} share a secret: each source needs its own,"
                        " or either would accept the other's events"
                    )
            found[name.removeprefix("CRM_SECRET_").lower()] = secrets
        return found

    def usage_tokens_list(self) -> tuple[str, ...]:
        """The usage endpoint's bearer tokens; empty when none is configured. A
        placeholder is refused: it would let anyone bill a customer."""
        raw = self.usage_tokens.get_secret_value()
        return SecretList.parse("BRIDGE_USAGE_TOKENS", raw, strong=True, skip_blanks=True)

    def mytracker_key(self) -> str | None:
        """myTracker's API key; None when unset; a placeholder is refused."""
        key = self.mytracker_api_key.get_secret_value().strip()
        if not key:
            return None
        if key.lower() in PLACEHOLDERS:
            raise ConfigError("MYTRACKER_API_KEY is a placeholder")
        return key

    def token(self) -> str:
        token = self.cryptolens_token.get_secret_value().strip()
        if token.lower() in PLACEHOLDERS:
            raise ConfigError("CRYPTOLENS_TOKEN is empty or a placeholder")
        return token

    def webhook_sources(self) -> list[str]:
        """Where signed data may come in, as configured: the app refuses to start with
        none (a bridge that takes nothing is a misconfiguration, not a quiet success)."""
        sources = ["stripe"] if self.webhook_secrets() else []
        sources += ["hubspot"] if self.hubspot_secrets() else []
        sources += ["pipedrive"] if self.pipedrive_credentials() is not None else []
        sources += ["crm:" + name for name in self.crm_secrets()]
        sources += ["usage"] if self.usage_tokens_list() else []
        return sources

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
