"""data/* methods: data objects (the reference's "additional variables") on a license key.

Served: the key-specific paths (``...ToKey``: ``ProductId`` and ``Key`` name the key, then
``Id`` or else ``Name`` names one of its objects) and the general ListDataObjects. Every
path of a method needs the same permission: the method's name without the suffix
(``IncrementIntValue`` for ``data/IncrementIntValueToKey``). Each call that gets past the
checks logs its 80** state, with the object's id (DOId) and the IntValue passed
(DOIntValue).
"""

from __future__ import annotations

from typing import Any

from bridge.sandbox import codes
from bridge.sandbox.call import Call, Handler, ok
from bridge.sandbox.params import (
    BAD_REFERENCER_TYPE,
    DATA_OBJECT_LIMIT,
    DUPLICATE_NAME,
    INCORRECT_INPUT,
    INT32_LIMIT,
    NAME_TOO_LONG,
    NOT_PERMITTED,
    NOT_PERMITTED_KEY,
    NOT_PERMITTED_PRODUCT,
    STEP_NOT_ALLOWED,
    STRING_VALUE_TOO_LONG,
    Refusal,
)
from bridge.sandbox.store_records import (
    KEY,
    PRODUCT,
    SQLITE_INTEGERS,
    USER,
    DataObjectRecord,
    KeyRecord,
)

INT32 = range(-(2**31), 2**31)
# AddDataObject's own parameters and errors say 100; the DataObject model says 10.
NAME_LIMIT = 100
STRING_LIMIT = 10000
# The reference lists no message for a bound reached (EnableBound), so the closest one.
BOUND_REACHED = INT32_LIMIT


def data_object_json(record: DataObjectRecord, *, referencer: bool = False) -> dict[str, Any]:
    """The DataObject model; ListDataObjects with ShowAll puts the referencer first."""
    fields: dict[str, Any] = {}
    if referencer:
        fields = {"referencerId": record.referencer_id, "referencerType": record.referencer_type}
    return {
        **fields,
        "id": record.id,
        "name": record.name,
        "stringValue": record.string_value,
        "intValue": record.int_value,
    }


def _key(call: Call) -> KeyRecord:
    """The key named by ``ProductId`` and ``Key``, within the token's locks; the data
    methods answer their own messages, not the key methods' "Could not find the key."."""
    product_id = call.params.required_int("ProductId")
    key = call.params.text("Key")
    if key is None:
        raise Refusal(INCORRECT_INPUT)
    token = call.token
    if token.product_id and product_id != token.product_id:
        raise Refusal(NOT_PERMITTED_PRODUCT)
    if call.config.product(product_id) is None:
        raise Refusal(NOT_PERMITTED_PRODUCT)
    if token.key and key != token.key:
        raise Refusal(NOT_PERMITTED_KEY)
    record = call.store.find_key(product_id, key.strip())
    if record is None:
        raise Refusal(NOT_PERMITTED_KEY)
    return record


def _object(call: Call, record: KeyRecord) -> DataObjectRecord:
    """The key's object named by ``Id`` or, when Id is 0 or absent, by ``Name`` (the
    oldest of that name: the SDK says names work "provided there are no duplicates")."""
    object_id = call.params.integer("Id", 0) or 0
    name = call.params.text("Name")
    if object_id:
        found = call.store.data_object(object_id)
        if found is None or (found.referencer_type, found.referencer_id) != (
            KEY,
            record.global_id,
        ):
            raise Refusal(NOT_PERMITTED)
        return found
    if name is None:
        raise Refusal(INCORRECT_INPUT)
    for candidate in call.store.data_objects((KEY, record.global_id)):
        if candidate.name == name:
            return candidate
    raise Refusal(NOT_PERMITTED)


def _int32(call: Call, name: str) -> int:
    value = call.params.integer(name, 0) or 0
    if value not in INT32:
        raise Refusal(INCORRECT_INPUT)
    return value


def add_data_object_to_key(call: Call) -> dict[str, Any]:
    name = call.params.text("Name")
    string_value = call.params.text("StringValue")
    int_value = _int32(call, "IntValue")
    check_duplicates = call.params.boolean("CheckForDuplicates")
    record = _key(call)
    if name is not None and len(name) > NAME_LIMIT:
        raise Refusal(NAME_TOO_LONG)
    if string_value is not None and len(string_value) > STRING_LIMIT:
        raise Refusal(STRING_VALUE_TOO_LONG)
    limit = call.config.data_object_limit
    if limit and call.store.count_data_objects() >= limit:
        raise Refusal(DATA_OBJECT_LIMIT)
    if check_duplicates and any(
        o.name == name for o in call.store.data_objects((KEY, record.global_id))
    ):
        raise Refusal(DUPLICATE_NAME)
    added = call.store.add_data_object(KEY, record.global_id, name, string_value, int_value)
    call.store.log(
        record, codes.DATA_OBJECT_ADDED, call.ip, call.now, do_id=added.id, do_int_value=int_value
    )
    return ok(None, id=added.id)


def _step(call: Call, sign: int, state: int) -> dict[str, Any]:
    """Increment (sign 1) or decrement (-1) by |IntValue|: the sign of the constant is not
    taken into account; the token's feature lock, when set, bounds the constant; a result
    outside int32 or past an enabled bound is refused and changes nothing."""
    passed = call.params.integer("IntValue", 0) or 0
    enable_bound = call.params.boolean("EnableBound")
    bound = call.params.integer("Bound", 0) or 0
    record = _key(call)
    target = _object(call, record)
    step = abs(passed)
    if call.token.feature_lock and step > call.token.feature_lock:
        raise Refusal(STEP_NOT_ALLOWED)
    value = target.int_value + sign * step
    if value not in INT32:
        raise Refusal(INT32_LIMIT)
    if enable_bound and (value > bound if sign > 0 else value < bound):
        raise Refusal(BOUND_REACHED)
    call.store.update_data_object(target, int_value=value)
    call.store.log(record, state, call.ip, call.now, do_id=target.id, do_int_value=passed)
    return ok(None)


def increment_int_value_to_key(call: Call) -> dict[str, Any]:
    return _step(call, 1, codes.INT_INCREMENTED)


def decrement_int_value_to_key(call: Call) -> dict[str, Any]:
    return _step(call, -1, codes.INT_DECREMENTED)


def set_int_value_to_key(call: Call) -> dict[str, Any]:
    value = call.params.integer("IntValue", 0) or 0
    record = _key(call)
    target = _object(call, record)
    if value not in INT32:
        value = 0  # Remarks: "beyond the limits of an int32, zero will be assigned"
    call.store.update_data_object(target, int_value=value)
    call.store.log(record, codes.INT_SET, call.ip, call.now, do_id=target.id, do_int_value=value)
    return ok(None)


def set_string_value_to_key(call: Call) -> dict[str, Any]:
    string_value = call.params.text("StringValue")
    record = _key(call)
    target = _object(call, record)
    if string_value is not None and len(string_value) > STRING_LIMIT:
        raise Refusal(STRING_VALUE_TOO_LONG)
    call.store.update_data_object(target, string_value=string_value)
    call.store.log(record, codes.STRING_SET, call.ip, call.now, do_id=target.id)
    return ok(None)


def remove_data_object_to_key(call: Call) -> dict[str, Any]:
    record = _key(call)
    target = _object(call, record)
    call.store.remove_data_object(target)
    call.store.log(record, codes.DATA_OBJECT_REMOVED, call.ip, call.now, do_id=target.id)
    return ok(None)


def list_data_objects_to_key(call: Call) -> dict[str, Any]:
    contains = call.params.text("Contains")
    record = _key(call)
    objects = call.store.data_objects((KEY, record.global_id), contains)
    call.store.log(record, codes.DATA_OBJECTS_LISTED, call.ip, call.now)
    return ok(None, dataObjects=[data_object_json(o) for o in objects])


def _key_by_global_id(call: Call, global_id: int) -> KeyRecord | None:
    return call.store.key_by_id(global_id) if global_id in SQLITE_INTEGERS else None


def _key_visible(call: Call, record: KeyRecord | None) -> bool:
    token = call.token
    return (
        record is not None
        and (not token.product_id or record.product_id == token.product_id)
        and (not token.key or record.key == token.key)
    )


def _visible(call: Call, record: DataObjectRecord) -> bool:
    """Whether the token's locks let it see ``record`` (ShowAll narrows to them)."""
    token = call.token
    if not token.product_id and not token.key:
        return True
    if record.referencer_type == KEY:
        return _key_visible(call, _key_by_global_id(call, record.referencer_id))
    if record.referencer_type == PRODUCT:
        return not token.key and record.referencer_id == token.product_id
    return False


def list_data_objects(call: Call) -> dict[str, Any]:
    """The general listing: the objects of the user (0), a product (1) or a key (2, by its
    global id), or with ShowAll every object the token may see, with its referencer."""
    referencer_type = call.params.integer("ReferencerType", USER)
    referencer_id = call.params.integer("ReferencerId", 0) or 0
    contains = call.params.text("Contains")
    show_all = call.params.boolean("ShowAll")
    if referencer_type not in (USER, PRODUCT, KEY):
        raise Refusal(BAD_REFERENCER_TYPE)
    token = call.token
    record: KeyRecord | None = None
    product_id = 0
    if show_all:
        objects = [o for o in call.store.data_objects(None, contains) if _visible(call, o)]
    else:
        if referencer_type == USER:
            if token.product_id or token.key:
                raise Refusal(NOT_PERMITTED)
            referencer_id = 0
        elif referencer_type == PRODUCT:
            if token.key:
                raise Refusal(NOT_PERMITTED)
            if token.product_id and referencer_id != token.product_id:
                raise Refusal(NOT_PERMITTED_PRODUCT)
            if call.config.product(referencer_id) is None:
                raise Refusal(NOT_PERMITTED_PRODUCT)
            product_id = referencer_id
        else:
            record = _key_by_global_id(call, referencer_id)
            if not _key_visible(call, record):
                raise Refusal(NOT_PERMITTED_KEY)
        objects = call.store.data_objects((referencer_type, referencer_id), contains)
    call.store.log(record, codes.DATA_OBJECTS_LISTED, call.ip, call.now, product_id=product_id)
    return ok(None, dataObjects=[data_object_json(o, referencer=show_all) for o in objects])


HANDLERS: dict[str, Handler] = {
    "data/AddDataObjectToKey": add_data_object_to_key,
    "data/ListDataObjectsToKey": list_data_objects_to_key,
    "data/ListDataObjects": list_data_objects,
    "data/IncrementIntValueToKey": increment_int_value_to_key,
    "data/DecrementIntValueToKey": decrement_int_value_to_key,
    "data/SetIntValueToKey": set_int_value_to_key,
    "data/SetStringValueToKey": set_string_value_to_key,
    "data/RemoveDataObjectToKey": remove_data_object_to_key,
}

# The access token permission each path needs: its method's, shared by all its paths.
PERMISSIONS: dict[str, str] = {
    name: name.removeprefix("data/").removesuffix("ToKey") for name in HANDLERS
}
