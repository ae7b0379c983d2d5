"""GetKeys' ``SearchQuery``: the subset of the product page's query language the bridge
and its tests use, refused with the service's own message beyond it.

Understood: ``notes.contains("...")``, ``key.contains("...")``, ``key="..."``,
``id=N`` (and ``<``, ``<=``, ``>``, ``>=``), joined by ``and`` / ``or`` (``and`` binds
tighter; no parentheses). Strings may not hold a double quote (how the service escapes
one is not documented). ``contains`` ignores case, as a SQL Server ``LIKE`` does: a tag
must stay unique even then.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from bridge.sandbox.params import Refusal
from bridge.sandbox.store_records import KeyRecord

BAD_QUERY = (
    "The search query causes problems. Please check that it follows the standard: "
    "https://help.cryptolens.io/web-interface/linq-search-product"
)

Predicate = Callable[[KeyRecord], bool]

_CONTAINS = re.compile(r'^(notes|key)\.contains\("([^"]*)"\)$', re.IGNORECASE)
_KEY_IS = re.compile(r'^key\s*==?\s*"([^"]*)"$', re.IGNORECASE)
_ID = re.compile(r"^id\s*(==?|<=|>=|<|>)\s*(\d{1,18})$", re.IGNORECASE)
_OR = re.compile(r"\s+or\s+", re.IGNORECASE)
_AND = re.compile(r"\s+and\s+", re.IGNORECASE)
_COMPARE: dict[str, Callable[[int, int], bool]] = {
    "=": lambda a, b: a == b,
    "==": lambda a, b: a == b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def parse(query: str) -> Predicate:
    """The keys ``query`` selects; Refusal(BAD_QUERY) for what the sandbox does not read."""
    alternatives = [[_term(t.strip()) for t in _AND.split(a)] for a in _OR.split(query.strip())]
    return lambda record: any(all(term(record) for term in a) for a in alternatives)


def _term(text: str) -> Predicate:
    if found := _CONTAINS.match(text):
        field, needle = found.group(1).lower(), found.group(2).lower()
        if field == "notes":
            return lambda r: needle in r.notes.lower()
        return lambda r: needle in r.key.lower()
    if found := _KEY_IS.match(text):
        key = found.group(1)
        return lambda r: r.key == key
    if found := _ID.match(text):
        compare, number = _COMPARE[found.group(1)], int(found.group(2))
        return lambda r: compare(r.id, number)
    raise Refusal(BAD_QUERY)
