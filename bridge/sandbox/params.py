"""Request parameters as the service reads them, and the refusals it answers with.

Names are case-insensitive, values arrive as strings (query string or form body), and an
empty value counts as absent: the official SDK sends ``Key=""`` and ``Amount=""`` for
"not given".
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

ACCESS_DENIED = "Access denied."
INCORRECT_INPUT = "The input parameters were incorrect."
NO_PRODUCT = "Could not find the product."
NO_KEY = "Could not find the key."
NO_TEMPLATE = "Could not find the license template."
NOTES_TOO_LONG = "The notes field cannot be more than 500 characters."
CUSTOMER_DISSOCIATED = "Customer not found, so current key no longer references any customer."
FEATURE_LOCKED = (
    "The specified template id is not allowed because feature lock. Please use an access "
    "token with feature lock set to 0 or set it to the id of the license template."
)
BAD_EVENTS = "Events string is not correctly formatted json string."
BAD_TIME = "The 'Time' parameter has the wrong format."
NO_STRIPE = "No Stripe payment processor was set up."
NO_SUBSCRIPTION_ITEM = "The subscription item id could not be found."
# Data object methods (reference: AddDataObject ... RemoveDataObject, "Errors").
NOT_PERMITTED = "Not enough permission."
NOT_PERMITTED_PRODUCT = "Not enough permission and/or product not found."
NOT_PERMITTED_KEY = "Not enough permission and/or key not found."
BAD_REFERENCER_TYPE = (
    "Incorrect 'ReferencerType'. It can either be 0 (for a User), 1 (for a Product) and 2 "
    "(for a Key)."
)
NAME_TOO_LONG = "The 'Name' should have the size of max 100 chars."
STRING_VALUE_TOO_LONG = "The 'StringValue' should have the size of max 10000 chars."
DATA_OBJECT_LIMIT = "The limit of the number of data objects was achieved."
DUPLICATE_NAME = "Data object with the same name already exists."
STEP_NOT_ALLOWED = "The increment/decrement value not allowed by security settings."
INT32_LIMIT = "Cannot increment/decrement value since the limit was reached for an int32."

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


class Refusal(Exception):
    """The call is answered ``{"result": 1, "message": ...}`` with HTTP 200."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Params:
    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = {name.lower(): value for name, value in values.items()}

    def has(self, name: str) -> bool:
        return name.lower() in self._values

    def text(self, name: str) -> str | None:
        value = self._values.get(name.lower())
        return value if value else None

    def string(self, name: str, default: str = "") -> str:
        return self.text(name) or default

    def integer(self, name: str, default: int | None = None) -> int | None:
        value = self.text(name)
        if value is None:
            return default
        try:
            return int(value.strip())
        except ValueError:
            raise Refusal(INCORRECT_INPUT) from None

    def required_int(self, name: str) -> int:
        value = self.integer(name)
        if value is None:
            raise Refusal(INCORRECT_INPUT)
        return value

    def boolean(self, name: str, default: bool = False) -> bool:
        value = self.text(name)
        if value is None:
            return default
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise Refusal(INCORRECT_INPUT)

    def json(self, name: str, error: str = INCORRECT_INPUT) -> Any:
        value = self.text(name)
        if value is None:
            return None
        try:
            return json.loads(value)
        except ValueError:
            raise Refusal(error) from None
