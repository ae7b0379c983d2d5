"""The client's data object calls, against the sandbox over HTTP."""

from __future__ import annotations

import pytest

from bridge.cryptolens import CryptolensClient, Refused, make_http_client
from tests.fixtures.servers import SandboxServer

PRODUCT = 1001


async def test_add_raise_list_and_remove_a_counter(sandbox_server: SandboxServer) -> None:
    key = str(sandbox_server.call("key/CreateKeyFromTemplate", LicenseTemplateId=1)["key"])
    async with make_http_client() as http:
        client = CryptolensClient(http, token=sandbox_server.token, base_url=sandbox_server.url)
        object_id = await client.add_data_object_to_key(PRODUCT, key, name="usage", int_value=2)
        await client.increment_int_value_to_key(PRODUCT, key, name="usage", value=5)
        await client.decrement_int_value_to_key(PRODUCT, key, object_id=object_id, value=1)
        [counter] = await client.list_data_objects_to_key(PRODUCT, key, contains="usa")
        assert (counter.id, counter.name, counter.int_value) == (object_id, "usage", 6)
        await client.set_int_value_to_key(PRODUCT, key, name="usage", value=40)
        listed = await client.list_data_objects(show_all=True)
        assert [(o.id, o.int_value, o.referencer_type) for o in listed] == [(object_id, 40, 2)]
        await client.remove_data_object_to_key(PRODUCT, key, name="usage")
        assert await client.list_data_objects_to_key(PRODUCT, key) == []
        with pytest.raises(Refused):
            await client.increment_int_value_to_key(PRODUCT, key, name="usage", value=1)
