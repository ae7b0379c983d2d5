"""Our hand-written check agrees with the official library in both directions."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import stripe

from bridge.core.signing import (
    InvalidSignature,
    MalformedHeader,
    SignatureError,
    sign,
    verify,
)

SECRET = "whsec_test_current"
OLD_SECRET = "whsec_test_previous"
NOW = 1_717_531_265
PAYLOAD = (
    Path(__file__).parent.parent / "fixtures" / "stripe" / "charge.refunded.json"
).read_bytes()


def stripe_header(payload: bytes, secret: str, timestamp: int) -> str:
    """A header made by the official library's own helper."""
    header: str = stripe.WebhookSignature.generate_signature_header(
        payload.decode(), secret, timestamp=timestamp
    )
    return header


class TestCompatibility:
    def test_header_from_stripe_library_verifies(self) -> None:
        verify(PAYLOAD, stripe_header(PAYLOAD, SECRET, NOW), [SECRET], now=NOW)

    def test_our_header_verifies_with_stripe_construct_event(self) -> None:
        # Signed now: the library checks the timestamp against the real clock.
        event = stripe.Webhook.construct_event(PAYLOAD, sign(PAYLOAD, SECRET), SECRET)
        assert event.id == json.loads(PAYLOAD)["id"]

    def test_our_header_equals_stripe_header(self) -> None:
        assert sign(PAYLOAD, SECRET, NOW) == stripe_header(PAYLOAD, SECRET, NOW)

    def test_non_ascii_body_is_signed_as_raw_bytes(self) -> None:
        payload = '{"description": "T-shirt (at €20.00), Größe M"}'.encode()
        verify(payload, stripe_header(payload, SECRET, NOW), [SECRET], now=NOW)

    def test_sign_defaults_to_the_current_time(self) -> None:
        before = int(time.time())
        header = sign(PAYLOAD, SECRET)
        after = int(time.time())
        timestamp = int(header.split(",")[0].removeprefix("t="))
        assert before <= timestamp <= after
        verify(PAYLOAD, header, [SECRET], now=timestamp)


class TestSecrets:
    def test_any_of_several_secrets_verifies(self) -> None:
        header = sign(PAYLOAD, OLD_SECRET, NOW)
        verify(PAYLOAD, header, [SECRET, OLD_SECRET], now=NOW)

    def test_any_v1_in_the_header_counts(self) -> None:
        ours = sign(PAYLOAD, SECRET, NOW).split(",")[1]
        other = sign(PAYLOAD, "whsec_someone_else", NOW).split(",")[1]
        header = f"t={NOW},{other},{ours},v0=00ff"
        verify(PAYLOAD, header, [SECRET], now=NOW)

    def test_wrong_secret_is_invalid(self) -> None:
        with pytest.raises(InvalidSignature):
            verify(PAYLOAD, sign(PAYLOAD, "whsec_wrong", NOW), [SECRET], now=NOW)

    def test_tampered_body_is_invalid(self) -> None:
        header = sign(PAYLOAD, SECRET, NOW)
        with pytest.raises(InvalidSignature):
            verify(PAYLOAD.replace(b"34500", b"34501"), header, [SECRET], now=NOW)

    def test_v0_alone_is_not_trusted(self) -> None:
        mac = sign(PAYLOAD, SECRET, NOW).split("v1=")[1]
        with pytest.raises(MalformedHeader):
            verify(PAYLOAD, f"t={NOW},v0={mac}", [SECRET], now=NOW)

    @pytest.mark.parametrize("secrets", [[], [""], [SECRET, ""]])
    def test_empty_secret_is_refused(self, secrets: list[str]) -> None:
        with pytest.raises(ValueError, match="secret"):
            verify(PAYLOAD, sign(PAYLOAD, "", NOW), secrets, now=NOW)


class TestTolerance:
    def test_at_the_edge_of_tolerance_verifies(self) -> None:
        verify(PAYLOAD, sign(PAYLOAD, SECRET, NOW), [SECRET], tolerance=300, now=NOW + 300)

    def test_too_old_is_invalid(self) -> None:
        with pytest.raises(InvalidSignature, match="tolerance"):
            verify(PAYLOAD, sign(PAYLOAD, SECRET, NOW), [SECRET], tolerance=300, now=NOW + 301)

    def test_too_new_is_invalid(self) -> None:
        with pytest.raises(InvalidSignature, match="tolerance"):
            verify(PAYLOAD, sign(PAYLOAD, SECRET, NOW), [SECRET], tolerance=300, now=NOW - 301)

    def test_stripe_library_also_refuses_our_old_header(self) -> None:
        with pytest.raises(stripe.SignatureVerificationError):
            stripe.Webhook.construct_event(
                PAYLOAD, sign(PAYLOAD, SECRET, NOW - 1000), SECRET, tolerance=300
            )


class TestMalformed:
    @pytest.mark.parametrize(
        "header",
        [
            None,
            "",
            "   ",
            "garbage",
            "v1=" + "0" * 64,
            f"t={NOW}",
            f"t=abc,v1={'0' * 64}",
            f"t=-5,v1={'0' * 64}",
            f"t={NOW},t={NOW},v1={'0' * 64}",
            f"t={NOW},v1={'0' * 64},junk",
        ],
    )
    def test_garbled_header_is_malformed(self, header: str | None) -> None:
        with pytest.raises(MalformedHeader):
            verify(PAYLOAD, header, [SECRET], now=NOW)

    @pytest.mark.parametrize("signature", ["zz", "é" * 64, "0" * 63, "A" * 64])
    def test_non_hex_signature_is_invalid_not_a_crash(self, signature: str) -> None:
        with pytest.raises(InvalidSignature):
            verify(PAYLOAD, f"t={NOW},v1={signature}", [SECRET], now=NOW)

    def test_spaces_around_items_are_tolerated(self) -> None:
        t, v1 = sign(PAYLOAD, SECRET, NOW).split(",")
        verify(PAYLOAD, f" {t} , {v1} ", [SECRET], now=NOW)

    def test_errors_share_one_base(self) -> None:
        assert issubclass(MalformedHeader, SignatureError)
        assert issubclass(InvalidSignature, SignatureError)
