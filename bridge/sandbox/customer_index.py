"""Customers in memory, with a trigram index for GetCustomers' ``Search``.

The reference's Search matches a customer when the text occurs in the name, company,
email or secret, so it is a case-insensitive substring search, not an equality: an
email index cannot answer it. A trigram index can, exactly. Each customer's searchable
fields are lower-cased and joined into one haystack. If the lower-cased search text
occurs in a field, it occurs in the haystack, and so does every three-character slice of
it: the customers listed under any one of its trigrams whose haystack contains it are a
superset of the matches. ``containing`` takes the shortest such list; the caller still
applies the full predicate, so the results are those of a scan of every customer.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the store imports this module
    from bridge.sandbox.store_records import CustomerRecord

GRAM = 3
# Joins the fields; a needle spanning two fields only adds a candidate the caller drops.
_SEPARATOR = "\n"

_Entry = tuple[str, "CustomerRecord"]  # (haystack, customer)


def haystack(customer: CustomerRecord) -> str:
    """The fields Search looks at, lower-cased as the search compares them, joined."""
    fields = (customer.name, customer.company_name, customer.email, customer.secret)
    return _SEPARATOR.join(field.lower() for field in fields)


def _grams(text: str) -> set[str]:
    return {text[i : i + GRAM] for i in range(len(text) - GRAM + 1)}


class CustomerIndex:
    """Every customer by id, in id order, and each trigram's customers in id order."""

    def __init__(self) -> None:
        self._by_id: dict[int, CustomerRecord] = {}
        self._postings: defaultdict[str, list[_Entry]] = defaultdict(list)

    def __len__(self) -> int:
        return len(self._by_id)

    def add(self, customer: CustomerRecord) -> None:
        """Ids must grow (the store's are AUTOINCREMENT), so every list stays in id order."""
        if self._by_id and customer.id <= next(reversed(self._by_id)):
            raise ValueError(f"customer {customer.id} is not newer than the last one")
        self._by_id[customer.id] = customer
        text = haystack(customer)
        entry = (text, customer)
        for gram in _grams(text):
            self._postings[gram].append(entry)

    def get(self, customer_id: int) -> CustomerRecord | None:
        return self._by_id.get(customer_id)

    def all(self) -> list[CustomerRecord]:
        return list(self._by_id.values())

    def containing(self, needle: str) -> list[CustomerRecord]:
        """Candidates, in id order, for the customers with ``needle`` (lower-cased) in a
        searchable field: all of them, and rarely another."""
        if len(needle) < GRAM:
            return self.all()
        shortest: list[_Entry] | None = None
        for gram in _grams(needle):
            posting = self._postings.get(gram)
            if posting is None:
                return []  # no customer has this slice, so none has the needle
            if shortest is None or len(posting) < len(shortest):
                shortest = posting
        return [customer for text, customer in shortest or () if needle in text]
