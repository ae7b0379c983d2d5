"""Secrets the operator makes up are refused at start-up when they are easy to guess:
too short, or too few distinct characters; the message says how to make a good one and
never shows the value."""

from __future__ import annotations

import secrets

import pytest

from bridge.core.errors import ConfigError
from bridge.core.secrets import weakness
from bridge.core.settings import Settings

WEAK = ["p", "aaaaaaaaaaaaaaaa", "abababababababababababab", "changeme", "0123456"]
STRONG = "pipedrive-hook-password-0001"


@pytest.mark.parametrize("value", WEAK)
def test_weak_values(value: str) -> None:
    assert weakness(value) is not None


def test_made_ones_pass() -> None:
    for _ in range(200):
        assert weakness(secrets.token_urlsafe(32)) is None
        assert weakness(secrets.token_hex(16)) is None


@pytest.mark.parametrize("value", WEAK[:3])
class TestRefusedAtStartUp:
    def test_admin_token(self, value: str) -> None:
        with pytest.raises(ConfigError, match="BRIDGE_ADMIN_TOKEN") as refused:
            Settings(_env_file=None, BRIDGE_ADMIN_TOKEN=value).admin_token_value()
        assert "secrets.token_urlsafe(32)" in str(refused.value)
        if len(value) >= 8:  # long enough to be told apart from the message's words
            assert value not in str(refused.value)

    def test_pipedrive_password(self, value: str) -> None:
        settings = Settings(
            _env_file=None, PIPEDRIVE_WEBHOOK_USER="bridge", PIPEDRIVE_WEBHOOK_PASSWORD=value
        )
        with pytest.raises(ConfigError, match=r"PIPEDRIVE_WEBHOOK_PASSWORD.*token_urlsafe"):
            settings.webhook_sources()

    def test_usage_tokens(self, value: str) -> None:
        settings = Settings(_env_file=None, BRIDGE_USAGE_TOKENS=f"{STRONG},{value}")
        with pytest.raises(ConfigError, match="BRIDGE_USAGE_TOKENS: one of its values"):
            settings.webhook_sources()

    def test_crm_secret(self, value: str, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("CRM_SECRET_WEAKLING", value)
        with pytest.raises(ConfigError, match="CRM_SECRET_WEAKLING"):
            Settings(_env_file=None, STRIPE_WEBHOOK_SECRET="whsec_x").webhook_sources()


def test_strong_ones_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_SECRET_STRONG", STRONG)
    settings = Settings(
        _env_file=None,
        BRIDGE_ADMIN_TOKEN=secrets.token_urlsafe(32),
        PIPEDRIVE_WEBHOOK_USER="bridge",
        PIPEDRIVE_WEBHOOK_PASSWORD=STRONG,
        BRIDGE_USAGE_TOKENS=secrets.token_urlsafe(24),
    )
    assert settings.admin_token_value() is not None
    assert {"pipedrive", "crm:strong", "usage"} <= set(settings.webhook_sources())
