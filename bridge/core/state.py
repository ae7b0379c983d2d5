"""What the web app shares between requests, built once in its lifespan."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from arq.connections import ArqRedis
from sqlalchemy import Engine

from bridge.core.batcher import Batcher
from bridge.core.deliverylog import DeliveryLog
from bridge.core.outage import RedisOutage
from bridge.core.settings import BridgeConfig, Settings
from bridge.cryptolens import CryptolensClient


@dataclass
class AppState:
    settings: Settings
    config: BridgeConfig
    engine: Engine
    redis: ArqRedis | None
    webhook_secrets: tuple[str, ...]
    batcher: Batcher
    # Refused and duplicate deliveries, for the admin page (any provider's endpoint).
    deliveries: DeliveryLog
    # POST /usage bearer tokens; empty: the endpoint answers 404.
    usage_tokens: tuple[str, ...] = ()
    # Unix seconds, for the signature's tolerance; tests set it to stand on a boundary.
    clock: Callable[[], float] = time.time
    # Read-only Cryptolens calls for the admin page's plans (None: no token configured).
    cryptolens: CryptolensClient | None = None
    # Whether Redis answers, as /readyz last found it (logged once per outage).
    redis_outage: RedisOutage = field(default_factory=lambda: RedisOutage("web"))
