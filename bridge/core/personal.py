"""What counts as a person's data in what the bridge stores, and how it is taken out.

Pure functions on stored text and JSON: ``bridge.store.retention`` prunes with
:func:`pruned_params`, ``bridge.store.erasure`` (the ``forget`` command) erases one
address with :class:`Address`. One set of personal keys serves both, so the two cannot
disagree on what a buyer's field is.

A body is kept as the provider sent it (``bridge.store.payloads.stored_body``) or as JSON
re-encoded with ``\\u`` escapes, so an address is looked for in the *decoded* JSON,
whatever its case and however its characters were escaped.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from bridge.core.errors import Permanent

ERASED = "[erased]"

#: Keys whose values name, reach or locate a person: Stripe's customer and billing
#: fields, the CRM contract's buyer, HubSpot contacts, Pipedrive persons, the intents'
#: ``customer`` object. Compared in lower case.
PERSONAL_KEYS = frozenset(
    {
        "email",
        "emails",
        "name",
        "first_name",
        "last_name",
        "firstname",
        "lastname",
        "company",
        "company_name",
        "companyname",
        "org_name",
        "person_name",
        "individual_name",
        "phone",
        "phones",
        "address",
        "shipping",
        "shipping_details",
        "billing_details",
        "customer_details",
        "customer_email",
        "customer_name",
        "customer_phone",
        "customer_address",
        "customer_shipping",
        "customer_tax_ids",
        "receipt_email",
        "tax_ids",
    }
)

#: Of those, the keys that hold only the buyer's data wherever they are in a body (a
#: Stripe object's ``customer_details``): erased throughout a body that names the
#: address. ``name`` and ``company`` are not among them: a product has a name too.
BUYER_KEYS = frozenset(
    {
        "billing_details",
        "customer_details",
        "customer_email",
        "customer_name",
        "customer_phone",
        "customer_address",
        "customer_shipping",
        "customer_tax_ids",
        "receipt_email",
        "shipping",
        "shipping_details",
    }
)


class InvalidAddress(Permanent):
    """What ``forget`` was given is not an email address."""


def pruned_params(params: dict[str, Any]) -> dict[str, Any]:
    """An intent's (or start hint's) params without the buyer's personal fields: the
    ``customer`` object keeps its ids (``stripe_customer``), its email, name and company
    become null. Everything else (template, amounts, ids) is the record of what was done."""
    buyer = params.get("customer")
    if not isinstance(buyer, dict):
        return params
    kept = {k: (None if k.lower() in PERSONAL_KEYS else v) for k, v in buyer.items()}
    return params if kept == buyer else {**params, "customer": kept}


@dataclass(frozen=True)
class Address:
    """One email address, matched without regard to case, in the forms a stored text may
    hold it: as it is, percent-encoded (``%40``), or JSON-escaped inside a body."""

    text: str

    def __post_init__(self) -> None:
        value = self.text.strip()
        local, at, domain = value.rpartition("@")
        if not at or not local or "." not in domain or len(value) > 254 or _SPACE.search(value):
            raise InvalidAddress(f"not an email address: {self.text!r}")
        object.__setattr__(self, "text", value)

    @property
    def folded(self) -> str:
        return self.text.casefold()

    @property
    def forms(self) -> tuple[str, ...]:
        """The lower-case spellings a SQL prefilter looks for (besides any text holding
        an escape, which only decoding can judge)."""
        folded = self.folded
        return (folded, folded.replace("@", "%40"))

    def _pattern(self) -> re.Pattern[str]:
        local, _, domain = self.text.rpartition("@")
        return re.compile(f"{re.escape(local)}(?:@|%40){re.escape(domain)}", re.IGNORECASE)

    def in_text(self, text: str) -> bool:
        return self._pattern().search(text) is not None or self.folded in text.casefold()

    def erase_text(self, text: str) -> str:
        erased = self._pattern().sub(ERASED, text)
        if self.folded in erased.casefold():  # a case-folding the regex does not do (ß)
            erased = ERASED
        return erased

    def may_hold(self, stored: str) -> bool:
        """Cheap first look: whether ``stored`` may hold the address in any form."""
        return "\\" in stored or self.in_text(stored)


def erased_text(stored: str, address: Address) -> str | None:
    """A plain text column (a note, an error) without the address; None if unchanged.
    A text stored JSON-escaped (``bridge.store.payloads.storable_text``) is judged decoded."""
    if address.in_text(stored):
        return address.erase_text(stored)
    if "\\" in stored:
        decoded = _unescaped(stored)
        if decoded is not None and address.in_text(decoded):
            return json.dumps(address.erase_text(decoded))[1:-1]
    return None


def erased_json(stored: str, address: Address, *, body: bool = False) -> str | None:
    """A JSON column (a body, params, a result, an attempt's detail) without the address
    and the personal fields of every object that holds it; None if unchanged. ``body``:
    a delivery's body, which is about one buyer, so its buyer-only fields (:data:`BUYER_KEYS`)
    go wherever they are once the address is anywhere in it."""
    if not address.may_hold(stored):
        return None
    try:
        value = json.loads(stored)
    except ValueError:
        return erased_text(stored, address)
    if not _holds(value, address):
        return None
    value = _erase(value, address, body=body)
    return json.dumps(value, separators=(",", ":"))


_SPACE = re.compile(r"\s")


def _unescaped(text: str) -> str | None:
    try:
        decoded = json.loads(f'"{text}"')
    except ValueError:
        return None
    return decoded if isinstance(decoded, str) else None


def _nested(text: str) -> Any:
    """A string value that is itself JSON (Stripe metadata often is), decoded; else None."""
    if text[:1] in ("{", "[") and "\\" in text:
        try:
            return json.loads(text)
        except ValueError:
            return None
    return None


def _holds(value: Any, address: Address) -> bool:
    if isinstance(value, str):
        if address.in_text(value):
            return True
        nested = _nested(value)
        return nested is not None and _holds(nested, address)
    if isinstance(value, dict):
        return any(_holds(k, address) or _holds(v, address) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds(v, address) for v in value)
    return False


def _own(record: dict[str, Any], address: Address) -> bool:
    """Whether ``record`` is the person's: the address is one of its own values (a string,
    a list of them) or inside one of its personal fields (Pipedrive's ``emails`` list)."""
    for key, value in record.items():
        if isinstance(value, str | list) and not (
            isinstance(value, list) and any(isinstance(v, dict | list) for v in value)
        ):
            if _holds(value, address):
                return True
        elif key.lower() in PERSONAL_KEYS and _holds(value, address):
            return True
    return False


def _erase(value: Any, address: Address, *, body: bool) -> Any:
    if isinstance(value, str):
        nested = _nested(value)
        if nested is not None and _holds(nested, address):
            return json.dumps(_erase(nested, address, body=body), separators=(",", ":"))
        return address.erase_text(value) if address.in_text(value) else value
    if isinstance(value, list):
        return [_erase(v, address, body=body) for v in value]
    if not isinstance(value, dict):
        return value
    own = _own(value, address)
    out: dict[str, Any] = {}
    for key, item in value.items():
        lower = key.lower()
        if item is not None and (
            (own and lower in PERSONAL_KEYS) or (body and lower in BUYER_KEYS)
        ):
            out[address.erase_text(key)] = None
        else:
            out[address.erase_text(key)] = _erase(item, address, body=body)
    return out
