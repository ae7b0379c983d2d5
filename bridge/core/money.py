"""Stripe amounts to Cryptolens event values.

Stripe gives amounts in the currency's smallest unit as Stripe defines it
(https://docs.stripe.com/currencies): cents for USD, whole yen for JPY, fils (1/1000)
for KWD. Cryptolens RegisterEvent wants ``Value`` as the amount times 100 ("25.3 should
be entered as 2530") whatever the currency, so we rescale to two decimals.
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_EVEN, Decimal

# Stripe's zero-decimal list: the API amount is in whole units.
ZERO_DECIMAL = frozenset(
    {
        "BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA",
        "PYG", "RWF", "UGX", "VND", "VUV", "XAF", "XOF", "XPF",
    }
)  # fmt: skip

# Stripe's three-decimal list: the API amount is in thousandths (and ends in 0 for
# payments, but invoices and refunds can still carry any last digit).
THREE_DECIMAL = frozenset({"BHD", "JOD", "KWD", "OMR", "TND"})

# Stripe's "special cases" need no rule here: ISK became effectively zero-decimal in 2023
# but stays two-decimal in the API (ISK 100 = 1 krona, amounts divisible by 100); HUF and
# TWD are zero-decimal only for payouts and charge two-decimal amounts. All three are
# two-decimal as far as an amount in an event is concerned.

_CODE = re.compile(r"[A-Za-z]{3}")


def currency_code(currency: object) -> str:
    """``"usd"`` -> ``"USD"``; ``ValueError`` unless it is three ASCII letters."""
    if not isinstance(currency, str) or not _CODE.fullmatch(currency):
        raise ValueError(f"not a currency code: {currency!r}")
    return currency.upper()


def to_cryptolens_value(amount_minor: int, currency: str) -> int:
    """A Stripe minor-unit amount as Cryptolens' two-decimal integer Value.

    USD 2530 -> 2530, JPY 1000 -> 100000, KWD 5130 -> 513. A three-decimal amount that is
    not a multiple of 10 is rounded half-to-even: half a fils is not money anyone paid,
    and over many events half-even does not drift upwards the way half-up does
    (KWD 5125 -> 512, KWD 5135 -> 514).
    """
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int):
        raise TypeError(f"amount must be an int in minor units, not {amount_minor!r}")
    code = currency_code(currency)
    if code in ZERO_DECIMAL:
        return amount_minor * 100
    if code in THREE_DECIMAL:
        return int((Decimal(amount_minor) / 10).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
    return amount_minor


# A CRM amount past this (in major units) is not a deal: Value x 100 must stay an integer
# the databases and Cryptolens take.
_MAJOR_LIMIT = Decimal(10) ** 15


def major_to_cryptolens_value(amount: Decimal, currency: str) -> int:
    """An amount in major units as a CRM shows it (25.30 USD) as Cryptolens' Value: the
    amount x 100 whatever the currency (25.30 -> 2530, JPY 1000 -> 100000, the rule
    RegisterEvent states and :func:`to_cryptolens_value` follows), a third decimal
    rounded half-to-even like a fils above (KWD 5.125 -> 512)."""
    currency_code(currency)
    if not amount.is_finite() or abs(amount) >= _MAJOR_LIMIT:
        raise ValueError(f"not an amount: {amount}")
    return int((amount * 100).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def to_major(amount_minor: int, currency: str) -> Decimal:
    """A Stripe minor-unit amount in major units, exactly: USD 2530 -> 25.30, JPY 1000
    -> 1000, KWD 5130 -> 5.130 (what a revenue report such as myTracker's wants)."""
    code = currency_code(currency)
    if code in ZERO_DECIMAL:
        return Decimal(amount_minor)
    return Decimal(amount_minor).scaleb(-3 if code in THREE_DECIMAL else -2)
