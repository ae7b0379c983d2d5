"""A stand-in for the HubSpot and Pipedrive APIs, for ``cryptolens-bridge dev``.

Any deal id is a won deal with a contact (or person) and a company (or organization) of
the same id, in each vendor's shape; a key written back is kept in memory and listed at
``GET /standin/state``. It checks no token: it is a local tool, never a test fake (the
tests' fakes, tests/fixtures/crm_fakes.py, check tokens and inject faults).

    python -m devtools.crm_standin --port 8791
"""

from __future__ import annotations

from typing import Any

import click
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

_writes: list[dict[str, Any]] = []


def _hubspot_object(kind: str, object_id: str) -> dict[str, Any]:
    if kind == "deals":
        return {
            "id": object_id,
            "properties": {
                "amount": "25.30",
                "deal_currency_code": "USD",
                "pipeline": "default",
                "dealstage": "closedwon",
            },
            "associations": {
                "contacts": {"results": [{"id": object_id, "type": "deal_to_contact"}]},
                "companies": {"results": [{"id": object_id, "type": "deal_to_company"}]},
            },
        }
    if kind == "contacts":
        email = f"hubspot-contact-{object_id}@example.com"
        return {
            "id": object_id,
            "properties": {"email": email, "firstname": "Ada", "lastname": "Lovelace"},
        }
    return {"id": object_id, "properties": {"name": f"Company {object_id}"}}


async def hubspot(request: Request) -> Response:
    kind, object_id = request.path_params["kind"], request.path_params["id"]
    if request.method == "PATCH":
        _writes.append({"crm": "hubspot", "deal": object_id, **(await request.json())})
    return JSONResponse(_hubspot_object(kind, object_id))


def _pipedrive_object(kind: str, object_id: int) -> dict[str, Any]:
    if kind == "deals":
        return {
            "id": object_id,
            "title": f"Deal {object_id}",
            "value": 100,
            "currency": "EUR",
            "status": "won",
            "pipeline_id": 1,
            "person_id": object_id,
            "org_id": object_id,
            "custom_fields": {},
        }
    if kind == "persons":
        email = f"pipedrive-person-{object_id}@example.com"
        return {
            "id": object_id,
            "name": "Grace Hopper",
            "emails": [{"value": email, "primary": True, "label": "work"}],
        }
    return {"id": object_id, "name": f"Organization {object_id}"}


async def pipedrive(request: Request) -> Response:
    kind, object_id = request.path_params["kind"], int(request.path_params["id"])
    if request.method == "PATCH":
        _writes.append({"crm": "pipedrive", "deal": object_id, **(await request.json())})
    return JSONResponse({"success": True, "data": _pipedrive_object(kind, object_id)})


async def state(_: Request) -> Response:
    return JSONResponse({"writes": _writes})


app = Starlette(
    routes=[
        Route("/crm/v3/objects/{kind}/{id}", hubspot, methods=["GET", "PATCH"]),
        Route("/api/v2/{kind}/{id:int}", pipedrive, methods=["GET", "PATCH"]),
        Route("/standin/state", state, methods=["GET"]),
    ]
)


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8791, show_default=True, type=int)
def main(host: str, port: int) -> None:
    """Serve the HubSpot and Pipedrive stand-in."""
    uvicorn.run(app, host=host, port=port, log_level="warning")


if __name__ == "__main__":
    main()
