"""The dry run and the real run on the same fixtures: the calls ``replay --dry-run`` (and
the admin page's plan) says an intent would make are the calls the worker makes.

Each step posts a provider's deliveries, plans every intent not done yet (``dry_run``,
asking the providers as the worker does), then drains a burst worker against the
sandbox; a request hook on the worker's Cryptolens clients records every call sent. The
planned calls that change something (method and the parameters that matter: product,
the template's parameters, days, block, customer, event name, value and Metadata) must
be the calls recorded, as multisets.

An intent that needs the key (the purchase event, the buyer's link, the first expiry) is
planned once the creation has run alone, as the worker finds the key when it runs it.
"""

from __future__ import annotations

import copy
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx

from bridge.core.intents import Effect
from bridge.ops.dryrun import DryRun, dry_run
from jobs import runner
from jobs.runtime import Runtime
from tests.fixtures import stripe_builders as sb
from tests.fixtures.crm import CrmPipeline
from tests.fixtures.crm_fakes import FakeCrm
from tests.fixtures.pipeline import Pipeline, shifted

FIXTURES = Path(__file__).parent.parent / "fixtures"
HUBSPOT_DEAL = 1246990
CONTRACT_NOW = 1_780_000_000  # the contract deal's day (2026-05-28): not in the future
# Reads: a plan makes them too, and they change nothing.
READS = {"key/GetKey", "product/GetKeys", "customer/GetCustomers", "ai/GetEvents"}
READS |= {"licensetemplate/GetLicenseTemplates", "ai/GetWebAPILog"}

Call = tuple[str, frozenset[tuple[str, str]]]


def _wire(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _call(method: str, params: dict[str, Any]) -> Call:
    """A call as compared: its method, and its parameters but the token and what a plan
    cannot know yet (the new key, the new customer's id: placeholders ``<...>``)."""
    kept = {
        (name, wired)
        for name, value in params.items()
        # None and "" are not sent
        if name != "token" and (wired := _wire(value)) and not wired.startswith("<")
    }
    placeholders = {n for n, v in params.items() if isinstance(v, str) and v.startswith("<")}
    return method, frozenset((n, v) for n, v in kept if n not in placeholders)


class Recorder:
    """Every Cryptolens call the worker sends, by a request hook on its clients."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, str]]] = []

    async def __call__(self, request: httpx.Request) -> None:
        method = request.url.path.removeprefix("/api/").strip("/")
        self.calls.append((method, dict(parse_qsl(request.content.decode()))))

    def changes(self, unknown: set[str]) -> list[Call]:
        """The calls that change something, without the parameters a plan leaves open."""
        found = []
        for method, params in self.calls:
            if method in READS:
                continue
            found.append(_call(method, {k: v for k, v in params.items() if k not in unknown}))
        return found


def _runtime(pipeline: Pipeline, recorder: Recorder) -> Runtime:
    rt = Runtime.build(pipeline.settings, engine=pipeline.engine)
    for client in rt.http.clients:
        client.event_hooks["request"].append(recorder)
    return rt


def _open(pipeline: Pipeline) -> list[str]:
    return sorted(i.id for i in pipeline.intents().values() if i.status != "done")


async def _plans(rt: Runtime, pipeline: Pipeline, ids: list[str]) -> dict[str, DryRun]:
    plans = {}
    for intent_id in ids:
        plan = await dry_run(pipeline.engine, rt.client, rt, intent_id, now=rt.now())
        assert plan is not None
        plans[intent_id] = plan
    return plans


def _planned(plans: dict[str, DryRun]) -> tuple[list[Call], set[str]]:
    """The planned changes, and the parameters left open (placeholders) to drop from the
    recorded calls of the same method."""
    calls, unknown = [], set()
    for plan in plans.values():
        for call in plan.calls:
            calls.append(_call(call.method, call.params))
            unknown |= {n for n, v in call.params.items() if isinstance(v, str) and v[:1] == "<"}
    return calls, unknown


async def step(pipeline: Pipeline, post: Callable[[], Awaitable[Any]]) -> list[Call]:
    """Post, plan, run; assert the planned changes are the calls made. Returns them.

    Key creations run first, alone (what they wake waits, but the purchase event, which
    runs beside the creation and reads nothing it changes): every other intent is then
    planned with the key there, as the worker finds it, and the queue is drained."""
    await post()
    recorder = Recorder()
    rt = _runtime(pipeline, recorder)
    intents = pipeline.intents()
    creates = [i for i in _open(pipeline) if intents[i].effect == Effect.CREATE_KEY.value]
    plans = await _plans(rt, pipeline, creates)
    recorder.calls.clear()
    for intent_id in creates:
        await runner._run(rt, intent_id)
    # The rest, from the state the creations left; calls the plans make are reads.
    held = len(recorder.calls)
    done = {i for i, row in intents.items() if row.status == "done"}
    rest = [i for i in sorted(pipeline.intents()) if i not in plans and i not in done]
    plans |= await _plans(rt, pipeline, rest)
    del recorder.calls[held:]
    await pipeline.drain(ctx={"runtime": rt})  # closes rt
    pipeline.assert_all_done()
    planned, unknown = _planned(plans)
    made = recorder.changes(unknown)
    missing, unplanned = Counter(planned) - Counter(made), Counter(made) - Counter(planned)
    for method, params in missing:  # the parameters that differ, for the reader
        for other, sent in unplanned:
            if other == method:
                print(
                    method,
                    "planned only:",
                    sorted(params - sent),
                    "sent only:",
                    sorted(sent - params),
                )
    assert not missing and not unplanned, {
        "planned, not made": missing,
        "made, not planned": unplanned,
    }
    return made


def _methods(calls: list[Call]) -> list[str]:
    return sorted(method for method, _ in calls)


def _param(calls: list[Call], method: str, name: str) -> str:
    return next(dict(params)[name] for m, params in calls if m == method)


class TestStripe:
    async def test_a_one_off_purchase(self, bridge: Pipeline) -> None:
        delta = int(time.time()) - sb.T0
        event = shifted(sb.load("checkout.session.completed.payment"), delta)
        made = await step(bridge, lambda: bridge.post(event))
        assert "key/CreateKey" in _methods(made)
        assert "ai/RegisterEvent" in _methods(made)

    async def test_a_subscription_started_renewed_and_canceled(self, bridge: Pipeline) -> None:
        delta = int(time.time()) - sb.T0

        def posting(*names: str) -> Callable[[], Awaitable[None]]:
            async def post() -> None:
                for name in names:
                    response = await bridge.post(shifted(sb.load(name), delta))
                    assert response.status_code == 200, response.text

            return post

        start = await step(
            bridge,
            posting("checkout.session.completed.subscription", "customer.subscription.created"),
        )
        assert "key/CreateKey" in _methods(start)
        renewal = await step(bridge, posting("invoice.paid.subscription_cycle"))
        assert int(_param(renewal, "key/ExtendLicense", "NoOfDays")) > 0
        ended = await step(bridge, posting("customer.subscription.deleted"))
        assert "key/BlockKey" in _methods(ended)


class TestCrm:
    async def test_a_won_hubspot_deal_gets_its_pipelines_template(
        self, crm: CrmPipeline, fake_crm: FakeCrm
    ) -> None:
        crm.clock.at = 1_780_000_000
        fake_crm.hubspot_deal(
            HUBSPOT_DEAL, amount="25.30", currency="USD", contacts=(201,), companies=(301,)
        )
        fake_crm.hubspot_contact(201, "ada@example.com", "Ada", "Lovelace")
        fake_crm.hubspot_company(301, "Analytical Engines")
        events = json.loads(
            (FIXTURES / "hubspot" / "deal.propertyChange.dealstage_closedwon.json").read_text()
        )
        made = await step(crm, lambda: crm.post_hubspot(events))
        # The "default" pipeline's template (2), not Stripe's default (1): a key of the
        # second product's template parameters, the deal's amount as the event's value.
        assert crm.only_key()["template_id"] == 2
        assert _param(made, "ai/RegisterEvent", "Value") == "2530"

    async def test_a_won_pipedrive_deal_gets_its_pipelines_template(
        self, crm: CrmPipeline, fake_crm: FakeCrm
    ) -> None:
        won = json.loads((FIXTURES / "pipedrive" / "deal.change.won.v2.json").read_text())
        fake_crm.pipedrive_deal(copy.deepcopy(won["data"]))
        fake_crm.pipedrive_person(8, "Ada Lovelace", "ada@example.com", 1)
        fake_crm.pipedrive_org(1, "Sample Org")
        made = await step(crm, lambda: crm.post_pipedrive(won))
        assert crm.only_key()["template_id"] == 2
        assert "ai/RegisterEvent" in _methods(made)

    async def test_a_won_deal_of_the_generic_contract(self, crm: CrmPipeline) -> None:
        crm.clock.at = CONTRACT_NOW
        event = {
            "id": "evt-parity-1",
            "type": "deal.won",
            "occurred_at": "2026-05-28T10:00:00+02:00",
            "deal": {"id": "D-42", "amount": 25.30, "currency": "EUR", "product": "pro"},
            "customer": {"email": "ada@example.com", "name": "Ada Lovelace", "company": "AE"},
        }
        made = await step(crm, lambda: crm.post_contract(event))
        assert crm.only_key()["template_id"] == 3  # the product table's
        assert _param(made, "ai/RegisterEvent", "Value") == "2530"
