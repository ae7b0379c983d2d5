"""HubSpot signatures: v3 with rotation and a clock, v1/v2 only for legacy apps that opt in."""

from __future__ import annotations

import pytest

from bridge.hubspot.signature import (
    InvalidSignature,
    LegacySignature,
    MalformedSignature,
    SignatureError,
    UrlMismatch,
    sign_v1,
    sign_v2,
    sign_v3,
    verify,
)

# HubSpot's own examples (legacy docs, "Validating the v1/v2 request signature").
DOCS_SECRET = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy"
DOCS_V1_BODY = (
    b'[{"eventId":1,"subscriptionId":12345,"portalId":62515,"occurredAt":1564113600000,'
    b'"subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,'
    b'"changeSource":"CRM","changeFlag":"NEW","appId":54321}]'
)
URI = "https://bridge.example.com/webhooks/hubspot"
BODY = b'[{"eventId":1}]'
NOW_MS = 1_780_000_000_000


def test_v1_and_v2_match_hubspots_published_examples() -> None:
    assert sign_v1(DOCS_SECRET, DOCS_V1_BODY) == (
        "232db2615f3d666fe21a8ec971ac7b5402d33b9a925784df3ca654d05f4817de"
    )
    assert sign_v2(
        DOCS_SECRET,
        "POST",
        "https://www.example.com/webhook_uri",
        b'{"example_field":"example_value"}',
    ) == ("9569219f8ba981ffa6f6f16aa0f48637d35d728c7e4d93d0d52efaa512af7900")


def v3_headers(secret: str, at: int, uri: str = URI) -> dict[str, str]:
    return {
        "x-hubspot-signature-v3": sign_v3(secret, "POST", uri, BODY, at),
        "x-hubspot-request-timestamp": str(at),
    }


def check(
    headers: dict[str, str], *, uri: str = URI, now_ms: int = NOW_MS, legacy: bool = False
) -> str:
    return verify(
        method="POST",
        uri=uri,
        body=BODY,
        headers=headers,
        secrets=("old", "new"),
        now_ms=now_ms,
        legacy=legacy,
    )


def v1_headers(secret: str) -> dict[str, str]:
    return {"x-hubspot-signature": sign_v1(secret, BODY), "x-hubspot-signature-version": "v1"}


class TestV3:
    def test_any_secret_of_a_rotation(self) -> None:
        assert check(v3_headers("old", NOW_MS)) == "v3"
        assert check(v3_headers("new", NOW_MS)) == "v3"

    def test_the_uri_is_compared_with_its_escapes_decoded(self) -> None:
        escaped = "https://bridge.example.com/webhooks/hubspot?a=b%3Ac"
        headers = v3_headers("new", NOW_MS, "https://bridge.example.com/webhooks/hubspot?a=b:c")
        assert check(headers, uri=escaped) == "v3"

    @pytest.mark.parametrize(
        "headers,error",
        [
            (v3_headers("forged", NOW_MS), InvalidSignature),
            (
                v3_headers("new", NOW_MS, "https://elsewhere.example.com/webhooks/hubspot"),
                InvalidSignature,
            ),
            (v3_headers("new", NOW_MS - 300_001), InvalidSignature),  # stale
            (v3_headers("new", NOW_MS + 300_001), InvalidSignature),  # from the future
            ({"x-hubspot-signature-v3": "abc"}, MalformedSignature),  # no timestamp
            ({}, MalformedSignature),
        ],
        ids=["forged", "wrong uri", "stale", "future", "no timestamp", "no header"],
    )
    def test_refused(self, headers: dict[str, str], error: type[Exception]) -> None:
        with pytest.raises(error):
            check(headers)

    def test_on_the_five_minute_boundary_it_is_accepted(self) -> None:
        assert check(v3_headers("new", NOW_MS - 300_000)) == "v3"


class TestLegacy:
    def test_v1_and_v2_by_their_version_header(self) -> None:
        v2 = {
            "x-hubspot-signature": sign_v2("new", "POST", URI, BODY),
            "x-hubspot-signature-version": "v2",
        }
        assert check(v1_headers("old"), legacy=True) == "v1"
        assert check(v2, legacy=True) == "v2"

    def test_off_unless_turned_on(self) -> None:
        # HubSpot sends v1 beside v3: with v3 stripped, a captured request (no time, no
        # URL in v1) would replay for ever.
        v2 = {
            "x-hubspot-signature": sign_v2("new", "POST", URI, BODY),
            "x-hubspot-signature-version": "v2",
        }
        for headers in (v1_headers("old"), v2):
            with pytest.raises(LegacySignature):
                check(headers)

    def test_a_v1_signature_does_not_count_beside_a_v3_header(self) -> None:
        headers = {**v1_headers("old"), **v3_headers("new", NOW_MS - 600_000)}  # stale v3
        with pytest.raises(InvalidSignature):
            check(headers, legacy=True)

    def test_a_signature_without_its_version_is_malformed(self) -> None:
        with pytest.raises(MalformedSignature):
            check({"x-hubspot-signature": sign_v1("old", BODY)}, legacy=True)


class TestCauses:
    """What the delivery log is told: a cause per refusal, a URL mismatch told apart."""

    PROXY = "http://10.0.0.5:8000/webhooks/hubspot"  # what the bridge hears

    def cause(
        self, headers: dict[str, str], *, others: tuple[str, ...] = (), legacy: bool = True
    ) -> str:
        with pytest.raises(SignatureError) as refused:
            verify(
                method="POST",
                uri=self.PROXY,
                body=BODY,
                headers=headers,
                secrets=("old", "new"),
                now_ms=NOW_MS,
                other_uris=lambda: others,
                legacy=legacy,
            )
        return refused.value.cause

    @pytest.mark.parametrize(
        "headers,cause",
        [
            ({}, "no_header"),
            ({"x-hubspot-signature-v3": "abc"}, "malformed_header"),
            ({"x-hubspot-signature": sign_v1("old", BODY)}, "malformed_header"),
            (v3_headers("new", NOW_MS - 300_001, PROXY), "timestamp"),
            (v3_headers("forged", NOW_MS, PROXY), "no_match"),
            (v3_headers("new", NOW_MS), "url_mismatch"),
            (
                {
                    "x-hubspot-signature": sign_v1("forged", BODY),
                    "x-hubspot-signature-version": "v1",
                },
                "no_match",
            ),
            (
                {
                    "x-hubspot-signature": sign_v2("new", "POST", URI, BODY),
                    "x-hubspot-signature-version": "v2",
                },
                "url_mismatch",
            ),
        ],
        ids=["none", "no timestamp", "no version", "stale", "forged", "v3 url", "v1", "v2 url"],
    )
    def test_each_refusal_has_its_cause(self, headers: dict[str, str], cause: str) -> None:
        assert self.cause(headers, others=("https://elsewhere.example.com/x", URI)) == cause

    def test_the_mismatch_names_the_url_it_was_signed_for(self) -> None:
        with pytest.raises(UrlMismatch) as refused:
            verify(
                method="POST",
                uri=self.PROXY,
                body=BODY,
                headers=v3_headers("old", NOW_MS),
                secrets=("old",),
                now_ms=NOW_MS,
                other_uris=lambda: [URI],
            )
        assert refused.value.signed_uri == URI

    def test_a_legacy_signature_while_they_are_off(self) -> None:
        assert self.cause(v1_headers("old"), legacy=False) == "legacy_signature"

    def test_without_candidates_another_url_is_no_match(self) -> None:
        assert self.cause(v3_headers("new", NOW_MS)) == "no_match"

    def test_the_candidates_are_read_only_when_nothing_matched(self) -> None:
        def unread() -> list[str]:
            raise AssertionError("the happy path reads no other URL")

        verify(
            method="POST",
            uri=URI,
            body=BODY,
            headers=v3_headers("new", NOW_MS),
            secrets=("old", "new"),
            now_ms=NOW_MS,
            other_uris=unread,
        )
