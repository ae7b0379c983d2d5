"""``cryptolens-bridge send stripe``: samples, shifting, fresh ids, signing, and the CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bridge.cli import main
from bridge.core.signing import InvalidSignature, verify
from devtools import send
from tests.fixtures import stripe_builders as sb
from tests.fixtures.pipeline import SECRET
from tests.fixtures.servers import run_asgi
from tests.fixtures.stack import free_port

NOW = 1_800_000_000
VENDOR = Path(__file__).parent.parent / "fixtures" / "stripe"


class Receiver:
    """A stand-in endpoint that records what it was sent and answers ``status``."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.deliveries: list[tuple[bytes, str | None]] = []

    async def hook(self, request: Request) -> Response:
        self.deliveries.append((await request.body(), request.headers.get("stripe-signature")))
        return JSONResponse({"received": True}, status_code=self.status)

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(body) for body, _ in self.deliveries]


@pytest.fixture
def receiver() -> Receiver:
    return Receiver()


@pytest.fixture
def receiver_url(receiver: Receiver) -> Iterator[str]:
    app = Starlette(routes=[Route("/webhooks/stripe", receiver.hook, methods=["POST"])])
    with run_asgi(app) as url:
        yield f"{url}/webhooks/stripe"


def run(*args: str) -> Result:
    return CliRunner().invoke(main, ["send", "stripe", *args])


class TestSamples:
    def test_the_bundled_samples_are_the_vendor_fixtures(self) -> None:
        names = send.sample_names()
        assert "checkout.session.completed.payment" in names
        for name in names:
            bundled = (send.SAMPLES / f"{name}.json").read_bytes()
            assert bundled == (VENDOR / f"{name}.json").read_bytes(), name

    def test_a_name_with_or_without_json_and_a_path_load(self, tmp_path: Path) -> None:
        path = tmp_path / "mine.json"
        path.write_text(json.dumps(sb.load("charge.refunded")))
        assert send.load_event("charge.refunded")["type"] == "charge.refunded"
        assert send.load_event("charge.refunded.json")["type"] == "charge.refunded"
        assert send.load_event(str(path))["id"] == "evt_11111"

    def test_an_unknown_name_lists_the_samples(self) -> None:
        with pytest.raises(send.SampleError) as caught:
            send.load_event("checkout.session.nope")
        assert "invoice.paid.subscription_cycle" in caught.value.message

    def test_a_file_that_is_not_an_event_is_refused(self, tmp_path: Path) -> None:
        (tmp_path / "bad.json").write_text("{not json")
        (tmp_path / "list.json").write_text("[1, 2]")
        for name in ("bad.json", "list.json"):
            with pytest.raises(send.SampleError):
                send.load_event(str(tmp_path / name))


class TestShift:
    def test_the_subscription_timeline_starts_now(self) -> None:
        created = send.shift_to(sb.load("customer.subscription.created"), NOW)
        renewal = send.shift_to(sb.load("customer.subscription.updated.renewal"), NOW)
        # The earliest time in both is the price's, one second before T0.
        assert created["data"]["object"]["current_period_start"] == NOW + 1
        assert created["data"]["object"]["current_period_end"] == NOW + 1 + (sb.T1 - sb.T0)
        assert renewal["data"]["object"]["current_period_end"] == NOW + 1 + (sb.T2 - sb.T0)
        assert renewal["created"] == NOW + 1 + (sb.T1 - sb.T0)

    def test_placeholders_stay_but_the_envelope_is_dated_now(self) -> None:
        event = send.shift_to(sb.load("checkout.session.completed.payment"), NOW)
        assert event["created"] == NOW
        assert event["data"]["object"]["expires_at"] == 1234567890
        assert event["data"]["object"]["amount_total"] == 1099

    def test_the_original_is_not_changed(self) -> None:
        event = sb.load("invoice.paid.subscription_cycle")
        before = json.dumps(event)
        send.shift_to(event, NOW)
        assert json.dumps(event) == before


class TestCommand:
    def test_signs_what_it_sends_with_the_secret(
        self, receiver: Receiver, receiver_url: str
    ) -> None:
        result = run(
            "checkout.session.completed.payment", "--url", receiver_url, "--secret", SECRET
        )
        assert result.exit_code == 0, result.output
        assert '200 {"received":true}' in result.output
        [(body, header)] = receiver.deliveries
        verify(body, header, [SECRET])
        with pytest.raises(InvalidSignature):
            verify(body, header, ["whsec_someone_else"])
        event = json.loads(body)
        assert event["id"].startswith("evt_send_")
        assert event["data"]["object"]["payment_intent"] == sb.ONE_OFF_PI

    def test_each_copy_gets_a_fresh_id_unless_same_id(
        self, receiver: Receiver, receiver_url: str
    ) -> None:
        args = ["invoice.paid.subscription_cycle", "--url", receiver_url, "--times", "3"]
        assert run(*args, "--secret", SECRET).exit_code == 0
        assert run(*args, "--secret", SECRET, "--same-id").exit_code == 0
        ids = [e["id"] for e in receiver.events()]
        assert len(set(ids[:3])) == 3
        assert ids[3:] == ["evt_1OPouqJN5vQBdWExINVPAY01"] * 3

    def test_keep_times_sends_the_timestamps_as_they_are(
        self, receiver: Receiver, receiver_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", f"{SECRET},whsec_old")
        result = run("customer.subscription.created", "--url", receiver_url, "--keep-times")
        assert result.exit_code == 0, result.output
        [event] = receiver.events()
        assert event["data"]["object"]["current_period_start"] == sb.T0
        verify(receiver.deliveries[0][0], receiver.deliveries[0][1], [SECRET])

    def test_a_refusal_is_printed_and_fails_the_command(self) -> None:
        bad = Receiver(status=401)
        app = Starlette(routes=[Route("/webhooks/stripe", bad.hook, methods=["POST"])])
        with run_asgi(app) as url:
            result = run("charge.refunded", "--url", f"{url}/webhooks/stripe", "--secret", "x1")
        assert result.exit_code == 1
        assert "401" in result.output

    def test_no_bridge_listening_says_so(self) -> None:
        url = f"http://127.0.0.1:{free_port()}/webhooks/stripe"
        result = run("charge.refunded", "--url", url, "--secret", SECRET)
        assert result.exit_code == 1
        assert "is the bridge running?" in result.output

    def test_no_secret_is_a_usage_error(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("STRIPE_WEBHOOK_SECRET", raising=False)
        result = run("charge.refunded")
        assert result.exit_code == 2
        assert "STRIPE_WEBHOOK_SECRET" in result.output

    def test_an_unknown_sample_lists_the_samples(self) -> None:
        result = run("nope", "--secret", SECRET)
        assert result.exit_code == 1
        assert "checkout.session.completed.subscription" in result.output


class TestAgainstTheBridge:
    def test_the_bridge_accepts_a_sample_then_sees_the_duplicate(self, bridge_app_url: str) -> None:
        url = f"{bridge_app_url}/webhooks/stripe"
        result = run("checkout.session.completed.payment", "--url", url, "--secret", SECRET)
        assert result.exit_code == 0, result.output
        assert '"duplicate":false' in result.output
        again = run(
            "checkout.session.completed.payment",
            "--url",
            url,
            "--secret",
            SECRET,
            "--same-id",
            "--times",
            "2",
        )
        assert again.exit_code == 0, again.output
        assert again.output.count('"duplicate":true') == 1
