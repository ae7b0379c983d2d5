"""Key methods of Web API 3: create (from a template, or with a template's parameters),
read, change, block, record usage; and the license templates keys are made from."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge.cryptolens.errors import OutcomeUnknown
from bridge.cryptolens.models import CreatedKey, KeysPage, LicenseKey, LicenseTemplate
from bridge.cryptolens.transport import Param, Transport


class KeyMethods(Transport):
    """key/*, product/GetKeys, subscription/RecordUsage and licensetemplate/*."""

    async def create_key_from_template(self, template_id: int) -> CreatedKey:
        method = "key/CreateKeyFromTemplate"
        body = await self.call(method, {"LicenseTemplateId": template_id})
        return self._model(method, CreatedKey, body)

    async def create_key(
        self,
        product_id: int,
        parameters: Mapping[str, Any],
        *,
        notes: str,
        email: str | None = None,
        name: str | None = None,
        company: str | None = None,
    ) -> CreatedKey:
        """CreateKey with a template's CreateKey parameters (``Period``, ``F1``..``F8``,
        ``MaxNoOfMachines``, ...; its ``Notes`` and customer are replaced by ours),
        ``notes``, and, given ``email``, the buyer (AddOrUseExistingCustomer: the
        customer with that email, or a new one; needs the AddCustomer permission too)."""
        method = "key/CreateKey"
        params: dict[str, Param] = {
            name_: _template_value(value)
            for name_, value in parameters.items()
            if name_ in CREATE_KEY_PARAMETERS
        }
        params |= {"ProductId": product_id, "Notes": notes}
        if email:
            params |= {
                "AddOrUseExistingCustomer": True,
                "Email": email,
                "Name": name or "",
                "CompanyName": company or "",
            }
        body = await self.call(method, params)
        return self._model(method, CreatedKey, body)

    async def get_keys(
        self, product_id: int, search_query: str | None = None, page: int = 1
    ) -> KeysPage:
        """One page (from 1) of the product's keys that ``search_query`` selects, 99 a
        page in id order; ``page_count`` says how many pages there are."""
        method = "product/GetKeys"
        params: dict[str, Param] = {
            "ProductId": product_id,
            "SearchQuery": search_query,
            "Page": page,
        }
        body = await self.call(method, params)
        return self._model(method, KeysPage, body)

    async def get_key(self, product_id: int, key: str) -> LicenseKey:
        method = "key/GetKey"
        body = await self.call(method, {"ProductId": product_id, "Key": key, "ModelVersion": 3})
        data = body.get("licenseKey", body.get("LicenseKey"))
        if isinstance(data, str):  # SignMethod=1 answers base64; we never ask for it
            raise OutcomeUnknown(method, "signed string reply not supported")
        return self._model(method, LicenseKey, data)

    async def extend_license(self, product_id: int, key: str, days: int) -> None:
        params: dict[str, Param] = {"ProductId": product_id, "Key": key, "NoOfDays": days}
        await self.call("key/ExtendLicense", params)

    async def change_customer(self, product_id: int, key: str, customer_id: int) -> None:
        params: dict[str, Param] = {"ProductId": product_id, "Key": key, "CustomerId": customer_id}
        await self.call("key/ChangeCustomer", params)

    async def change_notes(self, product_id: int, key: str, notes: str) -> None:
        await self.call("key/ChangeNotes", {"ProductId": product_id, "Key": key, "Notes": notes})

    async def block_key(self, product_id: int, key: str) -> bool:
        """Block the key; True when it changed, False when it was blocked already."""
        body = await self.call("key/BlockKey", {"ProductId": product_id, "Key": key})
        return _changed(body)

    async def unblock_key(self, product_id: int, key: str) -> bool:
        body = await self.call("key/UnblockKey", {"ProductId": product_id, "Key": key})
        return _changed(body)

    # -- subscription ----------------------------------------------------------------------

    async def record_usage(self, product_id: int, key: str, amount: int) -> None:
        params: dict[str, Param] = {"ProductId": product_id, "Key": key, "Amount": amount}
        await self.call("subscription/RecordUsage", params)

    # -- license templates -----------------------------------------------------------------

    async def get_license_templates(self) -> list[LicenseTemplate]:
        method = "licensetemplate/GetLicenseTemplates"
        body = await self.call(method, {})
        templates = body.get("licenseTemplates", body.get("LicenseTemplates"))
        return self._models(method, LicenseTemplate, templates)


# A template's CreateKey parameters that the bridge passes on (GetLicenseTemplates'
# ``parameters``): the key's own settings; never its customer or notes.
CREATE_KEY_PARAMETERS = frozenset(
    {
        "Period",
        *(f"F{i}" for i in range(1, 9)),
        "Block",
        "TrialActivation",
        "MaxNoOfMachines",
        "AllowedMachines",
        "ResellerId",
    }
)


def _template_value(value: Any) -> Param:
    return value if isinstance(value, str | int | bool) or value is None else str(value)


def _changed(body: Mapping[str, Any]) -> bool:
    message = body.get("message", body.get("Message"))
    return not (isinstance(message, str) and message.strip().lower() == "not changed")
