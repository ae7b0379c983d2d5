"""Data objects of Web API 3 (data/*): the named integers and strings on a key, a
product or the account."""

from __future__ import annotations

from bridge.cryptolens.models import AddedDataObject, DataObject
from bridge.cryptolens.transport import Param, Transport


class DataObjectMethods(Transport):
    """data/*: add, change, remove and list data objects."""

    async def add_data_object_to_key(
        self,
        product_id: int,
        key: str,
        *,
        name: str,
        int_value: int = 0,
        string_value: str | None = None,
        check_for_duplicates: bool = False,
    ) -> int:
        """Add a data object to the key; returns its id."""
        method = "data/AddDataObjectToKey"
        params: dict[str, Param] = {
            "ProductId": product_id,
            "Key": key,
            "Name": name,
            "IntValue": int_value,
            "StringValue": string_value,
            "CheckForDuplicates": check_for_duplicates or None,
        }
        body = await self.call(method, params)
        return self._model(method, AddedDataObject, body).id

    async def increment_int_value_to_key(
        self, product_id: int, key: str, *, value: int, name: str | None = None, object_id: int = 0
    ) -> None:
        """Add |value| to the key's object ``object_id`` (or, if 0, the one named ``name``)."""
        await self.call(
            "data/IncrementIntValueToKey", _object(product_id, key, object_id, name, value)
        )

    async def decrement_int_value_to_key(
        self, product_id: int, key: str, *, value: int, name: str | None = None, object_id: int = 0
    ) -> None:
        await self.call(
            "data/DecrementIntValueToKey", _object(product_id, key, object_id, name, value)
        )

    async def set_int_value_to_key(
        self, product_id: int, key: str, *, value: int, name: str | None = None, object_id: int = 0
    ) -> None:
        await self.call("data/SetIntValueToKey", _object(product_id, key, object_id, name, value))

    async def remove_data_object_to_key(
        self, product_id: int, key: str, *, name: str | None = None, object_id: int = 0
    ) -> None:
        await self.call(
            "data/RemoveDataObjectToKey", _object(product_id, key, object_id, name, None)
        )

    async def list_data_objects_to_key(
        self, product_id: int, key: str, *, contains: str | None = None
    ) -> list[DataObject]:
        """The key's data objects (names containing ``contains``, if given)."""
        method = "data/ListDataObjectsToKey"
        params: dict[str, Param] = {"ProductId": product_id, "Key": key, "Contains": contains}
        body = await self.call(method, params)
        return self._models(method, DataObject, body.get("dataObjects", body.get("DataObjects")))

    async def list_data_objects(
        self,
        *,
        referencer_type: int = 0,
        referencer_id: int = 0,
        contains: str | None = None,
        show_all: bool = False,
    ) -> list[DataObject]:
        """Objects of the account (type 0), a product (1) or a key by its global id (2);
        ``show_all``: every object the token may see, with its referencer."""
        method = "data/ListDataObjects"
        params: dict[str, Param] = {
            "ReferencerType": referencer_type,
            "ReferencerId": referencer_id,
            "Contains": contains,
            "ShowAll": show_all or None,
        }
        body = await self.call(method, params)
        return self._models(method, DataObject, body.get("dataObjects", body.get("DataObjects")))


def _object(
    product_id: int, key: str, id_: int, name: str | None, value: int | None
) -> dict[str, Param]:
    """A key's data object named by id, else (id 0) by name, as the ...ToKey paths take it."""
    return {
        "ProductId": product_id,
        "Key": key,
        "Id": id_ or None,
        "Name": None if id_ else name,
        "IntValue": value,
    }
