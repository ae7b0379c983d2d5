"""Which license template a key creation gets: the pure parts of the choice.

The choice itself is asked in one place, ``bridge.template_choice.choose_template``
(the worker's key creation, the dry run): the planner's hint (:func:`named`) first, else
the ref's provider hook (a CRM: :func:`pipeline_template`; Stripe: metadata, price
mapping, line items), and, while a start event still to come could name a richer one,
a wait of at most ``BRIDGE_START_WAIT_SECONDS`` (:func:`wait_left`) before the best in
hand or the default.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Protocol


class Choice(NamedTuple):
    template_id: int
    source: str  # what named it: "session", "purchase", "mapping", "pipeline", "default"...


class Pipeline(Protocol):
    @property
    def id(self) -> str | int: ...
    @property
    def template_id(self) -> int | None: ...


def named(params: Mapping[str, Any]) -> Choice | None:
    """The template the planner (or a merged start hint) named, and its source."""
    if params.get("template_id") is None:
        return None
    return Choice(int(params["template_id"]), str(params.get("template_source") or "purchase"))


def pipeline_template(
    pipelines: Sequence[Pipeline], pipeline: str | int | None, default: int | None
) -> Choice | None:
    """A CRM deal's template: its pipeline's (HubSpot's and Pipedrive's rule), else the
    source's default, else None."""
    for p in pipelines:
        if p.id == pipeline and p.template_id is not None:
            return Choice(p.template_id, "pipeline")
    return Choice(default, "default") if default is not None else None


def wait_left(waited: float, wait_seconds: float) -> float:
    """Seconds a creation still waits for the purchase's other start events, having
    waited ``waited`` since it was stored (0: decide now, with the default if need be)."""
    return max(wait_seconds - waited, 0.0)
