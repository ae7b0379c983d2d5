"""Reading a Stripe payload without KeyError or TypeError.

Verified events still come from outside: a field can be missing, null, or of another type
than our API version documents. :class:`Obj` wraps one JSON object with where it sits
in the event, so every miss becomes one :class:`PayloadError` that names the object and
the field ("invoice in_1: amount_paid is missing").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge.core.errors import Rejected


class PayloadError(Rejected, ValueError):
    """A verified event lacks a field its type must have, or has one of the wrong type."""


class Obj:
    """One JSON object of an event and where it sits there (for messages only: an
    object's place is spelled out the first time a message needs it, which is rarely).
    """

    __slots__ = ("_at", "_parent", "_where", "data")

    def __init__(self, data: Mapping[str, Any], where: str, parent: Obj | None = None) -> None:
        # With a parent, ``where`` is only the last step (": key", "[i]").
        self.data = data
        self._parent = parent
        self._at = where
        self._where = where if parent is None else None

    @property
    def where(self) -> str:
        if self._where is None:
            assert self._parent is not None
            self._where = self._parent.where + self._at
        return self._where

    @classmethod
    def of(cls, value: Any, where: str) -> Obj:
        if type(value) is not dict and not isinstance(value, Mapping):
            raise PayloadError(f"{where} is not an object")
        return cls(value, where)

    def named(self, kind: str) -> Obj:
        """The same object, named by its id in later messages."""
        return Obj(self.data, f"{kind} {self.text('id')}")

    def _get(self, key: str, kind: type | tuple[type, ...], required: bool) -> Any:
        value = self.data.get(key)
        if value is None:
            if required:
                raise PayloadError(f"{self.where}: {key} is missing")
            return None
        cls = type(value)
        if cls is kind or (cls is dict and kind is Mapping):  # the JSON types: no ABC walk
            return value
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
            raise PayloadError(f"{self.where}: {key} has the wrong type")
        return value

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def text(self, key: str) -> str:
        value: str = self._get(key, str, True)
        return value

    def opt_text(self, key: str) -> str | None:
        value: str | None = self._get(key, str, False)
        return value

    def number(self, key: str) -> int:
        value: int = self._get(key, int, True)
        return value

    def opt_number(self, key: str) -> int | None:
        value: int | None = self._get(key, int, False)
        return value

    def obj(self, key: str) -> Obj:
        return Obj(self._get(key, Mapping, True), f": {key}", self)

    def opt_obj(self, key: str) -> Obj | None:
        value = self._get(key, Mapping, False)
        return None if value is None else Obj(value, f": {key}", self)

    def ref(self, key: str) -> str | None:
        """An expandable field: the id, whether Stripe sent the id or the object."""
        value = self._get(key, (str, Mapping), False)
        if value is None or isinstance(value, str):
            return value
        return Obj(value, f": {key}", self).text("id")

    def expanded(self, key: str) -> Obj | None:
        """An expandable field's object, when the payload carries it expanded."""
        value = self._get(key, (str, Mapping), False)
        return Obj(value, f": {key}", self) if isinstance(value, Mapping) else None

    def items(self, key: str) -> list[Obj]:
        """The ``data`` of a Stripe list object; an absent list is empty."""
        listing = self.opt_obj(key)
        if listing is None:
            return []
        data = listing._get("data", list, False) or []
        return [listing._item(item, i) for i, item in enumerate(data)]

    def _item(self, value: Any, index: int) -> Obj:
        if type(value) is not dict and not isinstance(value, Mapping):
            raise PayloadError(f"{self.where}[{index}] is not an object")
        return Obj(value, f"[{index}]", self)
