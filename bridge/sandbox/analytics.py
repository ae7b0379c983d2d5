"""ai/* methods: RegisterEvent(s), GetEvents, GetWebAPILog.

Lists page like Stripe's: ``StartingAfter`` gives ids after the cursor in ascending
order, ``EndingBefore`` ids before it in descending order; 0 means unset. With no cursor
the oldest entries come first (the reference: "ascending unless EndingBefore").
"""

from __future__ import annotations

import json
from typing import Any

from bridge.sandbox.call import Call, Handler, ok
from bridge.sandbox.params import (
    ACCESS_DENIED,
    BAD_EVENTS,
    BAD_TIME,
    INCORRECT_INPUT,
    NO_KEY,
    Refusal,
)
from bridge.sandbox.store_records import Page, TimeFilter

_TIME_KEYS = {"gt", "gte", "lt", "lte"}
_NAME_LIMIT = 100  # FeatureName and EventName


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def parse_time(text: str | None, error: str) -> TimeFilter | None:
    """``Time``: a unix timestamp (exact match) or ``{"gte": .., "lt": ..}``."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        raise Refusal(error) from None
    if _int(value) is not None:
        return {"eq": int(value)}
    if not isinstance(value, dict) or not value or not set(value) <= _TIME_KEYS:
        raise Refusal(error)
    bounds = {op: _int(bound) for op, bound in value.items()}
    if any(bound is None for bound in bounds.values()):
        raise Refusal(error)
    return {op: int(bound or 0) for op, bound in bounds.items()}


def _limit(call: Call, maximum: int) -> int:
    limit = call.params.integer("Limit", 0)
    if limit is None or limit < 0:
        raise Refusal(INCORRECT_INPUT)
    return min(limit or 10, maximum)


def _cursor(call: Call, name: str) -> int:
    return max(call.params.integer(name, 0) or 0, 0)


def _filters(call: Call) -> dict[str, Any]:
    """ProductId and Key filters, narrowed to the token's product and key locks."""
    product_id = call.params.integer("ProductId", 0) or 0
    key = call.params.text("Key")
    if key and not product_id:
        raise Refusal(INCORRECT_INPUT)  # "to filter on a license key, specify ProductId"
    if call.token.product_id:
        if product_id and product_id != call.token.product_id:
            raise Refusal(ACCESS_DENIED)
        product_id = call.token.product_id
    if call.token.key:
        if key and key != call.token.key:
            raise Refusal(ACCESS_DENIED)
        key = call.token.key
    equals: dict[str, Any] = {}
    if product_id:
        equals["product_id"] = product_id
    if key:
        equals["key"] = key
    return equals


def _origin(call: Call) -> tuple[int, str]:
    """The product and key an event is registered for, checked like a key method's."""
    product_id = call.params.integer("ProductId", 0) or 0
    key = call.params.text("Key")
    if key and not product_id:
        raise Refusal(INCORRECT_INPUT)
    if call.token.product_id and product_id != call.token.product_id:
        raise Refusal(ACCESS_DENIED)
    if call.token.key and key != call.token.key:
        raise Refusal(ACCESS_DENIED)
    if product_id:
        product = call.product(product_id)
        if key and call.store.find_key(product.id, key) is None:
            raise Refusal(NO_KEY)
    return product_id, key or ""


def _event(call: Call, product_id: int, key: str, fields: dict[str, Any]) -> dict[str, Any]:
    value = _int(fields.get("value", 0) or 0)
    time = _int(fields.get("time") or call.now)
    metadata = fields.get("metadata") or ""
    if value is None or time is None:
        raise Refusal(INCORRECT_INPUT)
    names = [str(fields.get(n) or "") for n in ("featurename", "eventname")]
    if any(len(name) > _NAME_LIMIT for name in names):
        raise Refusal(INCORRECT_INPUT)
    return {
        "product_id": product_id,
        "key": key,
        "machine_code": call.params.string("MachineCode"),
        "feature_name": names[0],
        "event_name": names[1],
        "value": value,
        "currency": str(fields.get("currency") or ""),
        "metadata": metadata if isinstance(metadata, str) else json.dumps(metadata),
        "time": time,
    }


def register_event(call: Call) -> dict[str, Any]:
    product_id, key = _origin(call)
    fields: dict[str, Any] = {
        name.lower(): call.params.text(name)
        for name in ("FeatureName", "EventName", "Currency", "Metadata")
    }
    fields["value"] = call.params.integer("Value", 0)
    call.store.add_event(_event(call, product_id, key, fields))
    return ok("")


def register_events(call: Call) -> dict[str, Any]:
    product_id, key = _origin(call)
    if call.params.text("Events") is None:
        raise Refusal(INCORRECT_INPUT)
    items = call.params.json("Events", BAD_EVENTS)
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise Refusal(BAD_EVENTS)
    events = [
        _event(call, product_id, key, {str(k).lower(): v for k, v in item.items()})
        for item in items
    ]
    for event in events:
        call.store.add_event(event)
    return ok("")


def _event_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "productId": row["product_id"],
        "key": row["key"],
        "machineCode": row["machine_code"],
        "featureName": row["feature_name"],
        "eventName": row["event_name"],
        "time": row["time"],
        "value": row["value"],
        "currency": row["currency"],
        "metadata": row["metadata"],
    }


def get_events(call: Call) -> dict[str, Any]:
    equals = _filters(call)
    metadata = call.params.text("Metadata")
    if metadata is not None:
        equals["metadata"] = metadata  # an exact match of the stored string
    query = Page(
        equals=equals,
        limit=_limit(call, 100),
        starting_after=_cursor(call, "StartingAfter"),
        ending_before=_cursor(call, "EndingBefore"),
        time=parse_time(call.params.text("Time"), BAD_TIME),
    )
    return ok(None, events=[_event_json(r) for r in call.store.page("events", query)])


def _states(call: Call) -> list[int] | None:
    value = call.params.json("States")
    if value is None:
        return None
    states = value if isinstance(value, list) else [value]
    if not all(_int(state) is not None for state in states):
        raise Refusal(INCORRECT_INPUT)
    return [int(state) for state in states]


def _log_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "productId": row["product_id"],
        "key": row["key"],
        "ip": row["ip"],
        "time": row["time"],
        "state": row["state"],
        "machineCode": row["machine_code"],
        "friendlyName": row["friendly_name"],
        "floatingExpires": None,
        "doIntValue": row["do_int_value"],
        "doId": row["do_id"],
    }


def get_web_api_log(call: Call) -> dict[str, Any]:
    equals = _filters(call)
    machine_code = call.params.text("MachineCode")
    if machine_code is not None:
        equals["machine_code"] = machine_code
    friendly_name = call.params.text("FriendlyName")
    # The reference lists no Time-format error for this method, only the generic one.
    time = parse_time(call.params.text("Time"), INCORRECT_INPUT)
    query = Page(
        equals=equals,
        limit=_limit(call, 1000),
        starting_after=_cursor(call, "StartingAfter"),
        ending_before=_cursor(call, "EndingBefore"),
        time=time,
        contains=("friendly_name", friendly_name) if friendly_name else None,
        states=_states(call),
        # "If you use the time filter, [the cursors] should be set to unix timestamp".
        cursor="time" if time else "id",
    )
    return ok(None, logs=[_log_json(r) for r in call.store.page("web_api_log", query)])


HANDLERS: dict[str, Handler] = {
    "ai/RegisterEvent": register_event,
    "ai/RegisterEvents": register_events,
    "ai/GetEvents": get_events,
    "ai/GetWebAPILog": get_web_api_log,
}
