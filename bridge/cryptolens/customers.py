"""Customer methods of Web API 3 (customer/*)."""

from __future__ import annotations

from bridge.cryptolens.models import AddedCustomer, Customer
from bridge.cryptolens.transport import Param, Transport


class CustomerMethods(Transport):
    """customer/AddCustomer and customer/GetCustomers."""

    async def add_customer(
        self, *, name: str, email: str, company_name: str, notes: str | None = None
    ) -> AddedCustomer:
        method = "customer/AddCustomer"
        params: dict[str, Param] = {
            "Name": name,
            "Email": email,
            "CompanyName": company_name,
            "Notes": notes,
        }
        body = await self.call(method, params)
        return self._model(method, AddedCustomer, body)

    async def get_customers(
        self, *, search: str | None = None, customer_id: int | None = None, limit: int | None = None
    ) -> list[Customer]:
        method = "customer/GetCustomers"
        params: dict[str, Param] = {"Search": search, "CustomerId": customer_id, "Limit": limit}
        body = await self.call(method, params)
        return self._models(method, Customer, body.get("customers", body.get("Customers")))
