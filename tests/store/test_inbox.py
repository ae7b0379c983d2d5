"""The idempotent inbox on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from bridge.core.intents import Effect, IntentSpec, Plan
from bridge.store import inbox, payloads, pending
from bridge.store.tables import Intent, LicenseAlias, StartHint, WebhookEvent, utcnow


def spec(intent_id: str, effect: Effect = Effect.EXTEND) -> IntentSpec:
    return IntentSpec(
        id=intent_id,
        effect=effect,
        license_ref="stripe:sub:sub_1",
        params={"expires_at": 100},
        occurred_at=1,
    )


def record(
    engine: Engine, event_id: str, plan: Plan, payload: Mapping[str, Any] | None = None
) -> inbox.Recorded:
    return inbox.record(
        engine,
        provider="stripe",
        external_id=event_id,
        event_type="invoice.paid",
        api_version="2024-06-20",
        livemode=False,
        payload=dict(payload or {"id": event_id}),
        plan=plan,
    )


class TestRecord:
    def test_new_event_stores_event_intents_and_aliases(self, engine: Engine) -> None:
        plan = Plan(
            intents=[spec("i1"), spec("i2")], aliases=[("stripe:pi:pi_1", "stripe:sub:sub_1")]
        )
        recorded = record(engine, "evt_1", plan)
        assert not recorded.duplicate
        assert sorted(recorded.new_intents) == ["i1", "i2"]
        with Session(engine) as s:
            assert s.exec(select(WebhookEvent)).one().outcome == "planned"
            assert len(s.exec(select(Intent)).all()) == 2
            assert s.exec(select(LicenseAlias)).one().ref == "stripe:sub:sub_1"

    def test_redelivery_changes_nothing(self, engine: Engine) -> None:
        record(engine, "evt_1", Plan(intents=[spec("i1")]))
        again = record(engine, "evt_1", Plan(intents=[spec("i1")]))
        assert again.duplicate
        assert again.new_intents == []
        with Session(engine) as s:
            assert len(s.exec(select(WebhookEvent)).all()) == 1

    def test_another_event_with_the_same_intent_adds_no_intent(self, engine: Engine) -> None:
        # invoice.paid and invoice.payment_succeeded for one invoice: one intent.
        record(engine, "evt_paid", Plan(intents=[spec("in_1:extend")]))
        second = record(engine, "evt_succeeded", Plan(intents=[spec("in_1:extend")]))
        assert not second.duplicate
        assert second.new_intents == []
        with Session(engine) as s:
            assert len(s.exec(select(WebhookEvent)).all()) == 2
            assert len(s.exec(select(Intent)).all()) == 1

    def test_concurrent_deliveries_store_once(self, engine: Engine) -> None:
        plan = Plan(intents=[spec("i1")])
        with ThreadPoolExecutor(3) as pool:
            results = list(pool.map(lambda _: record(engine, "evt_1", plan), range(3)))
        assert sum(not r.duplicate for r in results) == 1
        assert sum(len(r.new_intents) for r in results) == 1

    def test_ignored_event_is_recorded_as_ignored(self, engine: Engine) -> None:
        record(engine, "evt_x", Plan(ignored="unhandled type customer.created"))
        with Session(engine) as s:
            row = s.exec(select(WebhookEvent)).one()
        assert row.outcome == "ignored"
        assert row.note == "unhandled type customer.created"

    def test_secrets_in_payload_are_not_stored(self, engine: Engine) -> None:
        payload = {
            "id": "evt_1",
            "data": {
                "object": {"client_secret": "cs_live_secret_abc", "x": [{"client_secret": "y"}]}
            },
        }
        record(engine, "evt_1", Plan(), payload)
        with Session(engine) as s:
            stored = s.exec(select(WebhookEvent)).one().payload
        assert "cs_live_secret_abc" not in stored
        assert json.loads(stored)["data"]["object"]["client_secret"] == "[redacted]"


class TestPending:
    def test_lists_pending_intents(self, engine: Engine) -> None:
        record(engine, "evt_1", Plan(intents=[spec("i1"), spec("i2")]))
        assert sorted(pending.pending_intents(engine, now=utcnow())) == ["i1", "i2"]


class TestStoredBody:
    def stored(self, body: bytes) -> str:
        return payloads.stored_body(body, json.loads(body))

    def test_a_body_without_secrets_is_kept_as_received(self) -> None:
        body = b'{"id": "evt_1", "data": {"object": {"client_secret": null, "note": "a token"}}}'
        assert self.stored(body) == body.decode()

    @pytest.mark.parametrize(
        "body",
        [
            b'{"data": {"object": {"client_secret": "cs_live_abc"}}}',
            b'{"data": {"object": {"client_secret" :\n "cs_live_abc"}}}',
            b'{"client_secret": null, "data": {"object": {"client_secret": "cs_live_abc"}}}',
            b'{"x": [{"token": 1}], "api_key": null}',
            b'{"data": {"object": {"client\\u005fsecret": "cs_live_abc"}}}',
            '{"secret": "x"}'.encode("utf-16"),
            # ASCII text in UTF-16/32 without a byte order mark is also UTF-8, with NULs.
            pytest.param('{"client_secret": "cs_live_abc"}'.encode("utf-16-le"), id="utf-16-le"),
            pytest.param('{"client_secret": "cs_live_abc"}'.encode("utf-32-be"), id="utf-32-be"),
        ],
    )
    def test_a_body_with_a_secret_is_stored_redacted(self, body: bytes) -> None:
        stored = self.stored(body)
        assert "cs_live_abc" not in stored
        assert stored == payloads.stored_payload(json.loads(body))
        assert payloads.REDACTED in stored
        assert "\x00" not in stored


class TestRecordMany:
    def test_is_the_same_as_one_after_the_other(self, engine: Engine) -> None:
        def delivery(event_id: str, *intent_ids: str) -> inbox.Delivery:
            return inbox.Delivery(
                "stripe",
                event_id,
                "invoice.paid",
                None,
                False,
                "{}",
                Plan([spec(i) for i in intent_ids]),
            )

        results = inbox.record_many(
            engine,
            [delivery("evt_1", "i1"), delivery("evt_1", "i1"), delivery("evt_2", "i1", "i2")],
        )
        assert [(r.duplicate, r.new_intents) for r in results] == [
            (False, ["i1"]),
            (True, []),
            (False, ["i2"]),
        ]
        with Session(engine) as s:
            assert len(s.exec(select(WebhookEvent)).all()) == 2
            assert {i.id: i.event_id for i in s.exec(select(Intent)).all()} == {
                "i1": results[0].event_id,
                "i2": results[2].event_id,
            }


class TestParking:
    def test_intents_behind_a_new_key_are_stored_waiting(self, engine: Engine) -> None:
        create = IntentSpec(
            id="stripe:pi:pi_1:create_key",
            effect=Effect.CREATE_KEY,
            license_ref="stripe:pi:pi_1",
            params={},
            occurred_at=1,
        )
        event = IntentSpec(
            id="stripe:pi:pi_1:event:purchase:cs_1",
            effect=Effect.REGISTER_EVENT,
            license_ref="stripe:pi:pi_1",
            params={},
            occurred_at=1,
        )
        recorded = record(engine, "evt_1", Plan(intents=[create, event]))
        assert recorded.new_intents == [create.id]
        assert recorded.parked == [event.id]
        with Session(engine) as s:
            stored = s.get(Intent, event.id)
        assert stored is not None and stored.status == "waiting"

    def test_intents_of_a_key_created_earlier_are_not_parked(self, engine: Engine) -> None:
        create = IntentSpec(
            id="stripe:sub:sub_1:create_key",
            effect=Effect.CREATE_KEY,
            license_ref="stripe:sub:sub_1",
            params={},
            occurred_at=1,
        )
        record(engine, "evt_1", Plan(intents=[create]))
        again = record(engine, "evt_2", Plan(intents=[create, spec("stripe:sub:sub_1:x")]))
        # The creating intent is not new here: it may be done, and nothing would wake these.
        assert again.new_intents == ["stripe:sub:sub_1:x"]
        assert again.parked == []


class TestStartHints:
    def create(self, template_id: int | None) -> IntentSpec:
        return IntentSpec(
            id="stripe:sub:sub_1:create_key",
            effect=Effect.CREATE_KEY,
            license_ref="stripe:sub:sub_1",
            params={"template_id": template_id, "template_rank": 1 if template_id else None},
            occurred_at=1,
        )

    def test_a_later_start_event_leaves_a_hint_and_ends_the_wait(self, engine: Engine) -> None:
        first = record(engine, "evt_1", Plan(intents=[self.create(None)]))
        assert first.new_intents == ["stripe:sub:sub_1:create_key"] and first.hinted == []
        with Session(engine) as s:  # the worker deferred it: waiting for the others
            row = s.get(Intent, "stripe:sub:sub_1:create_key")
            assert row is not None
            row.next_attempt_at = datetime.now(UTC) + timedelta(seconds=60)
            s.add(row)
            s.commit()
        second = record(engine, "evt_2", Plan(intents=[self.create(3)]))
        assert second.new_intents == [] and second.hinted == ["stripe:sub:sub_1:create_key"]
        with Session(engine) as s:
            row = s.get(Intent, "stripe:sub:sub_1:create_key")
            assert row is not None and row.next_attempt_at is None
            hints = s.exec(select(StartHint)).all()
        assert [json.loads(h.params)["template_id"] for h in hints] == [3]

    def test_a_redelivery_adds_no_hint(self, engine: Engine) -> None:
        record(engine, "evt_1", Plan(intents=[self.create(None)]))
        record(engine, "evt_2", Plan(intents=[self.create(3)]))
        again = record(engine, "evt_2", Plan(intents=[self.create(3)]))
        assert again.duplicate and again.hinted == []
        with Session(engine) as s:
            assert len(s.exec(select(StartHint)).all()) == 1


class TestWhatTheDatabaseCannotTake:
    """A NUL (PostgreSQL refuses one in text), a lone surrogate (no UTF-8 for it) or an
    id over its column: stored escaped and ignored, the same on both databases, so a
    verified sender is never answered a 5xx it would retry for ever."""

    @pytest.mark.parametrize(
        "external_id,event_type,stored_id,stored_type",
        [
            ("evt\x00_1", "invoice.paid", "evt\\u0000_1", "invoice.paid"),
            ("evt_1", "invoice.\x00paid", "evt_1", "invoice.\\u0000paid"),
            ("evt_\ud800", "invoice.paid", "evt_\\ud800", "invoice.paid"),
        ],
        ids=["nul id", "nul type", "lone surrogate"],
    )
    def test_stored_escaped_and_ignored(
        self,
        engine: Engine,
        external_id: str,
        event_type: str,
        stored_id: str,
        stored_type: str,
    ) -> None:
        def once() -> inbox.Recorded:
            return inbox.record(
                engine,
                provider="pipedrive",
                external_id=external_id,
                event_type=event_type,
                api_version=None,
                livemode=True,
                payload={"id": external_id},
                plan=Plan(intents=[spec("i1")]),
            )

        first, again = once(), once()
        assert (first.duplicate, first.new_intents, again.duplicate) == (False, [], True)
        with Session(engine) as s:
            event = s.exec(select(WebhookEvent)).one()
            assert s.exec(select(Intent)).all() == []
        assert (event.external_id, event.type, event.outcome) == (stored_id, stored_type, "ignored")
        assert "stored escaped" in (event.note or "")

    def test_an_id_over_its_column_is_stored_as_its_hash(self, engine: Engine) -> None:
        long_id = "evt_" + "x" * 300
        first = record(engine, long_id, Plan(intents=[spec("i1")]))
        again = record(engine, long_id, Plan(intents=[spec("i1")]))
        assert (first.duplicate, again.duplicate) == (False, True)
        with Session(engine) as s:
            event = s.exec(select(WebhookEvent)).one()
        assert event.external_id.startswith("sha256:") and len(event.external_id) == 71

    def test_a_note_with_a_nul_is_escaped(self, engine: Engine) -> None:
        record(engine, "evt_1", Plan(ignored="type deal\x00 is not a deal"))
        with Session(engine) as s:
            assert s.exec(select(WebhookEvent)).one().note == "type deal\\u0000 is not a deal"
