"""The TOML file (``BRIDGE_CONFIG``) with every table read by its owner's model.

Core keeps the file's tables as read (:class:`bridge.core.settings.ConfigTables`); each
package defines and parses its own table (``bridge.stripe.config`` for ``[stripe]``...).
This is where they meet: :meth:`BridgeConfig.load` checks every table at start-up (and
refuses a table nobody reads), so a typo stops the process instead of a payment. The
web app, the worker and the operator's commands hold a :class:`BridgeConfig`; a
provider reads its own table from whatever config it is given (``StripeConfig.of``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from bridge.core.errors import ConfigError
from bridge.core.settings import ConfigTables
from bridge.crm.config import CrmConfig, CrmSourceConfig
from bridge.cryptolens.config import CryptolensConfig
from bridge.hubspot.config import HubSpotConfig
from bridge.mytracker.config import TrackerConfig
from bridge.pipedrive.config import PipedriveConfig
from bridge.stripe.config import StripeConfig
from bridge.usage.config import UsageConfig

# Every table of the file, and the model that reads it.
TABLES: dict[str, type[BaseModel]] = {
    "stripe": StripeConfig,
    "cryptolens": CryptolensConfig,
    "usage": UsageConfig,
    "mytracker": TrackerConfig,
    "hubspot": HubSpotConfig,
    "pipedrive": PipedriveConfig,
    "crm": CrmConfig,
}


class BridgeConfig(ConfigTables):
    """The TOML file: what each Stripe price and each CRM deal becomes in Cryptolens."""

    def __init__(self, tables: dict[str, Any] | None = None, *, origin: str = "") -> None:
        super().__init__(tables, origin=origin)
        unknown = sorted(set(self.tables) - set(TABLES))
        if unknown:
            known = ", ".join(f"[{name}]" for name in TABLES)
            raise ConfigError(f"{self.origin}: no table [{unknown[0]}] is known ({known})")
        for name, model in TABLES.items():
            self.section(name, model)  # each parsed now: a bad one stops the start

    @classmethod
    def load(cls, path: Path | None) -> BridgeConfig:
        return cls(cls.read(path), origin=f"BRIDGE_CONFIG {path}" if path else "")

    @property
    def stripe(self) -> StripeConfig:
        return StripeConfig.of(self)

    @property
    def cryptolens(self) -> CryptolensConfig:
        return CryptolensConfig.of(self)

    @property
    def usage(self) -> UsageConfig:
        return UsageConfig.of(self)

    @property
    def mytracker(self) -> TrackerConfig:
        return TrackerConfig.of(self)

    @property
    def hubspot(self) -> HubSpotConfig:
        return HubSpotConfig.of(self)

    @property
    def pipedrive(self) -> PipedriveConfig:
        return PipedriveConfig.of(self)

    @property
    def crm(self) -> dict[str, CrmSourceConfig]:
        return CrmConfig.of(self).root
