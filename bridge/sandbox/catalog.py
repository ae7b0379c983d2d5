"""customer/*, licensetemplate/* and product/* methods: what keys are made from and for."""

from __future__ import annotations

import json
from typing import Any

from bridge.sandbox.call import Call, Handler, ok
from bridge.sandbox.config import Template
from bridge.sandbox.keys import customer_json
from bridge.sandbox.params import INCORRECT_INPUT, Refusal
from bridge.sandbox.store_records import SQLITE_INTEGERS, CustomerRecord

PORTAL_LINK = "https://app.cryptolens.io/Portal/Customer/{id}"  # shape only; not served
PRODUCT_CREATED = "2024-01-01T00:00:00"
FEATURE_DEFINITIONS: dict[str, Any] = {
    "f1": {"name": "Time-Limited (F1)", "type": 1},
    "f2": {"name": "Trial (F2)", "type": 2},
    **{f"f{i}": {"name": f"Feature {i}", "type": 0} for i in range(3, 9)},
    "allLicensesTimeLimited": False,
    "blockExpiredLicenses": False,
}


def _bounded(call: Call, name: str, limit: int) -> str:
    value = call.params.string(name)
    if len(value) > limit:
        raise Refusal(INCORRECT_INPUT)
    return value


def add_customer(call: Call) -> dict[str, Any]:
    name = _bounded(call, "Name", 100)
    email = _bounded(call, "Email", 100)
    company = _bounded(call, "CompanyName", 100)
    notes = _bounded(call, "Notes", 1000)
    association = call.params.boolean("EnableCustomerAssociation")
    call.params.boolean("AllowActivationManagement")
    call.params.boolean("AllowMultipleUserAssociation")
    customer = call.store.add_customer(name, email, company, notes, call.now)
    fields: dict[str, Any] = {"customerId": customer.id}
    if association:
        fields["portalLink"] = PORTAL_LINK.format(id=customer.id)
    return ok(None, **fields, secret=customer.secret)


def _customer_json(customer: CustomerRecord) -> dict[str, Any]:
    """GetCustomers' Customer model: the key's customer object and the extended fields."""
    return {
        **customer_json(customer),
        "enableCustomerAssociation": False,
        "maxNoOfDevices": 0,
        "secret": customer.secret,
        "notes": customer.notes,
    }


def _by_id(call: Call, customer_id: int) -> CustomerRecord | None:
    # The store refuses ids SQLite cannot hold, as SQL did; no customer has one.
    return call.store.customer(customer_id) if customer_id in SQLITE_INTEGERS else None


def _candidates(
    call: Call, search: str | None, with_id: bool, customer_id: int | None
) -> list[CustomerRecord]:
    """The customers, in id order, less some that the filters below would drop anyway:
    the filters stay the definition of the result, this only spares them a full scan."""
    if customer_id:
        found = _by_id(call, customer_id)
        return [found] if found else []
    if not search:
        return call.store.customers()
    candidates = call.store.customers_containing(search.lower())
    digits = search.strip()
    # More than 19 digits is no id, and int() refuses thousands of them.
    if with_id and digits.isascii() and digits.isdigit() and len(digits) < 20:
        by_id = _by_id(call, int(digits))
        if by_id is not None and all(c.id != by_id.id for c in candidates):
            candidates = sorted([*candidates, by_id], key=lambda c: c.id)
    return candidates


def get_customers(call: Call) -> dict[str, Any]:
    search = call.params.text("Search")
    with_id = call.params.boolean("IncludeIdInSearch")
    customer_id = call.params.integer("CustomerId", 0)
    limit = call.params.integer("Limit", 0)
    newest_first = call.params.boolean("SortByCreatedDescending")
    if limit is None or limit < 0:
        raise Refusal(INCORRECT_INPUT)
    customers = _candidates(call, search, with_id, customer_id)
    if customer_id:
        customers = [c for c in customers if c.id == customer_id]
    if search:
        needle = search.lower()
        customers = [
            c
            for c in customers
            if any(needle in f.lower() for f in (c.name, c.company_name, c.email, c.secret))
            or (with_id and search.strip() == str(c.id))
        ]
    if newest_first:
        customers.sort(key=lambda c: (c.created, c.id), reverse=True)
    if limit:
        customers = customers[:limit]
    return ok(
        None,
        customers=[_customer_json(c) for c in customers],
        resellerCustomers=[],
        visibleCustomers=[],
    )


def template_parameters(template: Template) -> str:
    """The template as GetLicenseTemplates shows it: v1, one CreateKey parameter set; v2
    (a template with data objects), a list of calls, CreateKey first, each data object an
    AddDataObjectToKey on ``[key]``."""
    parameters: dict[str, Any] = {
        "ProductId": template.product_id,
        "Period": template.period,
        **{f"F{i + 1}": on for i, on in enumerate(template.features)},
        "Notes": template.notes or None,
        "Block": False,
        "CustomerId": 0,
        "TrialActivation": template.trial_activation,
        "MaxNoOfMachines": template.max_no_of_machines,
        "AllowedMachines": None,
    }
    if not template.data_objects:
        return json.dumps(parameters, separators=(",", ":"))
    calls: list[dict[str, Any]] = [{"APIMethodName": "CreateKey", "Parameters": parameters}]
    calls += [
        {
            "APIMethodName": "AddDataObjectToKey",
            "Parameters": {
                "Name": o.name,
                "StringValue": o.string_value,
                "IntValue": o.int_value,
                "CheckForDuplicates": False,
                "ProductId": template.product_id,
                "Key": "[key]",
            },
        }
        for o in template.data_objects
    ]
    return json.dumps(calls, separators=(",", ":"))


def get_license_templates(call: Call) -> dict[str, Any]:
    lock = call.token.product_id
    templates = [
        {
            "id": t.id,
            "name": t.name,
            "productId": t.product_id,
            "parameters": template_parameters(t),
        }
        for t in call.config.templates
        if not lock or t.product_id == lock
    ]
    return ok(None, licenseTemplates=templates)


def get_products(call: Call) -> dict[str, Any]:
    lock = call.token.product_id
    products = [
        {
            "id": p.id,
            "name": p.name,
            "creationDate": PRODUCT_CREATED,
            "description": "",
            "password": "",
            "isPublic": False,
            "keyAlgorithm": 1,
            "featureDefinitions": FEATURE_DEFINITIONS,
            "dataObjects": [],
        }
        for p in call.config.products
        if not lock or p.id == lock
    ]
    return ok(None, products=products)


HANDLERS: dict[str, Handler] = {
    "customer/AddCustomer": add_customer,
    "customer/GetCustomers": get_customers,
    "licensetemplate/GetLicenseTemplates": get_license_templates,
    "product/GetProducts": get_products,
}
