"""key/* methods and subscription/RecordUsage: everything that changes or reads a key.

Each change appends a Web API Log entry with the service's state code. BlockKey and
UnblockKey log only when they change something ("Not changed" is not a change); the other
methods log every successful call, as they cannot tell.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from bridge.sandbox import codes, search
from bridge.sandbox.call import Call, Handler, iso, ok
from bridge.sandbox.data import data_object_json
from bridge.sandbox.params import (
    ACCESS_DENIED,
    CUSTOMER_DISSOCIATED,
    FEATURE_LOCKED,
    INCORRECT_INPUT,
    NO_STRIPE,
    NO_SUBSCRIPTION_ITEM,
    NO_TEMPLATE,
    NOTES_TOO_LONG,
    Refusal,
)
from bridge.sandbox.store_records import KEY, CustomerRecord, KeyRecord, NewKey

DAY = 86400
PAGE_SIZE = 99  # GetKeys: "only 99 will be returned on the first page"
# The sandbox product's feature definitions: F1 marks a time-limited license, F2 a trial.
TIME_LIMITED_FEATURE = 1
TRIAL_FEATURE = 2


def customer_json(customer: CustomerRecord) -> dict[str, Any]:
    return {
        "id": customer.id,
        "name": customer.name,
        "email": customer.email,
        "companyName": customer.company_name,
        "created": iso(customer.created),
    }


def license_key_json(call: Call, record: KeyRecord) -> dict[str, Any]:
    customer = call.store.customer(record.customer_id) if record.customer_id else None
    return {
        "productId": record.product_id,
        "id": record.id,
        "key": record.key,
        "created": iso(record.created),
        "expires": iso(record.expires),
        "period": record.period,
        **{f"f{i}": record.feature(i) for i in range(1, 9)},
        "notes": record.notes,
        "block": bool(record.block),
        "globalId": record.global_id,
        "customer": customer_json(customer) if customer else None,
        "activatedMachines": [],
        "trialActivation": bool(record.trial_activation),
        "maxNoOfMachines": record.max_no_of_machines,
        "allowedMachines": "",
        "dataObjects": [
            data_object_json(o) for o in call.store.data_objects((KEY, record.global_id))
        ],
        "reseller": None,
        "signDate": iso(call.now),
        "signature": None,
    }


def metadata_json(record: KeyRecord, now: int) -> dict[str, Any]:
    time_limited = record.feature(TIME_LIMITED_FEATURE)
    expired = time_limited and record.expires <= now
    reason = 2 if record.block else 1 if expired else 0
    return {
        "activatedMachines": 0,
        "licenseStatus": {
            "isValid": reason == 0,
            "reasonForInvalidity": reason,
            "trial": record.feature(TRIAL_FEATURE),
            "timeLimited": time_limited,
            "timeLeft": max(0, (record.expires - now) // DAY) if time_limited else 0,
        },
        "usedFloatingMachines": 0,
        "signature": None,
    }


def create_key_from_template(call: Call) -> dict[str, Any]:
    template_id = call.params.required_int("LicenseTemplateId")
    if call.token.key:  # a key-locked token works on its key only
        raise Refusal(ACCESS_DENIED)
    if call.token.feature_lock and template_id != call.token.feature_lock:
        raise Refusal(FEATURE_LOCKED)
    template = call.config.template(template_id)
    if template is None:
        raise Refusal(NO_TEMPLATE)
    if call.token.product_id and template.product_id != call.token.product_id:
        raise Refusal(ACCESS_DENIED)
    record = call.store.create_key(template, call.now)
    call.store.log(record, codes.KEY_CREATED, call.ip, call.now)
    raw = {"key": record.key, "result": "Success", "message": None}
    return ok(None, key=record.key, rawResponse=json.dumps(raw, separators=(",", ":")))


def create_key(call: Call) -> dict[str, Any]:
    """CreateKey: the parameters given (a template's, when the caller copies them), the
    notes, and a customer: ``CustomerId``, or ``NewCustomer`` / ``AddOrUseExistingCustomer``
    with AddCustomer's ``Name``, ``Email``, ``CompanyName`` (the latter reuses the first
    customer whose email is ``Email``; an existing customer is not updated)."""
    if call.token.key:
        raise Refusal(ACCESS_DENIED)
    product = call.product()
    period = call.params.integer("Period", 0)
    machines = call.params.integer("MaxNoOfMachines", 0)
    if period is None or period < 0 or machines is None or machines < 0:
        raise Refusal(INCORRECT_INPUT)
    features = tuple(call.params.boolean(f"F{i}") for i in range(1, 9))
    notes = call.params.string("Notes")
    if len(notes) > 500:
        raise Refusal(NOTES_TOO_LONG)
    block = call.params.boolean("Block")
    trial = call.params.boolean("TrialActivation")
    if call.params.integer("NoOfKeys", 1) != 1:
        raise Refusal(INCORRECT_INPUT)  # the sandbox makes one key a call
    new = call.params.boolean("NewCustomer")
    reuse = call.params.boolean("AddOrUseExistingCustomer")
    customer_id = call.params.integer("CustomerId", 0) or None
    customer: CustomerRecord | None = None
    if new or reuse:
        if customer_id is not None or not call.token.allows("AddCustomer"):
            raise Refusal(ACCESS_DENIED if customer_id is None else INCORRECT_INPUT)
        name, email = call.params.string("Name"), call.params.string("Email")
        company = call.params.string("CompanyName")
        if max(len(name), len(email), len(company)) > 100:
            raise Refusal(INCORRECT_INPUT)
        if reuse and email:
            customer = next((c for c in call.store.customers() if c.email == email), None)
        if customer is None:
            customer = call.store.add_customer(name, email, company, "", call.now)
    elif customer_id is not None:
        customer = call.store.customer(customer_id)
        if customer is None:
            raise Refusal(INCORRECT_INPUT)
    spec = NewKey(
        product_id=product.id,
        period=period,
        features=features,
        notes=notes,
        block=block,
        customer_id=customer.id if customer else None,
        max_no_of_machines=machines,
        trial_activation=trial,
    )
    # For inspection only (``/sandbox/state``; the API never shows it): the one template
    # of the product whose parameters the key has, as a copy of its CreateKey parameters.
    matching = [
        t.id
        for t in call.config.templates
        if (t.product_id, t.period, t.features, t.max_no_of_machines, t.trial_activation)
        == (product.id, period, features, machines, trial)
    ]
    if len(matching) == 1:
        spec = dataclasses.replace(spec, template_id=matching[0])
    record = call.store.new_key(spec, call.now)
    call.store.log(record, codes.KEY_CREATED, call.ip, call.now)
    if new or reuse:
        assert customer is not None
        return ok(None, key=record.key, customerId=customer.id)
    return ok(None, key=record.key)


def get_keys(call: Call) -> dict[str, Any]:
    """GetKeys: the product's keys, 99 a page (``Page`` from 1), in id order, filtered by
    ``SearchQuery`` (see :mod:`bridge.sandbox.search`)."""
    product = call.product()
    page = call.params.integer("Page", 1)
    if page is None or page < 1:
        raise Refusal(INCORRECT_INPUT)
    query = call.params.text("SearchQuery")
    selects = search.parse(query) if query is not None else None
    start = (page - 1) * PAGE_SIZE
    if selects is None:
        total = call.store.count_product_keys(product.id)
        shown = call.store.product_keys(product.id, start, PAGE_SIZE)
    else:
        keys = [k for k in call.store.product_keys(product.id) if selects(k)]
        total, shown = len(keys), keys[start : start + PAGE_SIZE]
    return ok(
        "",
        licenseKeys=[license_key_json(call, k) for k in shown],
        returned=len(shown),
        total=total,
        pageCount=(total + PAGE_SIZE - 1) // PAGE_SIZE,
    )


def get_key(call: Call) -> dict[str, Any]:
    record = call.key()
    with_metadata = call.params.boolean("Metadata")
    call.params.boolean("Sign")  # accepted; the sandbox has no RSA key, signature stays null
    body: dict[str, Any] = {"licenseKey": license_key_json(call, record)}
    if with_metadata:
        body["metadata"] = metadata_json(record, call.now)
    return ok("", **body)


def extend_license(call: Call) -> dict[str, Any]:
    record = call.key()
    days = call.params.integer("NoOfDays", 0)
    assert days is not None
    # Remarks: add to the expiry date while it has not passed, otherwise to today.
    start = record.expires if record.expires > call.now else call.now
    call.store.update_key(record, expires=start + days * DAY)
    call.store.log(record, codes.EXTENDED, call.ip, call.now)
    return ok("")


def change_customer(call: Call) -> dict[str, Any]:
    record = call.key()
    customer_id = call.params.integer("CustomerId", 0)
    customer = call.store.customer(customer_id) if customer_id else None
    call.store.update_key(record, customer_id=customer.id if customer else None)
    call.store.log(record, codes.CUSTOMER_CHANGED, call.ip, call.now)
    if customer is None:
        # Applied (the key is dissociated), yet reported as an error, as the service does.
        return {"result": 1, "message": CUSTOMER_DISSOCIATED}
    return ok("")


def change_notes(call: Call) -> dict[str, Any]:
    record = call.key()
    if not call.params.has("Notes"):
        raise Refusal(INCORRECT_INPUT)
    notes = call.params.string("Notes")
    if len(notes) > 500:
        raise Refusal(NOTES_TOO_LONG)
    call.store.update_key(record, notes=notes)
    call.store.log(record, codes.NOTES_CHANGED, call.ip, call.now)
    return ok(None)


def _set_block(call: Call, block: bool) -> dict[str, Any]:
    record = call.key()
    if bool(record.block) == block:
        return ok("Not changed")
    call.store.update_key(record, block=int(block))
    call.store.log(record, codes.BLOCKED if block else codes.UNBLOCKED, call.ip, call.now)
    return ok("Changed")


def block_key(call: Call) -> dict[str, Any]:
    return _set_block(call, True)


def unblock_key(call: Call) -> dict[str, Any]:
    return _set_block(call, False)


def record_usage(call: Call) -> dict[str, Any]:
    """Where the service would add a usage record to the key's Stripe subscription item,
    the sandbox counts. Only keys recurring billing linked to a subscription item have one
    (the sandbox: keys from a ``subscription`` template, or linked through
    ``POST /sandbox/subscription-items``)."""
    record = call.key()
    amount = call.params.integer("Amount", 0)
    if amount is None or amount < 0:
        raise Refusal(INCORRECT_INPUT)
    if not call.config.stripe_payment_processor:
        raise Refusal(NO_STRIPE)
    if not record.subscription_item:
        raise Refusal(NO_SUBSCRIPTION_ITEM)
    call.store.record_usage(record, amount, call.now)
    return ok("")


HANDLERS: dict[str, Handler] = {
    "key/CreateKeyFromTemplate": create_key_from_template,
    "key/CreateKey": create_key,
    "product/GetKeys": get_keys,
    "key/GetKey": get_key,
    "key/ExtendLicense": extend_license,
    "key/ChangeCustomer": change_customer,
    "key/ChangeNotes": change_notes,
    "key/BlockKey": block_key,
    "key/UnblockKey": unblock_key,
    "subscription/RecordUsage": record_usage,
}

# "They can all be accessed using an access token with 'Subscription' permission."
PERMISSIONS: dict[str, str] = {"subscription/RecordUsage": "Subscription"}
