"""What a worker process shares between jobs: one engine, one HTTP client, caches.

Built once in arq's ``on_startup`` and closed in ``on_shutdown``; tests build their own
from their own settings.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
from arq.connections import ArqRedis

from bridge import registry
from bridge.config import BridgeConfig
from bridge.core.settings import Settings
from bridge.cryptolens import CryptolensClient, NotFound, make_http_clients
from bridge.cryptolens.models import LicenseTemplate
from bridge.cryptolens.pools import Clients
from bridge.mytracker import api as tracker_api
from bridge.store.db import Engine, make_engine
from bridge.store.tables import utcnow
from jobs.errors import Busy


class TemplateCache:
    """License templates by id, from GetLicenseTemplates, refreshed on a miss."""

    def __init__(self, client: CryptolensClient) -> None:
        self._client = client
        self._templates: dict[int, LicenseTemplate] = {}
        self._lock = asyncio.Lock()

    async def get(self, template_id: int) -> LicenseTemplate:
        if template_id not in self._templates:
            async with self._lock:
                if template_id not in self._templates:
                    templates = await self._client.get_license_templates()
                    self._templates = {t.id: t for t in templates}
        template = self._templates.get(template_id)
        if template is None:
            raise NotFound(
                "licensetemplate/GetLicenseTemplates", "Could not find the license template."
            )
        return template


class LocalLocks:
    """Named asyncio locks for the jobs of one process, dropped when nobody uses them."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, name: str, wait: float) -> AsyncIterator[None]:
        lock, users = self._locks.get(name, (asyncio.Lock(), 0))
        self._locks[name] = (lock, users + 1)
        try:
            if lock.locked():
                await asyncio.wait_for(lock.acquire(), wait)
            else:  # the common case: no task, no timer
                await lock.acquire()
            try:
                yield
            finally:
                lock.release()
        except TimeoutError:
            raise Busy(name) from None
        finally:
            lock, users = self._locks[name]
            if users == 1:
                del self._locks[name]
            else:
                self._locks[name] = (lock, users - 1)


@dataclass
class Runtime:
    settings: Settings
    config: BridgeConfig
    engine: Engine
    http: Clients  # Cryptolens calls; one set per process, its pools shared by jobs
    client: CryptolensClient
    templates: TemplateCache
    # Each provider's client (Stripe's, a CRM's REST client), made once per process by
    # its worker hook and shared by jobs: ``provider_client(name)``.
    clients: dict[str, Any] = field(default_factory=dict)
    redis: ArqRedis | None = None
    local_locks: LocalLocks = field(default_factory=lambda: LocalLocks())
    owner: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    # The clock the effects decide by (settle windows, start waits) and leases run on
    # (bridge.store.leases, jobs.lease), and how a lease's heartbeat waits: tests set their own.
    clock: Callable[[], datetime] = utcnow
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    rng: random.Random = field(default_factory=random.Random)
    # myTracker's import (bridge.mytracker.api): one client per process, None when the
    # TOML names no myTracker app.
    tracker: httpx.AsyncClient | None = None

    def now(self) -> datetime:
        return self.clock()

    def provider_client(self, provider: str) -> Any:
        return self.clients.get(provider)

    def random(self) -> float:
        return self.rng.random()

    @classmethod
    def build(cls, settings: Settings, *, engine: Engine | None = None) -> Runtime:
        http = make_http_clients(
            connect_timeout=settings.cryptolens_connect_timeout,
            read_timeout=settings.cryptolens_read_timeout,
            max_connections=settings.cryptolens_max_connections,
        )
        client = CryptolensClient(
            http, token=settings.token(), base_url=settings.cryptolens_api_url
        )
        config = BridgeConfig.load(settings.config_path)
        # Made first: a myTracker app without its key stops the worker at start-up.
        tracker = tracker_api.make_client(settings) if config.mytracker.enabled else None
        return cls(
            settings=settings,
            config=config,
            tracker=tracker,
            engine=engine or make_engine(settings.database_url),
            http=http,
            client=client,
            templates=TemplateCache(client),
            clients={
                name: hooks.open(settings)
                for name in registry.names()
                if (hooks := registry.worker(name)).open is not None
            },
        )

    async def close(self) -> None:
        await self.http.aclose()
        if self.tracker is not None:
            await self.tracker.aclose()
        for name, opened in self.clients.items():
            close = registry.worker(name).close
            if close is not None and opened is not None:
                await close(opened)
