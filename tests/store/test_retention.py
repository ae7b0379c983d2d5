"""Retention (``bridge.store.retention``, ``jobs.retention``): old finished deliveries lose
their bodies and buyers, the record of what was done stays, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlmodel import Session, select

from bridge.core.settings import Settings
from bridge.store import retention
from bridge.store.tables import Intent, LoggedDelivery, WebhookEvent, utcnow
from jobs.retention import prune_once
from jobs.runtime import Runtime
from jobs.worker import worker_options
from tests.fixtures import stripe_builders as sb
from tests.fixtures.pipeline import Pipeline

DAYS = 90


def purchase(n: int) -> dict[str, Any]:
    event = sb.checkout_session(payment_intent=f"pi_keep_{n}", amount_total=1000 + n)
    event["id"] = f"evt_keep_{n}"
    sb.obj(event)["id"] = f"cs_keep_{n}"
    sb.obj(event)["customer_details"].update(email=f"buyer{n}@example.com", name=f"Buyer {n}")
    return event


def events(bridge: Pipeline) -> dict[str, WebhookEvent]:
    return {e.external_id: e for e in bridge.events()}


def intents_of(bridge: Pipeline, n: int) -> list[Intent]:
    return [i for i in bridge.intents().values() if f"pi_keep_{n}:" in i.id]


def backdate(bridge: Pipeline, external_id: str, days: int) -> None:
    """The delivery as if it had arrived ``days`` ago (its intents changed as long ago)."""
    at = utcnow() - timedelta(days=days)
    with Session(bridge.engine) as s:
        event = s.exec(select(WebhookEvent).where(WebhookEvent.external_id == external_id)).one()
        event.received_at = at
        s.add(event)
        for intent in s.exec(select(Intent).where(Intent.event_id == event.id)).all():
            intent.updated_at = at
            s.add(intent)
        s.commit()


def prune_all(bridge: Pipeline, now: datetime, days: int = DAYS) -> retention.Pruned:
    total = retention.Pruned()
    while not (batch := retention.prune_batch(bridge.engine, now=now, days=days, limit=2)).empty:
        total += batch
    return total


class TestRetention:
    async def test_an_old_finished_delivery_loses_its_body_and_buyer_not_its_record(
        self, bridge: Pipeline
    ) -> None:
        await bridge.post(purchase(0))
        await bridge.drain()
        bridge.assert_all_done()
        before = events(bridge)["evt_keep_0"]
        done = {i.id: (i.status, i.result, i.effect) for i in intents_of(bridge, 0)}
        params = {i.id: json.loads(i.params) for i in intents_of(bridge, 0)}
        pruned = prune_all(bridge, utcnow() + timedelta(days=DAYS, minutes=1))
        assert (pruned.events, pruned.intents) == (1, 1)
        after = events(bridge)["evt_keep_0"]
        assert after.payload == "{}" and after.pruned_at is not None
        assert (after.provider, after.type, after.received_at, after.outcome) == (
            before.provider,
            before.type,
            before.received_at,
            before.outcome,
        )
        assert {i.id: (i.status, i.result, i.effect) for i in intents_of(bridge, 0)} == done
        creation = next(i for i in intents_of(bridge, 0) if i.effect == "create_key")
        was = params[creation.id]
        assert was["customer"]["email"] == "buyer0@example.com"
        # Only the buyer's personal fields go; ids and the rest of the params stay.
        assert json.loads(creation.params) == {
            **was,
            "customer": {**was["customer"], "email": None, "name": None},
        }
        # A late redelivery is still a duplicate, and changes nothing in Cryptolens.
        counts = bridge.counts()
        again = await bridge.post(purchase(0))
        assert again.json() == {"received": True, "duplicate": True, "intents": 0}
        await bridge.drain()
        assert bridge.counts()["keys_created"] == counts["keys_created"]
        assert events(bridge)["evt_keep_0"].payload == "{}"

    async def test_young_or_unfinished_deliveries_are_kept(self, bridge: Pipeline) -> None:
        for n in range(4):
            await bridge.post(purchase(n))
        await bridge.drain()
        for n in (0, 1, 2):
            backdate(bridge, f"evt_keep_{n}", DAYS + 1)
        with Session(bridge.engine) as s:
            # 1: waiting for a person since long ago; 2: failed only yesterday (replayable).
            for n, status, days in ((1, "pending", DAYS + 1), (2, "failed", 1)):
                for intent in s.exec(select(Intent)).all():
                    if f"pi_keep_{n}:" in intent.id and intent.effect == "create_key":
                        intent.status = status
                        intent.updated_at = utcnow() - timedelta(days=days)
                        s.add(intent)
            s.commit()
        bodies = {k: e.payload for k, e in events(bridge).items()}
        pruned = prune_all(bridge, utcnow())
        assert pruned.events == 1
        after = events(bridge)
        assert after["evt_keep_0"].payload == "{}"
        for kept in ("evt_keep_1", "evt_keep_2", "evt_keep_3"):  # unfinished, failed, young
            assert after[kept].payload == bodies[kept] and after[kept].pruned_at is None
            n = int(kept[-1])
            assert all(
                json.loads(i.params).get("customer", {}).get("email") == f"buyer{n}@example.com"
                for i in intents_of(bridge, n)
                if i.effect == "create_key"
            )

    async def test_zero_days_prunes_as_soon_as_finished(self, bridge: Pipeline) -> None:
        await bridge.post(purchase(0))
        assert prune_all(bridge, utcnow() + timedelta(seconds=1), days=0).events == 0  # pending
        await bridge.drain()
        assert prune_all(bridge, utcnow() + timedelta(seconds=1), days=0).events == 1

    async def test_old_refusal_records_go(self, bridge: Pipeline) -> None:
        with Session(bridge.engine) as s:
            for days in (DAYS + 1, 1):
                s.add(
                    LoggedDelivery(
                        provider="stripe",
                        outcome="refused",
                        cause="no_match",
                        client="203.0.113.7",
                        received_at=utcnow() - timedelta(days=days),
                    )
                )
            s.commit()
        assert prune_all(bridge, utcnow()).refusals == 1
        with Session(bridge.engine) as s:
            assert len(s.exec(select(LoggedDelivery)).all()) == 1

    async def test_the_worker_prunes_by_its_clock_while_deliveries_keep_arriving(
        self, bridge: Pipeline, bridge_settings: Settings
    ) -> None:
        for n in range(6):
            await bridge.post(purchase(n))
        await bridge.drain()
        for n in range(6):
            backdate(bridge, f"evt_keep_{n}", DAYS + 1)
        rt = Runtime.build(bridge_settings, engine=bridge.engine)
        at = utcnow()
        rt.clock = lambda: at
        try:

            async def arriving() -> None:
                for n in range(6, 12):
                    response = await bridge.post(purchase(n))
                    assert response.json()["duplicate"] is False

            async def pruning() -> retention.Pruned:
                total = retention.Pruned()
                for _ in range(4):  # one delivery a batch, between the new deliveries
                    total += await prune_once(rt, max_batches=1, limit=1)
                    await asyncio.sleep(0)
                return total

            _, during = await asyncio.gather(arriving(), pruning())
            await bridge.drain()
            rest = await prune_once(rt)  # the other old ones; nothing young
        finally:
            await rt.close()
        assert during.events == 4 and rest.events == 2
        after = events(bridge)
        assert {k for k, e in after.items() if e.pruned_at is not None} == {
            f"evt_keep_{n}" for n in range(6)
        }
        assert all(after[f"evt_keep_{n}"].payload != "{}" for n in range(6, 12))
        bridge.assert_all_done()
        assert bridge.counts()["keys_created"] == 12

    def test_the_worker_prunes_at_least_once_a_minute(self, bridge_settings: Settings) -> None:
        crons = {c.name: c for c in worker_options(bridge_settings)["cron_jobs"]}
        prune = crons["prune"]
        assert prune.unique and prune.minute is None and prune.hour is None
        assert prune.second is not None and len(prune.second) >= 1


def test_the_unpruned_index_serves_the_scan(engine: Any) -> None:
    """The scan walks the partial index, so pruned rows cost nothing (both databases)."""
    with engine.connect() as c:
        if engine.dialect.name == "sqlite":
            rows = c.execute(text("PRAGMA index_list('webhook_event')")).all()
            assert any(r[1] == "ix_webhook_event_unpruned" and r[4] for r in rows)  # partial
        else:
            definition = c.execute(
                text(
                    "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_webhook_event_unpruned'"
                )
            ).scalar_one()
            assert "WHERE (pruned_at IS NULL)" in definition
