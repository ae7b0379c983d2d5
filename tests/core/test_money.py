"""Stripe minor units to Cryptolens' two-decimal Value, across Stripe's currency classes."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest

from bridge.core.money import (
    THREE_DECIMAL,
    ZERO_DECIMAL,
    currency_code,
    major_to_cryptolens_value,
    to_cryptolens_value,
)

TWO_DECIMAL = ["USD", "EUR", "GBP", "MXN", "CHF", "INR", "BRL", "AUD", "CAD", "SEK"]
# Stripe's special cases: two-decimal in the API whatever their payout or card rules.
SPECIAL_TWO_DECIMAL = ["ISK", "HUF", "TWD"]
# Fixed seed: many amounts, the same every run.
AMOUNTS = [0, 1, 5, 9, 10, 99, 100, 2530, 999_999, *random.Random(7).sample(range(10**9), 40)]


class TestExamples:
    @pytest.mark.parametrize(
        ("amount", "currency", "value"),
        [
            (2530, "usd", 2530),
            (1000, "jpy", 100000),
            (5130, "kwd", 513),
            (34500, "mxn", 34500),
            (500, "isk", 500),  # ISK 5: Stripe still counts ISK in hundredths
            (1000, "huf", 1000),
            (1000, "twd", 1000),
            (5000, "ugx", 500000),  # UGX is on Stripe's zero-decimal list
        ],
    )
    def test_documented_examples(self, amount: int, currency: str, value: int) -> None:
        assert to_cryptolens_value(amount, currency) == value


class TestProperties:
    @pytest.mark.parametrize("currency", TWO_DECIMAL + SPECIAL_TWO_DECIMAL)
    def test_two_decimal_is_unchanged(self, currency: str) -> None:
        for amount in AMOUNTS:
            assert to_cryptolens_value(amount, currency) == amount

    @pytest.mark.parametrize("currency", sorted(ZERO_DECIMAL))
    def test_zero_decimal_is_times_100(self, currency: str) -> None:
        for amount in AMOUNTS:
            assert to_cryptolens_value(amount, currency.lower()) == amount * 100

    @pytest.mark.parametrize("currency", sorted(THREE_DECIMAL))
    def test_three_decimal_multiples_of_ten_are_exact(self, currency: str) -> None:
        for amount in AMOUNTS:
            assert to_cryptolens_value(amount * 10, currency) == amount

    @pytest.mark.parametrize("currency", sorted(THREE_DECIMAL))
    def test_three_decimal_is_within_half_a_cent(self, currency: str) -> None:
        for amount in AMOUNTS:
            assert abs(to_cryptolens_value(amount, currency) * 10 - amount) <= 5

    def test_negative_amounts_are_symmetric(self) -> None:
        for currency in ["USD", "JPY", "KWD"]:
            for amount in AMOUNTS:
                assert to_cryptolens_value(-amount, currency) == -to_cryptolens_value(
                    amount, currency
                )

    def test_case_does_not_matter(self) -> None:
        for currency in ["usd", "Usd", "USD"]:
            assert to_cryptolens_value(1234, currency) == 1234

    def test_lists_do_not_overlap(self) -> None:
        assert not ZERO_DECIMAL & THREE_DECIMAL
        assert not set(SPECIAL_TWO_DECIMAL) & (ZERO_DECIMAL | THREE_DECIMAL)


class TestRounding:
    @pytest.mark.parametrize(
        ("amount", "value"),
        [(5124, 512), (5125, 512), (5126, 513), (5135, 514), (5, 0), (15, 2), (-5125, -512)],
    )
    def test_three_decimal_rounds_half_to_even(self, amount: int, value: int) -> None:
        assert to_cryptolens_value(amount, "KWD") == value


class TestValidation:
    @pytest.mark.parametrize("currency", ["usd", "USD", "eUr"])
    def test_currency_code_upper_cases(self, currency: str) -> None:
        assert currency_code(currency) == currency.upper()

    @pytest.mark.parametrize("currency", ["", "us", "usdx", "u$d", "12a", None, 840, "ÜSD"])
    def test_bad_currency_code(self, currency: object) -> None:
        with pytest.raises(ValueError, match="currency"):
            currency_code(currency)

    @pytest.mark.parametrize("amount", [12.5, "100", None, True])
    def test_amount_must_be_an_int(self, amount: object) -> None:
        with pytest.raises(TypeError):
            to_cryptolens_value(amount, "USD")  # type: ignore[arg-type]


class TestMajorUnits:
    @pytest.mark.parametrize(
        ("amount", "currency", "value"),
        [
            ("25.30", "EUR", 2530),
            ("25.3", "usd", 2530),
            ("1000", "JPY", 100000),
            ("5.125", "KWD", 512),  # half a fils: half-even
            ("5.135", "KWD", 514),
            ("0", "EUR", 0),
        ],
    )
    def test_the_amount_times_100(self, amount: str, currency: str, value: int) -> None:
        assert major_to_cryptolens_value(Decimal(amount), currency) == value

    @pytest.mark.parametrize(
        ("amount", "currency"),
        [("NaN", "EUR"), ("Infinity", "EUR"), ("1e15", "EUR"), ("1e400", "EUR"), ("1", "€€€")],
    )
    def test_not_an_amount_or_a_code(self, amount: str, currency: str) -> None:
        with pytest.raises(ValueError):
            major_to_cryptolens_value(Decimal(amount), currency)
