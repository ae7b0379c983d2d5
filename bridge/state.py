"""What the web app shares between requests, built once in its lifespan.

It sits below the providers' web halves, which take it in every request: so it names only
what core, the store and the Cryptolens client define (the TOML file as core's
``ConfigTables``, not ``bridge.config``, which knows every provider)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from arq.connections import ArqRedis

from bridge.core.metrics import Refresher
from bridge.core.outage import RedisOutage
from bridge.core.settings import ConfigTables, Settings
from bridge.core.throttle import Throttle, client_key
from bridge.cryptolens import CryptolensClient
from bridge.store.batcher import Batcher
from bridge.store.db import Engine
from bridge.store.deliveries import DeliveryRecorder


@dataclass
class AppState:
    settings: Settings
    # The TOML file's tables (a bridge.config.BridgeConfig, every one checked at start-up);
    # each provider reads its own (``StripeConfig.of(state.config)``).
    config: ConfigTables
    engine: Engine
    redis: ArqRedis | None
    webhook_secrets: tuple[str, ...]
    batcher: Batcher
    # Refused and duplicate deliveries, for the admin page (any provider's endpoint).
    deliveries: DeliveryRecorder
    # POST /usage bearer tokens; empty: the endpoint answers 404.
    usage_tokens: tuple[str, ...] = ()
    # Unix seconds, for the signature's tolerance; tests set it to stand on a boundary.
    clock: Callable[[], float] = time.time
    # Read-only Cryptolens calls for the admin page's plans (None: no token configured).
    cryptolens: CryptolensClient | None = None
    # Whether Redis answers, as /readyz last found it (logged once per outage).
    redis_outage: RedisOutage = field(default_factory=lambda: RedisOutage("web"))
    # Failed credential checks per client (admin token, Pipedrive Basic, usage tokens).
    throttle: Throttle = field(default_factory=Throttle)
    # The metrics' gauges, read at most once per few seconds however many scrape.
    refresh_metrics: Refresher = field(default_factory=Refresher)

    def client(self, scope: Mapping[str, Any]) -> str:
        """The key a client's failed checks are counted under."""
        return client_key(scope, self.settings.trust_forwarded)
