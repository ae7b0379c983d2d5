"""Analytics methods of Web API 3 (ai/*): events registered and read back, and the Web
API log (which calls the service saw)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from bridge.cryptolens.models import Event, EventInput, TimeRange, WebApiLog
from bridge.cryptolens.transport import Param, Transport


class AnalyticsMethods(Transport):
    """ai/RegisterEvent(s), ai/GetEvents and ai/GetWebAPILog."""

    async def register_event(
        self,
        *,
        product_id: int | None = None,
        key: str | None = None,
        machine_code: str | None = None,
        feature_name: str | None = None,
        event_name: str | None = None,
        value: int | None = None,
        currency: str | None = None,
        metadata: str | None = None,
    ) -> None:
        params: dict[str, Param] = {
            "ProductId": product_id,
            "Key": key,
            "MachineCode": machine_code,
            "FeatureName": feature_name,
            "EventName": event_name,
            "Value": value,
            "Currency": currency,
            "Metadata": metadata,
        }
        await self.call("ai/RegisterEvent", params)

    async def register_events(
        self,
        events: Sequence[EventInput],
        *,
        product_id: int | None = None,
        key: str | None = None,
        machine_code: str | None = None,
    ) -> None:
        params: dict[str, Param] = {
            "ProductId": product_id,
            "Key": key,
            "MachineCode": machine_code,
            "Events": json.dumps([e.wire() for e in events], separators=(",", ":")),
        }
        await self.call("ai/RegisterEvents", params)

    async def get_events(
        self,
        *,
        product_id: int | None = None,
        key: str | None = None,
        metadata: str | None = None,
        time: int | TimeRange | None = None,
        limit: int | None = None,
        starting_after: int | None = None,
        ending_before: int | None = None,
    ) -> list[Event]:
        method = "ai/GetEvents"
        params: dict[str, Param] = {
            "ProductId": product_id,
            "Key": key,
            "Metadata": metadata,
            "Time": time.wire() if isinstance(time, TimeRange) else time,
            "Limit": limit,
            "StartingAfter": starting_after,
            "EndingBefore": ending_before,
        }
        body = await self.call(method, params)
        return self._models(method, Event, body.get("events", body.get("Events")))

    async def get_web_api_log(
        self,
        *,
        product_id: int | None = None,
        key: str | None = None,
        states: Sequence[int] | None = None,
        time: TimeRange | None = None,
        limit: int | None = None,
        starting_after: int | None = None,
        ending_before: int | None = None,
    ) -> list[WebApiLog]:
        method = "ai/GetWebAPILog"
        params: dict[str, Param] = {
            "ProductId": product_id,
            "Key": key,
            "States": json.dumps(list(states)) if states else None,
            "Time": time.wire() if time else None,
            "Limit": limit,
            "StartingAfter": starting_after,
            "EndingBefore": ending_before,
        }
        body = await self.call(method, params)
        return self._models(method, WebApiLog, body.get("logs", body.get("Logs")))
