"""The example files in config/ load through the real loaders and name real settings."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bridge.app import create_app
from bridge.config import BridgeConfig
from bridge.core.errors import ConfigError
from bridge.core.settings import Settings
from bridge.sandbox.config import DEFAULT_TOKEN, load_config

CONFIG = Path(__file__).parent.parent / "config"


class TestBridgeExample:
    def test_loads_with_every_option(self) -> None:
        config = BridgeConfig.load(CONFIG / "bridge.example.toml")
        stripe = config.stripe
        assert stripe.default_template_id == 1
        assert (stripe.grace_days, stripe.unpaid_policy) == (3, "unpaid")
        assert [p.template_id for p in stripe.price] == [1, 2]
        assert stripe.grace_for("price_yearly_example") == 14
        assert stripe.grace_for("price_1OPouiJN5vQBdWExAQaqTooZ") == 3
        assert config.hubspot.stages("won") == {"closedwon"}
        assert config.hubspot.template_for("default") == (1, "pipeline")
        assert config.hubspot.lost_policy == "block"
        assert config.pipedrive.template_for(1) == (2, "pipeline")
        assert config.pipedrive.template_for(99) == (2, "default")
        zoho = config.crm["zoho"]
        assert zoho.template_for(None, "pro") == (3, "product")
        assert zoho.template_for(7, "pro") == (7, "deal")
        assert (zoho.template_for(None, "other"), zoho.lost_policy) == ((1, "default"), "none")
        usage = config.usage
        assert [(p.id, p.sink) for p in usage.product] == [
            (1001, "cryptolens"),
            (1002, "stripe_meter"),
        ]
        meter = usage.product_for(1002)
        assert meter is not None and meter.event_name("storage") == "storage_gb"
        assert meter.event_name("") == "api_calls"
        assert usage.collector is not None and usage.collector.products == (1001,)


class TestTables:
    """Core keeps the file's tables as read; each package's model reads its own, once."""

    def test_every_table_is_checked_at_load(self, tmp_path: Path) -> None:
        path = tmp_path / "bridge.toml"
        path.write_text('[hubspot]\nlost_policy = "shred"\n')
        with pytest.raises(ConfigError, match=r"BRIDGE_CONFIG .*bridge.toml \[hubspot\]"):
            BridgeConfig.load(path)

    def test_a_table_nobody_reads_is_refused(self, tmp_path: Path) -> None:
        path = tmp_path / "bridge.toml"
        path.write_text("[strip]\ngrace_days = 3\n")
        with pytest.raises(ConfigError, match=r"no table \[strip\] is known"):
            BridgeConfig.load(path)

    def test_a_provider_reads_its_table_once_from_core_tables(self) -> None:
        from bridge.core.settings import ConfigTables
        from bridge.stripe.config import StripeConfig

        tables = ConfigTables({"stripe": {"grace_days": 9}})
        first = StripeConfig.of(tables)
        assert first.grace_days == 9 and StripeConfig.of(tables) is first
        assert StripeConfig.of(ConfigTables()).grace_days == 3  # no table: the defaults


class TestSandboxExample:
    def test_loads_products_templates_tokens_customers(self) -> None:
        config = load_config(CONFIG / "sandbox.example.toml")
        assert [t.id for t in config.templates] == [1, 2, 3]
        perpetual = config.template(3)
        assert perpetual is not None and perpetual.period == 0
        demo = config.token(DEFAULT_TOKEN)
        assert demo is not None and demo.methods is None
        readonly = config.token("sandbox-readonly-token")
        assert readonly is not None and readonly.product_id == 1001
        assert readonly.allows("key/GetKey") and not readonly.allows("key/BlockKey")
        assert [c.email for c in config.customers] == ["ada@example.com"]


class TestEnvExample:
    PATH = CONFIG / "bridge.env.example"

    def names(self) -> set[str]:
        text = self.PATH.read_text(encoding="utf-8")
        return set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", text, flags=re.MULTILINE))

    def test_names_every_setting_and_nothing_else(self) -> None:
        aliases = {f.alias for f in Settings.model_fields.values() if f.alias}
        assert self.names() == aliases

    def test_loads_as_an_env_file_and_refuses_the_empty_secret(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        for name in self.names():
            monkeypatch.delenv(name, raising=False)
        settings = Settings(_env_file=self.PATH)
        assert settings.database_url == "sqlite:///./bridge.db"
        assert settings.webhook_secrets() == ()  # Stripe not configured: no endpoint
        assert settings.webhook_sources() == []
        with pytest.raises(ConfigError, match="no webhook source"):
            create_app(settings)
        with pytest.raises(ConfigError):
            settings.token()
