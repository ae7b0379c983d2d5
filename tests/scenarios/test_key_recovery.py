"""A lost key creation, settled by what the bridge wrote into its key, never by guess.

Another client of the vendor creates keys of the same product from the same network
(``POST /sandbox/keys``: the Web API Log shows the same anonymized IP as the bridge's).
CreateKey mode (the default) finds its key by the tag in its notes; CreateKeyFromTemplate
mode (``[cryptolens] create_from_template``) settles a lost reply only where the bridge is
the product's sole key maker, and otherwise lists the candidates for a person.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from bridge.core.intents import TAG_PREFIX, notes_tag
from bridge.core.settings import Settings
from bridge.sandbox.app import create_app
from bridge.sandbox.config import DEFAULT_TOKEN, Product, SandboxConfig, Template, TemplateObject
from bridge.store import errors, licenses
from bridge.store.tables import Attempt, Intent, License, utcnow
from tests.fixtures.pipeline import make_settings
from tests.fixtures.runs import add_intent, attempts, finish, intent, later, runtime, step
from tests.fixtures.servers import SandboxServer, run_asgi

CONFIG = """
[stripe]
default_template_id = 1
"""
FROM_TEMPLATE = CONFIG + "\n[cryptolens]\ncreate_from_template = [1001]\n"
SOLE = FROM_TEMPLATE + "sole_key_maker = [1001]\n"
BUYER = {"email": "ann@example.com", "name": "Ann", "company": "Acme"}


def configured(settings: Settings, tmp_path: Path, text: str) -> Settings:
    config = tmp_path / "mode.toml"
    config.write_text(text)
    return settings.model_copy(update={"config_path": config})


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


def purchase(engine: Engine, name: str, template: int = 1, **params: object) -> str:
    ref = f"stripe:pi:pi_{name}"
    now = int(utcnow().timestamp())
    return add_intent(
        engine, f"{ref}:create_key", "create_key", ref, {"template_id": template, **params}, now
    )


def someone_else_creates_a_key(sandbox: SandboxServer, template: int = 1) -> str:
    """A key of the product made by another client of the vendor, from our network."""
    response = httpx.post(f"{sandbox.root}/sandbox/keys", json={"template_id": template})
    response.raise_for_status()
    return str(response.json()["key"])


def key_of(engine: Engine, intent_id: str) -> str | None:
    with Session(engine) as s:
        license_ = s.exec(select(License).where(col(License.created_by) == intent_id)).one()
        return license_.key


def held_keys(engine: Engine) -> set[str]:
    with Session(engine) as s:
        return {k for k in s.exec(select(License.key)).all() if k}


def key_json(sandbox: SandboxServer, key: str, product: int = 1001) -> dict[str, object]:
    body: dict[str, object] = sandbox.call("key/GetKey", ProductId=product, Key=key)["licenseKey"]
    return body


def notes(sandbox: SandboxServer, key: str) -> str:
    return str(key_json(sandbox, key)["notes"] or "")


def keys_since(sandbox: SandboxServer, known: set[str]) -> list[str]:
    return [k["key"] for k in sandbox.state()["keys"] if k["key"] not in known]


def lose(sandbox: SandboxServer, method: str, fault: str = "lost_reply") -> None:
    sandbox.set_faults(script=[{"method": method, "fault": fault}])


class TestTag:
    def test_no_tag_occurs_inside_another(self) -> None:
        ids = [f"stripe:pi:pi_{i}:create_key" for i in range(300)] + ["a", "aa", "[x] y"]
        tags = [notes_tag(i) for i in ids]
        assert len(set(tags)) == len(tags)
        assert all(t.startswith(TAG_PREFIX) and len(t) == len(tags[0]) for t in tags)
        assert all(c.isalnum() or c == "-" for t in tags for c in t)  # nothing to escape
        assert not any(a.lower() in b.lower() for a in tags for b in tags if a != b)


class TestCreateKeyMode:
    async def test_a_creation_lost_before_cryptolens_is_made_again_not_taken_from_another(
        self, settings: Settings, engine: Engine, sandbox_server: SandboxServer
    ) -> None:
        """A 504 before the service saw our call; the vendor's back office makes a key of
        the same template from the same network in the window. It is never ours."""
        async with runtime(settings, engine) as rt:
            earlier = purchase(engine, "earlier")
            assert await finish(rt, earlier) == {earlier: "done"}
            ours = purchase(engine, "ours", customer=BUYER)
            lose(sandbox_server, "key/CreateKey", "lost_request")
            assert await step(rt, ours) == "retry"
            foreign = someone_else_creates_a_key(sandbox_server)
            assert await step(rt, ours) == "retry"  # our call may still land: wait
            rt.clock = later(60)
            assert await finish(rt, ours) == {ours: "done"}

        key = key_of(engine, ours)
        assert key is not None and key != foreign
        assert foreign not in held_keys(engine)
        assert notes(sandbox_server, foreign) == ""
        assert key_json(sandbox_server, foreign)["customer"] is None
        assert notes_tag(ours) in notes(sandbox_server, key)
        assert attempts(engine, ours) == [
            ("key/CreateKey", "not_applied"),
            ("key/CreateKey", "applied"),
        ]

    async def test_a_lost_reply_is_found_by_its_tag_with_its_customer(
        self, settings: Settings, engine: Engine, sandbox_server: SandboxServer
    ) -> None:
        """Our call landed and its reply was lost; a foreign key was made beside it. The
        read-back finds ours by its tag at once (found is final; only absence waits for
        the window), with the buyer inside it, and links nothing."""
        async with runtime(settings, engine) as rt:
            ours = purchase(engine, "ours", customer=BUYER)
            lose(sandbox_server, "key/CreateKey")
            assert await step(rt, ours) == "retry"
            [lost] = keys_since(sandbox_server, set())
            foreign = someone_else_creates_a_key(sandbox_server)
            assert await finish(rt, ours) == {ours: "done"}
            assert sandbox_server.state()["counts"]["keys_created"] == 2

        assert key_of(engine, ours) == lost
        assert foreign not in held_keys(engine)
        customer = key_json(sandbox_server, lost)["customer"]
        assert isinstance(customer, dict) and customer["email"] == BUYER["email"]
        assert intent(engine, ours).status == "done"
        assert attempts(engine, ours) == [("key/CreateKey", "applied")]
        calls = sandbox_server.state()["calls"]
        assert "key/ChangeCustomer" not in calls and "key/ChangeNotes" not in calls
        with Session(engine) as s:
            license_ = s.exec(select(License).where(col(License.key) == lost)).one()
            assert license_.customer_id == customer["id"]

    async def test_one_purchase_is_one_call(
        self, settings: Settings, engine: Engine, sandbox_server: SandboxServer
    ) -> None:
        async with runtime(settings, engine) as rt:
            ours = purchase(engine, "ours", customer=BUYER)
            assert await finish(rt, ours) == {ours: "done"}
        calls = sandbox_server.state()["calls"]
        calls.pop("licensetemplate/GetLicenseTemplates")  # once per process (cached)
        assert {m: c["received"] for m, c in calls.items()} == {"key/CreateKey": 1}

    async def test_a_hint_that_moves_to_another_product_still_settles_the_lost_creation(
        self, settings: Settings, engine: Engine
    ) -> None:
        """Item 4: the creation's reply is lost in product 1001; a later start event names
        a template of product 2002. The lost key is read back in its own product and is
        the license's; nothing is created in 2002 (the old per-product gate never looked
        at 1001 again, and made a second key)."""
        config = SandboxConfig(
            products=(Product(1001, "A"), Product(2002, "B")),
            templates=(
                Template(1, "Monthly", 1001, 30, (True,) + (False,) * 7),
                Template(7, "Other", 2002, 365, (True,) + (False,) * 7),
            ),
        )
        with run_asgi(create_app(config)) as root:
            sandbox = SandboxServer(root, DEFAULT_TOKEN)
            moved = settings.model_copy(update={"cryptolens_api_url": sandbox.url})
            async with runtime(moved, engine) as rt:
                ours = purchase(engine, "ours")
                lose(sandbox, "key/CreateKey")
                assert await step(rt, ours) == "retry"
                [lost] = keys_since(sandbox, set())
                with Session(engine) as s:
                    row = s.get(Intent, ours)
                    assert row is not None
                    row.params = row.params.replace('"template_id": 1', '"template_id": 7')
                    s.add(row)
                    s.commit()
                rt.clock = later(60)
                assert await finish(rt, ours) == {ours: "done"}
            assert [k["key"] for k in sandbox.state()["keys"]] == [lost]
        assert key_of(engine, ours) == lost
        with Session(engine) as s:
            license_ = s.exec(select(License).where(col(License.key) == lost)).one()
            assert license_.product_id == 1001

    async def test_a_stream_of_one_template_does_not_hold_back_another(
        self, settings: Settings, engine: Engine, sandbox_server: SandboxServer
    ) -> None:
        """Item 4: a creation of template 1 is in flight (its run alive); one of template
        2 is sent at once. Under the old gate it waited for the product to drain."""
        async with runtime(settings, engine) as rt:
            busy = purchase(engine, "busy")
            with Session(engine) as s:
                row = s.get(Intent, busy)
                assert row is not None
                row.status, row.lease_owner = "running", "other-worker"
                row.lease_until = utcnow().replace(year=utcnow().year + 1)
                s.add(row)
                s.add(
                    Attempt(
                        intent_id=busy,
                        method="key/CreateKeyFromTemplate",
                        scope="create:1001",
                        detail='{"template_id": 1, "run": "other-worker"}',
                    )
                )
                s.commit()
            other = purchase(engine, "other", template=2)
            assert await step(rt, other) == "done"
        assert key_of(engine, other) is not None

    async def test_a_v2_template_adds_its_data_objects_once(
        self, settings: Settings, engine: Engine
    ) -> None:
        config = SandboxConfig(
            templates=(
                Template(
                    1,
                    "Modules",
                    1001,
                    30,
                    (True,) + (False,) * 7,
                    data_objects=(TemplateObject("cryptolens_features", '["A"]'),),
                ),
            )
        )
        with run_asgi(create_app(config)) as root:
            sandbox = SandboxServer(root, DEFAULT_TOKEN)
            v2 = settings.model_copy(update={"cryptolens_api_url": sandbox.url})
            async with runtime(v2, engine) as rt:
                ours = purchase(engine, "ours")
                lose(sandbox, "data/AddDataObjectToKey")
                assert await step(rt, ours) == "retry"
                rt.clock = later(60)
                assert await finish(rt, ours) == {ours: "done"}
            key = key_of(engine, ours)
            assert key is not None
            objects = key_json(sandbox, key)["dataObjects"]
            assert isinstance(objects, list)
            assert [(o["name"], o["stringValue"]) for o in objects] == [
                ("cryptolens_features", '["A"]')
            ]


class TestHeldKeys:
    def test_a_key_is_never_two_licenses(self, engine: Engine) -> None:
        with Session(engine) as s:
            s.add(License(ref="a", product_id=1001, template_id=1, key="K-1"))
            s.add(License(ref="b", product_id=1001, template_id=1))
            s.commit()
        with pytest.raises(errors.KeyHeld):
            licenses.set_license_key(engine, "b", "K-1", None)
        with Session(engine) as s:
            b = s.get(License, "b")
            assert b is not None and b.key is None

    async def test_a_found_key_another_license_holds_goes_to_a_person(
        self, settings: Settings, engine: Engine, sandbox_server: SandboxServer
    ) -> None:
        """The store refuses the key (KeyHeld); the runner parks the intent for review."""
        async with runtime(settings, engine) as rt:
            ours = purchase(engine, "ours")
            lose(sandbox_server, "key/CreateKey")
            assert await step(rt, ours) == "retry"
            [lost] = keys_since(sandbox_server, set())
            with Session(engine) as s:
                s.add(License(ref="other", product_id=1001, template_id=1, key=lost))
                s.commit()
            assert await finish(rt, ours) == {ours: "needs_review"}

        assert key_of(engine, ours) is None
        assert "another license's" in (intent(engine, ours).last_error or "")


class TestFromTemplateMode:
    async def test_without_sole_key_maker_a_lost_reply_goes_to_a_person(
        self, settings: Settings, engine: Engine, sandbox_server: SandboxServer, tmp_path: Path
    ) -> None:
        """Same network, same template: nothing tells our key from the back office's.
        Both are listed; neither is taken, nor created again."""
        mode = configured(settings, tmp_path, FROM_TEMPLATE)
        async with runtime(mode, engine) as rt:
            earlier = purchase(engine, "earlier")
            assert await finish(rt, earlier) == {earlier: "done"}
            known = {k["key"] for k in sandbox_server.state()["keys"]}
            ours = purchase(engine, "ours")
            lose(sandbox_server, "key/CreateKeyFromTemplate")
            assert await step(rt, ours) == "retry"
            [lost] = keys_since(sandbox_server, known)
            foreign = someone_else_creates_a_key(sandbox_server)
            rt.clock = later(60)
            await finish(rt, ours)

            row = intent(engine, ours)
            assert row.status == "needs_review"
            assert row.last_error is not None
            assert lost in row.last_error and foreign in row.last_error
            assert held_keys(engine) == {key_of(engine, earlier)}
            assert sandbox_server.state()["counts"]["keys_created"] == 3

            # A later purchase's lost creation never gets a key the open review lists.
            later_one = purchase(engine, "later")
            lose(sandbox_server, "key/CreateKeyFromTemplate", "lost_request")
            assert await step(rt, later_one) == "retry"
            await finish(rt, later_one)
            assert key_of(engine, later_one) not in {lost, foreign}

    async def test_a_sole_key_maker_recovers_its_key_and_refuses_another_templates(
        self, settings: Settings, engine: Engine, sandbox_server: SandboxServer, tmp_path: Path
    ) -> None:
        """Declared sole key maker: the new untagged key of the template is ours. A key of
        another template in the window (someone's yearly key) is no candidate."""
        mode = configured(settings, tmp_path, SOLE)
        async with runtime(mode, engine) as rt:
            ours = purchase(engine, "ours")
            lose(sandbox_server, "key/CreateKeyFromTemplate")
            assert await step(rt, ours) == "retry"
            [lost] = keys_since(sandbox_server, set())
            yearly = someone_else_creates_a_key(sandbox_server, template=2)
            assert await finish(rt, ours) == {ours: "done"}

        assert key_of(engine, ours) == lost
        assert notes_tag(ours) in notes(sandbox_server, lost)
        assert notes(sandbox_server, yearly) == ""
        assert sandbox_server.state()["counts"]["keys_created"] == 2
