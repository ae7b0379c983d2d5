"""Group commit: deliveries stored together answer exactly as if stored one by one."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from arq.connections import ArqRedis
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, select

from bridge.core import metrics
from bridge.core.intents import Effect, IntentSpec, Plan
from bridge.core.queue import Enqueuer
from bridge.store import inbox, wal
from bridge.store import intents as intents_module
from bridge.store.batcher import Batcher
from bridge.store.db import make_engine
from bridge.store.inbox import Delivery, Recorded
from bridge.store.tables import Intent, LicenseAlias, WebhookEvent


def spec(intent_id: str, **params: Any) -> IntentSpec:
    return IntentSpec(
        id=intent_id,
        effect=Effect.EXTEND,
        license_ref="stripe:sub:sub_1",
        params={"expires_at": 100, **params},
        occurred_at=1,
    )


def delivery(
    event_id: str, *intents: IntentSpec, aliases: Sequence[tuple[str, str]] = ()
) -> Delivery:
    return Delivery(
        provider="stripe",
        external_id=event_id,
        event_type="invoice.paid",
        api_version="2024-06-20",
        livemode=False,
        payload=f'{{"id":"{event_id}"}}',
        plan=Plan(intents=list(intents), aliases=list(aliases)),
    )


class Spy:
    """Counts the batches ``record_many`` is called with."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sizes: list[int] = []
        real = inbox.record_many

        def record_many(engine: Engine, deliveries: Sequence[Delivery]) -> list[Recorded]:
            self.sizes.append(len(deliveries))
            return real(engine, deliveries)

        monkeypatch.setattr(inbox, "record_many", record_many)


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Spy:
    return Spy(monkeypatch)


@pytest.fixture
async def batcher(engine: Engine, redis_url: str) -> AsyncIterator[Batcher]:
    queue = Enqueuer(redis_url)
    b = Batcher(engine, queue)
    yield b
    await b.aclose()
    await queue.aclose()


async def together(batcher: Batcher, *deliveries: Delivery) -> list[Recorded | BaseException]:
    """Submit all before the flusher runs, so that they form one batch."""
    return await asyncio.gather(*(batcher.record(d) for d in deliveries), return_exceptions=True)


def events(engine: Engine) -> list[WebhookEvent]:
    with Session(engine) as s:
        return list(s.exec(select(WebhookEvent)).all())


def intents(engine: Engine) -> list[Intent]:
    with Session(engine) as s:
        return list(s.exec(select(Intent)).all())


class TestOneBatch:
    async def test_concurrent_deliveries_share_one_transaction(
        self, batcher: Batcher, spy: Spy
    ) -> None:
        results = await together(batcher, *(delivery(f"evt_{n}", spec(f"i{n}")) for n in range(5)))
        assert spy.sizes == [5]
        assert [r.new_intents for r in results if isinstance(r, Recorded)] == [
            [f"i{n}"] for n in range(5)
        ]

    async def test_same_event_twice_is_stored_once_and_the_second_is_a_duplicate(
        self, batcher: Batcher, engine: Engine, spy: Spy
    ) -> None:
        first, second = await together(
            batcher, delivery("evt_1", spec("i1")), delivery("evt_1", spec("i1"))
        )
        assert spy.sizes == [2]
        assert isinstance(first, Recorded)
        assert (first.duplicate, first.new_intents) == (False, ["i1"])
        assert second == Recorded(duplicate=True, event_id=None, new_intents=[])
        assert len(events(engine)) == 1

    async def test_an_intent_implied_twice_is_new_for_the_first_delivery_only(
        self, batcher: Batcher, engine: Engine, spy: Spy
    ) -> None:
        # invoice.paid and invoice.payment_succeeded of one invoice in the same batch.
        paid, succeeded = await together(
            batcher,
            delivery("evt_paid", spec("in_1:extend")),
            delivery("evt_succeeded", spec("in_1:extend"), spec("in_1:event")),
        )
        assert spy.sizes == [2]
        assert isinstance(paid, Recorded) and isinstance(succeeded, Recorded)
        assert (paid.duplicate, paid.new_intents) == (False, ["in_1:extend"])
        assert (succeeded.duplicate, succeeded.new_intents) == (False, ["in_1:event"])
        stored = {i.id: i.event_id for i in intents(engine)}
        assert stored == {"in_1:extend": paid.event_id, "in_1:event": succeeded.event_id}
        assert len(events(engine)) == 2

    async def test_a_redelivery_of_a_stored_event_in_a_batch_is_a_duplicate(
        self, batcher: Batcher, engine: Engine
    ) -> None:
        await batcher.record(delivery("evt_1", spec("i1")))
        old, new = await together(
            batcher, delivery("evt_1", spec("i1")), delivery("evt_2", spec("i1"), spec("i2"))
        )
        assert old == Recorded(duplicate=True, event_id=None, new_intents=[])
        assert isinstance(new, Recorded) and new.new_intents == ["i2"]

    async def test_aliases_keep_the_first_mapping(self, batcher: Batcher, engine: Engine) -> None:
        await together(
            batcher,
            delivery("evt_1", aliases=[("stripe:pi:pi_1", "stripe:sub:sub_1")]),
            delivery("evt_2", aliases=[("stripe:pi:pi_1", "stripe:sub:sub_2")]),
        )
        with Session(engine) as s:
            assert s.exec(select(LicenseAlias)).one().ref == "stripe:sub:sub_1"

    async def test_batches_are_capped(self, engine: Engine, spy: Spy) -> None:
        small = Batcher(engine, None, max_batch=2)
        results = await together(small, *(delivery(f"evt_{n}") for n in range(5)))
        assert spy.sizes == [2, 2, 1]
        assert all(isinstance(r, Recorded) and not r.duplicate for r in results)

    async def test_a_lone_delivery_is_stored_at_once(self, batcher: Batcher, spy: Spy) -> None:
        recorded = await batcher.record(delivery("evt_1", spec("i1")))
        assert spy.sizes == [1]
        assert recorded.new_intents == ["i1"]


class HeldSleep:
    """The commit delay's timer, held open until the test lets it end."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        self.entered.set()
        await self.release.wait()


class TestCommitDelay:
    async def test_under_concurrent_load_a_flush_waits_for_deliveries_in_flight(
        self, engine: Engine, spy: Spy
    ) -> None:
        timer = HeldSleep()
        batcher = Batcher(engine, None, commit_delay=0.5, sleep=timer)
        await together(batcher, delivery("evt_1"), delivery("evt_2"))
        # The last batch held two: the next flush waits, and a delivery arriving during
        # the wait joins the one that started it.
        first = asyncio.create_task(batcher.record(delivery("evt_3")))
        await timer.entered.wait()
        second = asyncio.create_task(batcher.record(delivery("evt_4")))
        await asyncio.sleep(0)  # evt_4 is pending beside evt_3
        timer.release.set()
        await asyncio.gather(first, second)
        assert timer.delays == [0.5]
        assert spy.sizes == [2, 2]

    async def test_without_a_delay_each_arrival_is_a_batch_of_its_own(
        self, engine: Engine, spy: Spy
    ) -> None:
        timer = HeldSleep()
        batcher = Batcher(engine, None, commit_delay=0, sleep=timer)
        await together(batcher, delivery("evt_1"), delivery("evt_2"))
        await batcher.record(delivery("evt_3"))
        await batcher.record(delivery("evt_4"))
        assert timer.delays == []
        assert spy.sizes == [2, 1, 1]

    async def test_lone_deliveries_never_wait(self, engine: Engine, spy: Spy) -> None:
        # A delay no test could sit through: lone deliveries must not meet it.
        batcher = Batcher(engine, None, commit_delay=3600)
        for n in range(3):
            await asyncio.wait_for(batcher.record(delivery(f"evt_{n}")), 30)
        assert spy.sizes == [1, 1, 1]


class TestFailures:
    async def test_database_down_fails_every_delivery_of_the_batch(self, tmp_path: Path) -> None:
        engine = make_engine(f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'bridge.db'}")
        try:
            results = await together(
                Batcher(engine, None), delivery("evt_1", spec("i1")), delivery("evt_2")
            )
        finally:
            engine.dispose()
        assert all(isinstance(r, OperationalError) for r in results)

    async def test_a_poisoned_delivery_fails_alone(
        self, batcher: Batcher, engine: Engine, spy: Spy
    ) -> None:
        poisoned = delivery("evt_bad", spec("i_bad", not_json=object()))
        good, bad, other = await together(
            batcher, delivery("evt_1", spec("i1")), poisoned, delivery("evt_2", spec("i2"))
        )
        assert spy.sizes == [3, 1, 1, 1]  # the batch, then one by one
        assert isinstance(bad, TypeError)
        assert isinstance(good, Recorded) and good.new_intents == ["i1"]
        assert isinstance(other, Recorded) and other.new_intents == ["i2"]
        assert sorted(e.external_id for e in events(engine)) == ["evt_1", "evt_2"]
        assert sorted(i.id for i in intents(engine)) == ["i1", "i2"]

    async def test_a_failed_batch_leaves_nothing_stored(
        self, engine: Engine, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        real = intents_module.insert_new

        def fail_after_events(*args: Any) -> set[str]:
            real(*args)
            raise OperationalError("INSERT", {}, Exception("disk I/O error"))

        monkeypatch.setattr(intents_module, "insert_new", fail_after_events)
        results = await together(Batcher(engine, None), delivery("evt_1", spec("i1")))
        assert isinstance(results[0], OperationalError)
        assert events(engine) == []
        assert intents(engine) == []

    async def test_redis_down_after_the_commit_still_records(self, engine: Engine) -> None:
        queue = Enqueuer("redis://127.0.0.1:1/0")  # nothing listens on port 1
        before = metrics.ENQUEUE_FAILURES._value.get()
        try:
            recorded = await Batcher(engine, queue, enqueue_timeout=2).record(
                delivery("evt_1", spec("i1"))
            )
        finally:
            await queue.aclose()
        assert recorded.new_intents == ["i1"]
        assert metrics.ENQUEUE_FAILURES._value.get() == before + 1
        assert [i.id for i in intents(engine)] == ["i1"]


class TestEnqueue:
    async def test_new_intents_of_a_batch_are_queued_once(
        self, batcher: Batcher, redis: ArqRedis
    ) -> None:
        await together(
            batcher,
            delivery("evt_1", spec("i1")),
            delivery("evt_1", spec("i1")),
            delivery("evt_2", spec("i1"), spec("i2")),
        )
        queued = await redis.zrange(redis.default_queue_name, 0, -1)
        assert sorted(queued) == [b"i1", b"i2"]


class TestCheckpoint:
    async def test_sqlite_checkpoints_every_so_many_commits(
        self, engine: Engine, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        if engine.dialect.name != "sqlite":
            pytest.skip("PostgreSQL has no WAL file of ours to checkpoint")
        ran: list[Engine] = []
        real = wal.checkpoint

        def checkpoint(target: Engine) -> None:
            ran.append(target)
            real(target)

        monkeypatch.setattr(wal, "checkpoint", checkpoint)
        batcher = Batcher(engine, None, checkpoint_every=2)
        for n in range(5):
            await batcher.record(delivery(f"evt_{n}", spec(f"i{n}")))
            await batcher.aclose()
        # Commits 2 and 4 start a copy beside the commits; as each copy is done by the
        # next commit (3 and 5), a second checkpoint follows that commit.
        assert ran == [engine] * 4
        assert len(events(engine)) == 5

    async def test_the_wal_starts_over_under_a_steady_stream_of_commits(
        self, engine: Engine
    ) -> None:
        if engine.dialect.name != "sqlite":
            pytest.skip("SQLite only")
        wal = Path(f"{engine.url.database}-wal")
        padding = "x" * 3000  # a page of its own per delivery

        def padded(n: int) -> Delivery:
            payload = f'{{"id":"evt_{n}","p":"{padding}"}}'
            return dataclasses.replace(delivery(f"evt_{n}", spec(f"i{n}")), payload=payload)

        # Two deliveries per commit, 600 commits back to back.
        batcher = Batcher(engine, None, max_batch=2, checkpoint_every=8, commit_delay=0.0001)
        await asyncio.gather(*(batcher.record(padded(n)) for n in range(1200)))
        await batcher.aclose()
        assert len(events(engine)) == 1200
        # Each time the WAL starts over, SQLite bumps the checkpoint sequence number in its
        # header (bytes 12-15). A checkpoint that never catches up leaves it at 0 and the
        # WAL only grows; how far it gets between two restarts depends on the disk.
        with wal.open("rb") as f:
            header = f.read(32)
        assert int.from_bytes(header[12:16], "big") >= 3

    def test_stored_deliveries_leave_checkpoints_to_the_batcher(self, engine: Engine) -> None:
        if engine.dialect.name != "sqlite":
            pytest.skip("SQLite only")
        inbox.record_many(engine, [delivery("evt_1", spec("i1"))])
        wal.checkpoint(engine)  # nothing to wait for: no reader, no writer
        connection = engine.raw_connection()
        try:
            cursor = connection.cursor()
            cursor.execute("PRAGMA wal_autocheckpoint")
            assert cursor.fetchone() == (0,)
            cursor.close()
        finally:
            connection.close()
