"""``forget EMAIL``: one buyer erased from every stored text, on SQLite and PostgreSQL,
with the files read back; every other buyer and every effect unchanged."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlmodel import Session, select

from bridge.cli import main
from bridge.core.personal import Address, InvalidAddress, erased_json
from bridge.ops.forget import forget, report
from bridge.store.db import session
from bridge.store.tables import Attempt, Intent, Lock, LoggedDelivery, WebhookEvent, utcnow
from tests.fixtures import stripe_builders as sb
from tests.fixtures.pipeline import Pipeline

ADA = "Ada.Lovelace@Example.com"
ZOE = "zo\u00eb@example.com"  # stored unicode-escaped in a re-encoded body
GRACE = "grace.hopper@example.com"


def purchase(n: int, email: str, name: str) -> dict[str, Any]:
    event = sb.checkout_session(payment_intent=f"pi_forget_{n}", amount_total=1000 + n)
    event["id"] = f"evt_forget_{n}"
    session_ = sb.obj(event)
    session_["id"] = f"cs_forget_{n}"
    session_["customer_details"].update(
        email=email,
        name=name,
        phone="+44 20 7946 0000",
        address={"line1": f"{n} Analytical Street", "city": "London", "country": "GB"},
    )
    session_["metadata"] = {"note": f"ordered by {email}"}
    return event


def needles(*emails: str) -> list[bytes]:
    """The lower-case byte forms an address may take in a file: as text, JSON-escaped."""
    forms: set[bytes] = set()
    for email in emails:
        folded = email.lower()
        forms |= {folded.encode(), json.dumps(folded).strip('"').encode()}
    return sorted(forms)


def snapshot(engine: Engine) -> dict[str, Any]:
    with Session(engine) as s:
        return {
            "events": {
                e.external_id: (e.provider, e.type, e.received_at, e.payload)
                for e in s.exec(select(WebhookEvent)).all()
            },
            "intents": {
                i.id: (i.status, i.result, i.attempts, i.params)
                for i in s.exec(select(Intent)).all()
            },
        }


def sqlite_path(database_url: str) -> Path | None:
    url = make_url(database_url)
    return Path(url.database) if url.get_backend_name() == "sqlite" and url.database else None


def occurrences(engine: Engine, forms: list[str]) -> dict[str, int]:
    """Every text, varchar and json column of every table, searched in lower case."""
    found: dict[str, int] = {}
    with engine.connect() as c:
        if engine.dialect.name == "sqlite":
            tables = [
                r[0] for r in c.execute(text("SELECT name FROM sqlite_master WHERE type='table'"))
            ]
            columns = [
                (t, r[1]) for t in tables for r in c.execute(text(f"PRAGMA table_info('{t}')"))
            ]
        else:
            columns = [
                (r[0], r[1])
                for r in c.execute(
                    text(
                        "SELECT table_name, column_name FROM information_schema.columns"
                        " WHERE table_schema = 'public' AND data_type IN"
                        " ('text', 'character varying', 'json', 'jsonb')"
                    )
                )
            ]
        for table, column in columns:
            for form in forms:
                n = c.execute(
                    text(
                        f'SELECT count(*) FROM "{table}"'
                        f' WHERE lower(CAST("{column}" AS TEXT)) LIKE :f'
                    ),
                    {"f": f"%{form}%"},
                ).scalar_one()
                if n:
                    found[f"{table}.{column}:{form}"] = n
    return found


async def seeded(bridge: Pipeline) -> None:
    """Ada bought twice, Zoë and Grace once; then older rows a former release left."""
    for n, (email, name) in enumerate(
        [
            (ADA, "Ada Lovelace"),
            (GRACE, "Grace Hopper"),
            (ADA.upper(), "Ada Lovelace"),
            (ZOE, "Zo\u00eb Quux"),
        ]
    ):
        response = await bridge.post(purchase(n, email, name))
        assert response.status_code == 200, response.text
    await bridge.drain()
    bridge.assert_all_done()
    with session(bridge.engine) as s:
        ada_intent = next(i for i in s.exec(select(Intent)).all() if "forget_0" in i.id)
        s.add(
            Attempt(
                intent_id=ada_intent.id,
                method="customer/AddCustomer",
                detail=json.dumps({"email": ADA, "name": "Ada Lovelace", "company": "Engines Ltd"}),
                outcome="applied",
            )
        )
        s.add(
            LoggedDelivery(
                provider="stripe",
                outcome="refused",
                cause="bad_payload",
                detail=f"no such buyer {ADA}",
            )
        )
        s.add(
            Lock(
                name=f"customer:{ADA.lower()}", owner="gone:1", until=utcnow() - timedelta(hours=1)
            )
        )


@pytest.fixture
async def forgotten(bridge: Pipeline, database_url: str) -> dict[str, Any]:
    await seeded(bridge)
    before = snapshot(bridge.engine)
    counts = bridge.counts()
    result = forget(database_url, "ADA.lovelace@example.COM")
    return {"before": before, "counts": counts, "result": result}


class TestForget:
    async def test_the_address_and_names_are_nowhere_in_the_database(
        self, bridge: Pipeline, database_url: str, forgotten: dict[str, Any]
    ) -> None:
        forms = [
            "ada.lovelace@example.com",
            "ada lovelace",
            "engines ltd",
            "0 analytical",
            "2 analytical",
        ]
        assert occurrences(bridge.engine, forms) == {}
        path = sqlite_path(database_url)
        if path is not None:
            files = [p for p in (path, Path(f"{path}-wal")) if p.exists()]
            for file in files:
                data = file.read_bytes().lower()
                for needle in [*needles(ADA), b"ada lovelace", b"engines ltd"]:
                    assert needle not in data, (file, needle)
            assert forgotten["result"].files_clean is True
        assert forgotten["result"].rows["webhook_event.payload"] == 2

    async def test_other_buyers_and_every_effect_are_unchanged(
        self, bridge: Pipeline, forgotten: dict[str, Any]
    ) -> None:
        before, after = forgotten["before"], snapshot(bridge.engine)
        assert after["events"]["evt_forget_1"] == before["events"]["evt_forget_1"]  # Grace
        assert after["events"]["evt_forget_3"] == before["events"]["evt_forget_3"]  # Zoë
        for intent_id, (status, result, attempts, params) in before["intents"].items():
            assert after["intents"][intent_id][:3] == (status, result, attempts)
            if "forget_0" not in intent_id and "forget_2" not in intent_id:
                assert after["intents"][intent_id][3] == params
        assert bridge.counts() == forgotten["counts"]
        ada = json.loads(after["events"]["evt_forget_0"][3])
        assert sb.obj(ada)["customer_details"] is None  # email, name, address, phone
        assert sb.obj(ada)["metadata"]["note"] == "ordered by [erased]"
        assert sb.obj(ada)["payment_intent"] == "pi_forget_0"  # ids stay

    async def test_a_redelivery_of_an_erased_event_is_still_a_duplicate(
        self, bridge: Pipeline, forgotten: dict[str, Any]
    ) -> None:
        again = await bridge.post(purchase(0, ADA, "Ada Lovelace"))
        assert again.json() == {"received": True, "duplicate": True, "intents": 0}
        await bridge.drain()
        counts = bridge.counts()
        assert {k: v for k, v in counts.items() if k != "calls_received"} == {
            k: v for k, v in forgotten["counts"].items() if k != "calls_received"
        }
        assert occurrences(bridge.engine, ["ada.lovelace@example.com"]) == {}

    async def test_an_escaped_address_in_a_body_is_found_whatever_its_case(
        self, bridge: Pipeline, database_url: str
    ) -> None:
        await seeded(bridge)
        with Session(bridge.engine) as s:
            stored = s.exec(
                select(WebhookEvent).where(WebhookEvent.external_id == "evt_forget_3")
            ).one()
        assert "zo\\u00eb@example.com" in stored.payload  # re-encoded with escapes
        result = forget(database_url, "ZO\u00cb@EXAMPLE.COM")
        assert result.rows["webhook_event.payload"] == 1
        assert "intent.params" in result.rows
        assert (
            occurrences(bridge.engine, ["zo\\u00eb@example.com", "zo\u00eb@example.com", "quux"])
            == {}
        )
        path = sqlite_path(database_url)
        if path is not None:
            for file in (path, Path(f"{path}-wal")):
                if file.exists():
                    data = file.read_bytes().lower()
                    for needle in [*needles(ZOE), "zo\u00eb quux".encode(), b"zo\\u00eb quux"]:
                        assert needle not in data, (file, needle)

    async def test_a_dry_run_changes_nothing_and_says_what_it_would(
        self, bridge: Pipeline, database_url: str
    ) -> None:
        await seeded(bridge)
        before = snapshot(bridge.engine)
        result = forget(database_url, ADA, dry_run=True)
        assert snapshot(bridge.engine) == before
        assert result.rows["webhook_event.payload"] == 2
        assert result.leases == 1
        lines = report(result)
        assert any(
            line.startswith("would change 2 row(s) of webhook_event.payload") for line in lines
        )
        assert any("stripe:evt_forget_0" in line for line in lines)
        assert occurrences(bridge.engine, ["ada.lovelace@example.com"]) != {}

    async def test_postgres_data_files_hold_no_copy(
        self, bridge: Pipeline, database_url: str, forgotten: dict[str, Any]
    ) -> None:
        if bridge.engine.dialect.name != "postgresql":
            pytest.skip("SQLite's files are read in the test above")
        with bridge.engine.connect() as c:
            c.execute(text("CHECKPOINT"))  # the vacuumed pages onto disk (a superuser's right)
            root = Path(c.execute(text("SHOW data_directory")).scalar_one())
            files = [
                root / r[0]
                for r in c.execute(
                    text(
                        "SELECT pg_relation_filepath(oid) FROM pg_class WHERE relkind IN ('r', 't')"
                        " AND pg_relation_filepath(oid) IS NOT NULL AND relnamespace IN"
                        " (SELECT oid FROM pg_namespace WHERE nspname IN ('public', 'pg_toast'))"
                    )
                )
            ]
        try:
            readable = [f for f in files if f.exists() and f.read_bytes() is not None]
        except PermissionError:
            pytest.skip(f"PostgreSQL's data directory {root} is not readable here")
        assert readable
        for file in readable:
            data = file.read_bytes().lower()
            for needle in [*needles(ADA), b"ada lovelace"]:
                assert needle not in data, (file, needle)


class TestCommand:
    async def test_the_cli_prints_what_it_changed(
        self, bridge: Pipeline, database_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        await seeded(bridge)
        monkeypatch.setenv("BRIDGE_DATABASE_URL", database_url)
        runner = CliRunner()
        dry = runner.invoke(main, ["forget", ADA, "--dry-run"])
        assert dry.exit_code == 0, dry.output
        assert "would change 2 row(s) of webhook_event.payload" in dry.output
        done = runner.invoke(main, ["forget", ADA])
        assert done.exit_code == 0, done.output
        assert "changed 2 row(s) of webhook_event.payload" in done.output
        assert "Cryptolens, Stripe and the CRMs were not changed" in done.output
        again = runner.invoke(main, ["forget", ADA])
        assert "nothing to change" in again.output

    def test_a_bad_address_is_a_clear_error(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        monkeypatch.setenv("BRIDGE_DATABASE_URL", f"sqlite:///{tmp_path / 'none.db'}")
        result = CliRunner().invoke(main, ["forget", "not-an-address"])
        assert result.exit_code == 1
        assert "not an email address" in result.output
        assert not (tmp_path / "none.db").exists()


class TestPersonal:
    def test_bad_addresses_are_refused(self) -> None:
        for bad in ("", "ada", "ada@", "@example.com", "a b@example.com", "ada@localhost"):
            with pytest.raises(InvalidAddress):
                Address(bad)

    def test_a_pipedrive_person_loses_its_name_with_its_email(self) -> None:
        person = {
            "id": 7,
            "name": "Ada",
            "emails": [{"value": ADA, "primary": True}],
            "org_name": "X",
        }
        erased = json.loads(erased_json(json.dumps({"person": person}), Address(ADA)) or "")
        assert erased == {"person": {"id": 7, "name": None, "emails": None, "org_name": None}}

    def test_a_product_name_stays_and_other_text_is_untouched(self) -> None:
        body = {"product": {"name": "Pro plan"}, "customer_email": ADA.upper(), "note": "none"}
        erased = json.loads(erased_json(json.dumps(body), Address(ADA), body=True) or "")
        assert erased == {"product": {"name": "Pro plan"}, "customer_email": None, "note": "none"}
        assert erased_json(json.dumps({"email": GRACE}), Address(ADA)) is None

    def test_an_address_inside_json_in_a_string_is_found(self) -> None:
        inner = json.dumps({"email": "ada.lovelace\u0040example.com"}).replace("@", "\\u0040")
        erased = erased_json(json.dumps({"metadata": {"raw": inner}}), Address(ADA))
        assert erased is not None and "lovelace" not in erased.lower()


def test_forget_is_a_command_of_the_cli() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert "forget" in result.output
