"""What the web app shares between requests, built once in its lifespan."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from arq.connections import ArqRedis
from sqlalchemy import Engine

from bridge.core.batcher import Batcher
from bridge.core.settings import BridgeConfig, Settings


@dataclass
class AppState:
    settings: Settings
    config: BridgeConfig
    engine: Engine
    redis: ArqRedis | None
    webhook_secrets: tuple[str, ...]
    batcher: Batcher
    # POST /usage bearer tokens; empty: the endpoint answers 404.
    usage_tokens: tuple[str, ...] = ()
    # Unix seconds, for the signature's tolerance; tests set it to stand on a boundary.
    clock: Callable[[], float] = time.time
