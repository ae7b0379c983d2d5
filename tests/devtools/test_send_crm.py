"""``send hubspot|pipedrive|crm``: each signs a bundled sample as its sender does, and the
bridge takes it; ``dev`` turns the CRM endpoints on with secrets of its own."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from bridge.core.settings import Settings
from devtools import dev_setup
from devtools.send import command
from tests.fixtures.crm import (
    CRM_SECRET,
    HUBSPOT_SECRET,
    PIPEDRIVE_AUTH,
    PUBLIC_URL,
    CrmPipeline,
)


def send(*args: str, env: dict[str, str]) -> str:
    result = CliRunner().invoke(command, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


async def test_every_crm_sample_is_taken(crm: CrmPipeline) -> None:
    out = send(
        "hubspot",
        "deal.propertyChange.dealstage_closedwon",
        "--url",
        f"{crm.url}/webhooks/hubspot",
        env={"HUBSPOT_CLIENT_SECRET": HUBSPOT_SECRET, "BRIDGE_PUBLIC_URL": PUBLIC_URL},
    )
    assert out.startswith("200 ") and '"received":1' in out
    user, password = PIPEDRIVE_AUTH
    out = send(
        "pipedrive",
        "deal.change.won.v2",
        "--url",
        f"{crm.url}/webhooks/pipedrive",
        env={"PIPEDRIVE_WEBHOOK_USER": user, "PIPEDRIVE_WEBHOOK_PASSWORD": password},
    )
    assert out.startswith("200 ") and '"intents":4' in out
    for sample in ("deal.won", "deal.lost", "deal.customer_changed"):
        out = send(
            "crm",
            sample,
            "--source",
            "zoho",
            "--url",
            f"{crm.url}/webhooks/crm/zoho",
            env={"CRM_SECRET_ZOHO": CRM_SECRET},
        )
        assert out.startswith("200 "), out
    # Sent twice, a sample is a new delivery each time (fresh ids), never a duplicate.
    send(
        "crm",
        "deal.won",
        "--url",
        f"{crm.url}/webhooks/crm/zoho",
        env={"CRM_SECRET_DEMO": CRM_SECRET},
    )
    assert {e.provider for e in crm.events()} == {"hubspot", "pipedrive", "crm:zoho"}
    assert len(crm.events()) == 6


def test_a_missing_secret_is_a_usage_error() -> None:
    result = CliRunner().invoke(command, ["crm", "deal.won", "--source", "nowhere"], env={})
    assert result.exit_code == 2 and "CRM_SECRET_NOWHERE" in result.output


def test_dev_generates_crm_secrets_and_prints_only_those(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CRM_SECRET_DEMO", raising=False)
    settings = Settings(_env_file=None, PIPEDRIVE_WEBHOOK_PASSWORD="users-own-password-1")
    setup = dev_setup.make_setup(
        settings, demo=False, sandbox_port=1, config_dir=tmp_path, crm_port=2, web_port=3
    )
    assert setup.crm_root == "http://127.0.0.1:2"
    assert setup.env["BRIDGE_PUBLIC_URL"] == "http://127.0.0.1:3"  # what HubSpot's signature binds
    assert setup.env["HUBSPOT_API_URL"] == setup.env["PIPEDRIVE_API_URL"] == setup.crm_root
    banner = dev_setup.banner(setup, "http://127.0.0.1:3", "redis://x")
    assert setup.env["HUBSPOT_CLIENT_SECRET"] in banner
    assert setup.env["CRM_SECRET_DEMO"] in banner
    assert "users-own-password-1" not in banner
    assert '"$PIPEDRIVE_WEBHOOK_PASSWORD"' in banner
    config = Path(setup.env["BRIDGE_CONFIG"]).read_text()
    assert "[crm.demo]" in config and "[hubspot]" in config
