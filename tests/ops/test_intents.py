"""Replaying failed and needs-review intents."""

from __future__ import annotations

import asyncio
import json

import click
import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine
from sqlmodel import Session

from bridge import cli
from bridge.core.intents import Effect, IntentSpec, Plan, Status
from bridge.ops import intents as ops
from bridge.ops.errors import NotReplayable, OpsError, UnknownRecord
from bridge.store import inbox
from bridge.store.tables import Intent
from tests.fixtures import stripe_builders as sb
from tests.fixtures.admin import drain_once
from tests.fixtures.pipeline import Pipeline


def _status(engine: Engine, intent_id: str) -> str:
    with Session(engine) as s:
        intent = s.get(Intent, intent_id)
        assert intent is not None
        return intent.status


class TestReplay:
    async def test_failed_intent_runs_again_after_replay(self, bridge: Pipeline) -> None:
        # A template that does not exist fails for good with Cryptolens' own message.
        await bridge.post(sb.checkout_session(metadata={"cryptolens_template_id": "99"}))
        await bridge.drain()
        create = f"stripe:pi:{sb.ONE_OFF_PI}:create_key"
        failed = bridge.intents()[create]
        assert failed.status == Status.FAILED.value
        assert "Could not find the license template." in (failed.last_error or "")

        ops.replay(bridge.engine, create)
        assert _status(bridge.engine, create) == Status.PENDING.value

    async def test_done_intent_is_not_replayed(self, bridge: Pipeline) -> None:
        await bridge.post(sb.checkout_session())
        await bridge.drain()
        with pytest.raises(NotReplayable, match="only failed or needs_review"):
            ops.replay(bridge.engine, f"stripe:pi:{sb.ONE_OFF_PI}:create_key")


class TestReplayFromTemplate:
    """CreateKeyFromTemplate mode, where a lost reply's key cannot be told apart."""

    @pytest.fixture
    def bridge_config(self) -> str:
        return "[stripe]\ndefault_template_id = 1\n\n[cryptolens]\ncreate_from_template = [1001]\n"

    async def test_needs_review_key_creation_takes_the_operators_key(
        self, bridge: Pipeline
    ) -> None:
        # Two keys made by someone else around the time our reply is lost: the read-back
        # finds three untagged keys and cannot tell which is ours.
        for _ in range(2):
            bridge.sandbox.call("key/CreateKeyFromTemplate", LicenseTemplateId=1)
        bridge.sandbox.set_faults(
            script=[{"method": "key/CreateKeyFromTemplate", "fault": "lost_reply"}]
        )
        await bridge.post(sb.checkout_session())
        await bridge.drain()
        create = f"stripe:pi:{sb.ONE_OFF_PI}:create_key"
        assert _status(bridge.engine, create) == Status.NEEDS_REVIEW.value
        keys = [k["key"] for k in bridge.sandbox.state()["keys"]]

        with pytest.raises(NotReplayable, match="--key"):
            ops.replay(bridge.engine, create)
        ops.replay(bridge.engine, create, key=keys[0])
        await bridge.drain()
        await bridge.drain()  # the relay at start-up picks the pending intent
        assert _status(bridge.engine, create) == Status.DONE.value
        assert bridge.counts()["keys_created"] == 3  # ours and the two strangers, no more

    async def test_replay_refuses_a_key_another_license_holds(self, bridge: Pipeline) -> None:
        first = sb.checkout_session(payment_intent="pi_first")
        first["id"] = "evt_first"
        sb.obj(first)["id"] = "cs_first"
        await bridge.post(first)
        await bridge.drain()
        [held] = [k["key"] for k in bridge.sandbox.state()["keys"]]
        bridge.sandbox.call("key/CreateKeyFromTemplate", LicenseTemplateId=1)  # someone's
        lost = [{"method": "key/CreateKeyFromTemplate", "fault": "lost_reply"}]
        bridge.sandbox.set_faults(script=lost)
        await bridge.post(sb.checkout_session())
        await bridge.drain()
        create = f"stripe:pi:{sb.ONE_OFF_PI}:create_key"
        assert _status(bridge.engine, create) == Status.NEEDS_REVIEW.value
        with pytest.raises(NotReplayable, match="one key is never two licenses"):
            ops.replay(bridge.engine, create, key=held)
        assert _status(bridge.engine, create) == Status.NEEDS_REVIEW.value


class TestErrors:
    """Operations raise the project's errors; the command line shows them as click's."""

    def test_unknown_and_unreplayable_are_ops_errors(self, engine: Engine) -> None:
        with pytest.raises(UnknownRecord, match="no intent nope"):
            ops.replay(engine, "nope")
        assert issubclass(UnknownRecord, OpsError) and issubclass(NotReplayable, OpsError)

    def test_the_cli_prints_them_escaped_with_status_1(self, database_url: str) -> None:
        env = {"BRIDGE_DATABASE_URL": database_url}
        for args in (["intents", "show", "no\x1b[2J"], ["events", "show", "no\x1b[2J"]):
            shown = CliRunner().invoke(cli.main, args, env=env)
            assert shown.exit_code == 1, shown.output
            assert shown.output.startswith("Error: no ") and "no\\x1b[2J" in shown.output
            assert "\x1b" not in shown.output
        replayed = CliRunner().invoke(cli.main, ["replay", "nope"], env=env)
        assert replayed.exit_code == 1
        assert replayed.output == "Error: no intent or event nope\n"


def test_intents_command_lists(database_url: str, engine: Engine) -> None:
    result = CliRunner().invoke(
        ops.intents_command, ["--status", "failed"], env={"BRIDGE_DATABASE_URL": database_url}
    )
    assert result.exit_code == 0, result.output
    assert result.output == ""


def _env(bridge: Pipeline) -> dict[str, str]:
    return {
        "BRIDGE_DATABASE_URL": bridge.settings.database_url,
        "BRIDGE_REDIS_URL": bridge.settings.redis_url,
        "CRYPTOLENS_API_URL": bridge.settings.cryptolens_api_url,
        "CRYPTOLENS_TOKEN": bridge.settings.token(),
        "BRIDGE_CONFIG": str(bridge.settings.config_path),
    }


async def _cli(bridge: Pipeline, command: click.Command, *args: str) -> Result:
    # Commands run their own event loop: in a thread, beside the test's.
    result = await asyncio.to_thread(CliRunner().invoke, command, list(args), env=_env(bridge))
    assert result.exit_code == 0, (result.output, result.exception)
    return result


class TestPlan:
    async def test_plan_prints_the_calls_and_changes_nothing(self, bridge: Pipeline) -> None:
        await bridge.post(sb.checkout_session(payment_intent="pi_11111"))
        await bridge.post(sb.charge_refunded())
        bridge.sandbox.set_faults(script=[{"method": "key/BlockKey", "fault": "fail_before"}])
        await drain_once(bridge)
        block = next(i for i in bridge.intents().values() if i.effect == "block")
        assert block.status == Status.FAILED.value
        key = bridge.only_key()
        assert key["block"] is False

        def effects() -> dict[str, int]:  # what changed, not the reads the plan made
            return {k: v for k, v in bridge.counts().items() if not k.startswith("calls_")}

        before = effects()

        result = await _cli(bridge, ops.replay_command, block.id, "--plan")
        assert "now blocked: False" in result.output
        assert f"would call key/BlockKey(ProductId=1001, Key='{key['key']}')" in result.output
        assert bridge.settings.token() not in result.output
        data = json.loads(
            (await _cli(bridge, ops.replay_command, block.id, "--dry-run", "--json")).output
        )
        assert [c["method"] for c in data["calls"]] == ["key/BlockKey"]
        assert effects() == before
        assert _status(bridge.engine, block.id) == Status.FAILED.value

    async def test_plan_follows_the_workers_block_rule(self, bridge: Pipeline) -> None:
        """The dry run decides with the worker's rule (``bridge.core.blocks``): a block
        whose dispute was won since would send nothing."""
        await bridge.post(sb.checkout_session(payment_intent="pi_disputed"))
        await bridge.post(sb.dispute(payment_intent="pi_disputed"))
        await bridge.drain()
        await bridge.post(sb.dispute_closed("won", payment_intent="pi_disputed"))
        await bridge.drain()
        bridge.assert_all_done()
        assert bridge.only_key()["block"] is False
        block = next(i for i in bridge.intents().values() if i.effect == "block")
        data = json.loads(
            (await _cli(bridge, ops.replay_command, block.id, "--dry-run", "--json")).output
        )
        assert data["calls"] == []
        assert any("lifted" in note for note in data["notes"])

    async def test_replay_an_event_replays_its_failed_intents(self, bridge: Pipeline) -> None:
        event = sb.checkout_session(metadata={"cryptolens_template_id": "99"})
        await bridge.post(event)
        await bridge.drain()
        result = await _cli(bridge, ops.replay_command, event["id"])
        create = f"stripe:pi:{sb.ONE_OFF_PI}:create_key"
        assert f"pending again: {create}" in result.output
        assert _status(bridge.engine, create) == Status.PENDING.value


class TestListings:
    async def test_events_and_intents_with_filters_and_show(self, bridge: Pipeline) -> None:
        event = sb.checkout_session()
        await bridge.post(event)
        await bridge.drain()
        create = f"stripe:pi:{sb.ONE_OFF_PI}:create_key"

        listed = await _cli(bridge, ops.events_command, "--provider", "stripe", "--json")
        [row] = [json.loads(line) for line in listed.output.splitlines()]
        assert (row["external_id"], row["outcome"]) == (event["id"], "planned")
        assert (await _cli(bridge, ops.events_command, "--type", "invoice.paid")).output == ""
        later = await _cli(bridge, ops.events_command, "--since", "2999-01-01")
        assert later.output == ""

        shown = await _cli(bridge, ops.events_command, "show", event["id"], "--json")
        data = json.loads(shown.output)
        assert create in [i["id"] for i in data["intents"]]

        effects = await _cli(bridge, ops.intents_command, "--effect", "create_key", "--json")
        assert [json.loads(line)["id"] for line in effects.output.splitlines()] == [create]
        one = json.loads((await _cli(bridge, ops.intents_command, "show", create, "--json")).output)
        assert one["status"] == "done"
        assert [c["method"] for c in one["calls"]] == ["key/CreateKey"]


class TestWhatTheTerminalIsShown:
    """Ids, types and notes come from senders: printed raw, an escape sequence from one
    would rewrite the operator's screen (here: clear it, retitle it, return the cursor
    over the line, reverse the text)."""

    EVIL = "evt_\x1b[2J\x1b]0;pwned\x07\rfake\u202e\nsecond line"

    def invoke(self, database_url: str, command: click.Command, *args: str) -> str:
        result = CliRunner().invoke(command, list(args), env={"BRIDGE_DATABASE_URL": database_url})
        assert result.exit_code == 0, result.output
        return result.output

    def test_listings_and_shows_escape_control_characters(
        self, database_url: str, engine: Engine
    ) -> None:
        spec = IntentSpec(
            id=f"{self.EVIL}:extend",
            effect=Effect.EXTEND,
            license_ref="crm:zoho:deal:1",
            params={"expires_at": 100},
            occurred_at=1,
        )
        inbox.record(
            engine,
            provider="crm:zoho",
            external_id=self.EVIL,
            event_type="deal.won\x1b[31m",
            api_version=None,
            livemode=True,
            payload={"id": self.EVIL},
            plan=Plan(intents=[spec]),
        )
        outputs = [
            self.invoke(database_url, ops.events_command),
            self.invoke(database_url, ops.events_command, "show", self.EVIL),
            self.invoke(database_url, ops.intents_command),
            self.invoke(database_url, ops.intents_command, "show", spec.id),
        ]
        for output in outputs:
            assert not any(c in output for c in "\x1b\x07\r\u202e"), output
            assert "evt_\\x1b[2J\\x1b]0;pwned\\x07\\x0dfake\\u202e\\x0asecond line" in output
        assert "deal.won\\x1b[31m" in outputs[0]
