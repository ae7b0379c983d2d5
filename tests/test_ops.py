"""Replaying failed and needs-review intents."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner
from sqlalchemy import Engine
from sqlmodel import Session

from bridge.core.intents import Status
from bridge.core.models import Intent
from bridge.tools import ops
from tests.fixtures import stripe_builders as sb
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
        with pytest.raises(click.ClickException, match="only failed or needs_review"):
            ops.replay(bridge.engine, f"stripe:pi:{sb.ONE_OFF_PI}:create_key")

    async def test_needs_review_key_creation_takes_the_operators_key(
        self, bridge: Pipeline
    ) -> None:
        # Two keys made by someone else around the time our reply is lost: the read-back
        # finds three unclaimed keys and cannot tell which is ours.
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

        with pytest.raises(click.ClickException, match="--key"):
            ops.replay(bridge.engine, create)
        ops.replay(bridge.engine, create, key=keys[0])
        await bridge.drain()
        await bridge.drain()  # the relay at start-up picks the pending intent
        assert _status(bridge.engine, create) == Status.DONE.value
        assert bridge.counts()["keys_created"] == 3  # ours and the two strangers, no more


def test_intents_command_lists(database_url: str, engine: Engine) -> None:
    result = CliRunner().invoke(
        ops.intents_command, ["--status", "failed"], env={"BRIDGE_DATABASE_URL": database_url}
    )
    assert result.exit_code == 0, result.output
    assert result.output == ""
