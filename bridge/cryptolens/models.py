"""Typed results of the Web API 3 methods the bridge uses.

The service answers in lower camel case and documents its names as case-insensitive, so
the models accept any casing of a known field and ignore unknown ones (the reference
says new output fields may appear without a version bump).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel


def _aliases(name: str) -> AliasChoices:
    camel = to_camel(name)
    return AliasChoices(camel, camel[0].upper() + camel[1:], name)


def _utc(value: Any) -> Any:
    """The service writes naive ISO datetimes in UTC ("2015-08-27T00:00:00")."""
    if isinstance(value, str) and value:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class Customer(_Model):
    id: int = Field(validation_alias=_aliases("id"))
    name: str | None = Field(default=None, validation_alias=_aliases("name"))
    email: str | None = Field(default=None, validation_alias=_aliases("email"))
    company_name: str | None = Field(default=None, validation_alias=_aliases("company_name"))
    created: datetime | None = Field(default=None, validation_alias=_aliases("created"))

    _created = field_validator("created", mode="before")(_utc)


class DataObject(_Model):
    """A data object (additional variable) on a key, a product or the account. The
    referencer fields come only from ListDataObjects with ShowAll."""

    id: int = Field(validation_alias=_aliases("id"))
    name: str | None = Field(default=None, validation_alias=_aliases("name"))
    string_value: str | None = Field(default=None, validation_alias=_aliases("string_value"))
    int_value: int = Field(default=0, validation_alias=_aliases("int_value"))
    referencer_type: int | None = Field(default=None, validation_alias=_aliases("referencer_type"))
    referencer_id: int | None = Field(default=None, validation_alias=_aliases("referencer_id"))


class AddedDataObject(_Model):
    id: int = Field(validation_alias=_aliases("id"))


class LicenseKey(_Model):
    product_id: int = Field(validation_alias=_aliases("product_id"))
    id: int | None = Field(default=None, validation_alias=_aliases("id"))
    key: str = Field(validation_alias=_aliases("key"))
    created: datetime | None = Field(default=None, validation_alias=_aliases("created"))
    expires: datetime = Field(validation_alias=_aliases("expires"))
    period: int = Field(default=0, validation_alias=_aliases("period"))
    notes: str | None = Field(default=None, validation_alias=_aliases("notes"))
    block: bool = Field(default=False, validation_alias=_aliases("block"))
    customer: Customer | None = Field(default=None, validation_alias=_aliases("customer"))
    f1: bool = Field(default=False, validation_alias=_aliases("f1"))
    f2: bool = Field(default=False, validation_alias=_aliases("f2"))
    f3: bool = Field(default=False, validation_alias=_aliases("f3"))
    f4: bool = Field(default=False, validation_alias=_aliases("f4"))
    f5: bool = Field(default=False, validation_alias=_aliases("f5"))
    f6: bool = Field(default=False, validation_alias=_aliases("f6"))
    f7: bool = Field(default=False, validation_alias=_aliases("f7"))
    f8: bool = Field(default=False, validation_alias=_aliases("f8"))
    data_objects: tuple[DataObject, ...] = Field(
        default=(), validation_alias=_aliases("data_objects")
    )

    _dates = field_validator("created", "expires", mode="before")(_utc)

    @field_validator("data_objects", mode="before")
    @classmethod
    def _hidden_is_empty(cls, value: Any) -> Any:
        # A field hidden by FieldsToReturn is null, not absent.
        return () if value is None else value


class CreatedKey(_Model):
    key: str = Field(validation_alias=_aliases("key"))
    # CreateKey with NewCustomer / AddOrUseExistingCustomer: the customer it linked.
    customer_id: int | None = Field(default=None, validation_alias=_aliases("customer_id"))


class KeysPage(_Model):
    """One page of GetKeys: up to 99 keys, and how many pages the query has."""

    # The reference's table names the list LicenseKeys, its example licenseKey.
    keys: tuple[LicenseKey, ...] = Field(
        default=(),
        validation_alias=AliasChoices("licenseKeys", "LicenseKeys", "licenseKey", "LicenseKey"),
    )
    total: int = Field(default=0, validation_alias=_aliases("total"))
    page_count: int = Field(default=0, validation_alias=_aliases("page_count"))


class AddedCustomer(_Model):
    customer_id: int = Field(validation_alias=_aliases("customer_id"))
    portal_link: str | None = Field(default=None, validation_alias=_aliases("portal_link"))

    # The customer secret is returned too; it is deliberately not kept.


class LicenseTemplate(_Model):
    id: int = Field(validation_alias=_aliases("id"))
    name: str | None = Field(default=None, validation_alias=_aliases("name"))
    product_id: int = Field(validation_alias=_aliases("product_id"))
    parameters: str | None = Field(default=None, validation_alias=_aliases("parameters"))

    def _calls(self) -> list[tuple[str, dict[str, Any]]]:
        """``parameters`` as calls: v1 (an object) is one CreateKey; v2 a list of calls,
        CreateKey first. What is not readable is no call."""
        if not self.parameters:
            return []
        try:
            params: Any = json.loads(self.parameters)
        except ValueError:
            return []
        if isinstance(params, dict):
            return [("CreateKey", params)]
        if not isinstance(params, list):
            return []
        return [
            (str(c.get("APIMethodName") or ""), c["Parameters"])
            for c in params
            if isinstance(c, dict) and isinstance(c.get("Parameters"), dict)
        ]

    def key_parameters(self) -> dict[str, Any]:
        """The template's CreateKey parameters."""
        return next((p for m, p in self._calls() if m == "CreateKey"), {})

    _key_parameters = key_parameters

    def follow_up(self) -> list[tuple[str, dict[str, Any]]]:
        """A v2 template's calls after CreateKey, as (method path, parameters without
        ``Key``): each applied once the key exists. Only AddDataObjectToKey is known;
        another method is refused by :meth:`unsupported`."""
        return [
            ("data/" + m, {k: v for k, v in p.items() if k != "Key"})
            for m, p in self._calls()
            if m == "AddDataObjectToKey"
        ]

    def unsupported(self) -> list[str]:
        """The calls of a v2 template the bridge cannot make for it."""
        return [m for m, _ in self._calls() if m not in ("CreateKey", "AddDataObjectToKey")]

    def period(self) -> int | None:
        """The template's license period in days."""
        period = self._key_parameters().get("Period")
        return period if isinstance(period, int) else None

    @property
    def notes(self) -> str | None:
        """The notes a key made from this template starts with."""
        notes = self._key_parameters().get("Notes")
        return notes if isinstance(notes, str) else None


class Event(_Model):
    id: int = Field(validation_alias=_aliases("id"))
    product_id: int | None = Field(default=None, validation_alias=_aliases("product_id"))
    key: str | None = Field(default=None, validation_alias=_aliases("key"))
    machine_code: str | None = Field(default=None, validation_alias=_aliases("machine_code"))
    feature_name: str | None = Field(default=None, validation_alias=_aliases("feature_name"))
    event_name: str | None = Field(default=None, validation_alias=_aliases("event_name"))
    time: int = Field(validation_alias=_aliases("time"))
    value: int | None = Field(default=None, validation_alias=_aliases("value"))
    currency: str | None = Field(default=None, validation_alias=_aliases("currency"))
    metadata: str | None = Field(default=None, validation_alias=_aliases("metadata"))


class WebApiLog(_Model):
    id: int = Field(validation_alias=_aliases("id"))
    product_id: int | None = Field(default=None, validation_alias=_aliases("product_id"))
    key: str | None = Field(default=None, validation_alias=_aliases("key"))
    time: int = Field(validation_alias=_aliases("time"))
    state: int = Field(validation_alias=_aliases("state"))
    # Anonymized by the service (a /24 or /48 network): whose call it was, roughly.
    ip: str | None = Field(default=None, validation_alias=_aliases("ip"))
    machine_code: str | None = Field(default=None, validation_alias=_aliases("machine_code"))
    friendly_name: str | None = Field(default=None, validation_alias=_aliases("friendly_name"))


class EventInput(_Model):
    """One entry of RegisterEvents' ``Events`` list."""

    event_name: str | None = None
    feature_name: str | None = None
    value: int | None = None
    currency: str | None = None
    time: int | None = None
    metadata: str | None = None

    def wire(self) -> dict[str, Any]:
        names = {
            "event_name": "EventName",
            "feature_name": "FeatureName",
            "value": "Value",
            "currency": "Currency",
            "time": "Time",
            "metadata": "Metadata",
        }
        return {names[k]: v for k, v in self.model_dump().items() if v is not None}


class TimeRange(_Model):
    """The ``Time`` filter of GetEvents and GetWebAPILog (unix seconds)."""

    gt: int | None = None
    gte: int | None = None
    lt: int | None = None
    lte: int | None = None

    def wire(self) -> str:
        return json.dumps(self.model_dump(exclude_none=True), separators=(",", ":"))
