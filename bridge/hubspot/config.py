"""The ``[hubspot]`` table of the TOML file: pipelines, their stages and templates."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from bridge.core.settings import Section
from bridge.crm.config import LostPolicy
from bridge.rules.templates import pipeline_template


class HubSpotPipeline(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    won_stages: tuple[str, ...] = ("closedwon",)
    lost_stages: tuple[str, ...] = ("closedlost",)
    template_id: int | None = Field(default=None, gt=0)


class HubSpotConfig(Section):
    TABLE: ClassVar[str] = "hubspot"

    default_template_id: int | None = Field(default=None, gt=0)
    key_property: str = Field(default="license_key", min_length=1)
    lost_policy: LostPolicy = "none"
    pipeline: tuple[HubSpotPipeline, ...] = ()

    def stages(self, kind: Literal["won", "lost"]) -> frozenset[str]:
        """Every pipeline's won (or lost) stages: HubSpot's stage ids are unique in a
        portal, and its webhook names the stage, not the pipeline. Without pipelines,
        the default pipeline's ``closedwon`` / ``closedlost``."""
        pipelines = self.pipeline or (HubSpotPipeline(id="default"),)
        if kind == "won":
            return frozenset(s for p in pipelines for s in p.won_stages)
        return frozenset(s for p in pipelines for s in p.lost_stages)

    def template_for(self, pipeline: str | None) -> tuple[int, str] | None:
        return pipeline_template(self.pipeline, pipeline, self.default_template_id)
