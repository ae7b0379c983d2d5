"""What the operator commands (the dry run) give a provider's worker hooks: the settings,
the TOML file, and the provider's client, opened on first use and closed at the end.

The dry run asks the same hooks as the worker (a deal's pipeline, Stripe's checkout line
items): reads only. A web process imports a provider's worker half only when a plan asks
for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bridge import registry
from bridge.core.settings import ConfigTables, Settings


@dataclass
class ProviderContext:
    """A ``bridge.core.providers.WorkerContext`` outside the worker."""

    settings: Settings
    config: ConfigTables
    clients: dict[str, Any] = field(default_factory=dict)

    def provider_client(self, provider: str) -> Any:
        if provider not in self.clients:
            hooks = registry.worker(provider)
            self.clients[provider] = hooks.open(self.settings) if hooks.open else None
        return self.clients[provider]

    async def aclose(self) -> None:
        for name, opened in self.clients.items():
            close = registry.worker(name).close
            if close is not None and opened is not None:
                await close(opened)
        self.clients.clear()
