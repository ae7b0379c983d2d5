"""A lost CreateKeyFromTemplate reply, settled from the Web API Log on evidence.

Without ``[cryptolens] sole_key_maker`` an untagged key is the bridge's only if the log
shows it came from the bridge's IP (learnt from its earlier keys). Someone else creating
keys of the product in the same window calls the sandbox from another loopback address,
so the log's anonymized IPs differ: 127.0.1.0 against the bridge's 127.0.0.0.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from bridge.core.models import License, utcnow
from bridge.core.settings import Settings
from tests.fixtures.pipeline import make_settings
from tests.fixtures.runs import add_intent, attempts, finish, intent, later, runtime, step
from tests.fixtures.servers import SandboxServer

CONFIG = """
[stripe]
default_template_id = 1
"""


@pytest.fixture
def settings(
    database_url: str, redis_url: str, sandbox_server: SandboxServer, tmp_path: Path
) -> Settings:
    config = tmp_path / "bridge.toml"
    config.write_text(CONFIG)
    return make_settings(
        database_url=database_url,
        redis_url=redis_url,
        sandbox_url=sandbox_server.url,
        config_path=config,
    )


def purchase(engine: Engine, name: str) -> str:
    ref = f"stripe:pi:pi_{name}"
    now = int(utcnow().timestamp())
    return add_intent(engine, f"{ref}:create_key", "create_key", ref, {"template_id": 1}, now)


async def someone_else_creates_a_key(sandbox: SandboxServer) -> str:
    """A key of the product made by another client of the account, from 127.0.1.1."""
    transport = httpx.AsyncHTTPTransport(local_address="127.0.1.1")
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.post(
            sandbox.url + "key/CreateKeyFromTemplate",
            data={"token": sandbox.token, "LicenseTemplateId": "1"},
        )
    response.raise_for_status()
    return str(response.json()["key"])


def key_of(engine: Engine, intent_id: str) -> str | None:
    with Session(engine) as s:
        license_ = s.exec(select(License).where(col(License.created_by) == intent_id)).one()
        return license_.key


def held_keys(engine: Engine) -> set[str]:
    with Session(engine) as s:
        return {k for k in s.exec(select(License.key)).all() if k}


def notes(sandbox: SandboxServer, key: str) -> str:
    body = sandbox.call("key/GetKey", ProductId=1001, Key=key)
    return str(body["licenseKey"]["notes"] or "")


def keys_since(sandbox: SandboxServer, known: set[str]) -> list[str]:
    return [k["key"] for k in sandbox.state()["keys"] if k["key"] not in known]


class TestIpEvidence:
    async def test_a_foreign_key_in_the_window_of_an_unapplied_creation_is_not_claimed(
        self, settings: Settings, engine: Engine, sandbox_server: SandboxServer
    ) -> None:
        """Our call never landed (a 504 before the service saw it) while someone else
        made one key: the old read-back took that one new key for ours."""
        async with runtime(settings, engine) as rt:
            earlier = purchase(engine, "earlier")
            assert await finish(rt, earlier) == {earlier: "done"}  # the bridge's IP, known
            ours = purchase(engine, "ours")
            script = [{"method": "key/CreateKeyFromTemplate", "fault": "lost_request"}]
            sandbox_server.set_faults(script=script)
            assert await step(rt, ours) == "retry"
            foreign = await someone_else_creates_a_key(sandbox_server)
            rt.clock = later(60)  # our call can no longer land
            assert await finish(rt, ours) == {ours: "done"}

        key = key_of(engine, ours)
        assert key is not None and key != foreign
        assert foreign not in held_keys(engine)
        assert "[cryptolens-bridge" not in notes(sandbox_server, foreign)
        assert f"[cryptolens-bridge {ours}]" in notes(sandbox_server, key)
        assert sandbox_server.state()["counts"]["keys_created"] == 3
        assert attempts(engine, ours)[0] == ("key/CreateKeyFromTemplate", "not_applied")

    async def test_our_lost_key_is_told_from_a_foreign_one_by_its_ip(
        self, settings: Settings, engine: Engine, sandbox_server: SandboxServer
    ) -> None:
        """Our call landed and its reply was lost, and someone else made a key too: two
        untagged candidates, which the old read-back sent to a person."""
        async with runtime(settings, engine) as rt:
            earlier = purchase(engine, "earlier")
            assert await finish(rt, earlier) == {earlier: "done"}
            known = {k["key"] for k in sandbox_server.state()["keys"]}
            ours = purchase(engine, "ours")
            script = [{"method": "key/CreateKeyFromTemplate", "fault": "lost_reply"}]
            sandbox_server.set_faults(script=script)
            assert await step(rt, ours) == "retry"
            [lost] = keys_since(sandbox_server, known)
            foreign = await someone_else_creates_a_key(sandbox_server)
            assert await finish(rt, ours) == {ours: "done"}

        assert key_of(engine, ours) == lost
        assert foreign not in held_keys(engine)
        assert "[cryptolens-bridge" not in notes(sandbox_server, foreign)
        assert sandbox_server.state()["counts"]["keys_created"] == 3
        assert attempts(engine, ours) == [("key/CreateKeyFromTemplate", "applied")]

    async def test_without_evidence_a_lost_key_goes_to_a_person(
        self, settings: Settings, engine: Engine, sandbox_server: SandboxServer
    ) -> None:
        """No earlier key of the bridge in the product: nothing says whose the new key
        is. It is listed for a person; nothing is created again."""
        async with runtime(settings, engine) as rt:
            ours = purchase(engine, "ours")
            script = [{"method": "key/CreateKeyFromTemplate", "fault": "lost_reply"}]
            sandbox_server.set_faults(script=script)
            assert await step(rt, ours) == "retry"
            [lost] = keys_since(sandbox_server, set())
            await finish(rt, ours)  # the run parks its own intent, then stops

        row = intent(engine, ours)
        assert row.status == "needs_review"
        assert row.last_error is not None and lost in row.last_error
        assert held_keys(engine) == set()
        assert sandbox_server.state()["counts"]["keys_created"] == 1


class TestSoleKeyMaker:
    async def test_a_declared_sole_key_maker_recovers_the_one_new_key(
        self, settings: Settings, engine: Engine, sandbox_server: SandboxServer, tmp_path: Path
    ) -> None:
        config = tmp_path / "sole.toml"
        config.write_text(CONFIG + "\n[cryptolens]\nsole_key_maker = [1001]\n")
        sole = settings.model_copy(update={"config_path": config})
        async with runtime(sole, engine) as rt:
            ours = purchase(engine, "ours")
            script = [{"method": "key/CreateKeyFromTemplate", "fault": "lost_reply"}]
            sandbox_server.set_faults(script=script)
            assert await step(rt, ours) == "retry"
            [lost] = keys_since(sandbox_server, set())
            assert await finish(rt, ours) == {ours: "done"}

        assert key_of(engine, ours) == lost
        assert f"[cryptolens-bridge {ours}]" in notes(sandbox_server, lost)
        assert sandbox_server.state()["counts"]["keys_created"] == 1
