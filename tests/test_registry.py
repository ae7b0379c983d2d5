"""The provider registry: web and worker halves import apart, and refs find their hooks."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from bridge import registry
from bridge.core.providers import WorkerHooks

# Builds the app with every provider's endpoint mounted, then names the modules loaded.
_WEB_PROCESS = textwrap.dedent(
    """
    import sys
    import bridge.serve
    from bridge.app import create_app
    from bridge.core.settings import Settings
    app = create_app(Settings(_env_file=None))
    paths = sorted(getattr(route, "path", "") for route in app.routes)
    print(" ".join(paths))
    print(" ".join(sorted(sys.modules)))
    """
)


def test_the_web_process_never_imports_the_stripe_sdk(tmp_path: str) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("BRIDGE_", "CRM_SECRET_"))},
        "BRIDGE_DATABASE_URL": f"sqlite:///{tmp_path}/web.db",
        "BRIDGE_REDIS_URL": "redis://127.0.0.1:1/0",
        "STRIPE_WEBHOOK_SECRET": "whsec_registry_test_secret",
        "STRIPE_API_KEY": "sk_test_registry",
        "HUBSPOT_CLIENT_SECRET": "hubspot-registry-secret",
        "BRIDGE_PUBLIC_URL": "https://bridge.example.com",
        "PIPEDRIVE_WEBHOOK_USER": "bridge",
        "PIPEDRIVE_WEBHOOK_PASSWORD": "pipedrive-registry-password-01",
        "CRM_SECRET_ZOHO": "crm-registry-secret-for-zoho-01",
        "BRIDGE_USAGE_TOKENS": "usage-registry-token-000000001",
    }
    done = subprocess.run(
        [sys.executable, "-c", _WEB_PROCESS], env=env, capture_output=True, text=True, check=True
    )
    paths, modules = done.stdout.splitlines()
    for mounted in ("/webhooks/stripe", "/webhooks/hubspot", "/webhooks/pipedrive"):
        assert mounted in paths.split()
    loaded = set(modules.split())
    assert "bridge.stripe.webhook" in loaded  # the web half is there...
    assert "stripe" not in loaded  # ...and the SDK is not
    assert not {m for m in loaded if m.endswith(".hooks") and m.startswith("bridge.")}


def test_every_provider_has_both_halves() -> None:
    for name in registry.names():
        assert callable(registry.web(name))
        assert isinstance(registry.worker(name), WorkerHooks)
    assert registry.worker("crm") == WorkerHooks()  # the contract's body says it all


def test_a_ref_finds_its_providers_hooks() -> None:
    assert registry.hooks_for("hubspot:deal:42") is registry.worker("hubspot")
    assert registry.hooks_for("usage:1001:key") is None
    assert registry.name_of("crm:zoho:deal:7") == "crm"


def test_occurred_at_is_read_in_the_providers_unit() -> None:
    stripe = registry.occurred_time("stripe:sub:sub_1", 1_780_000_000)
    deal = registry.occurred_time("hubspot:deal:42", 1_780_000_000_000)
    assert stripe is not None and stripe == deal
    assert registry.occurred_time("stripe:sub:sub_1", 10**30) is None
