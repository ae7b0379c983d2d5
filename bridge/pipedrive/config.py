"""The ``[pipedrive]`` table of the TOML file: pipelines and templates, the key's field."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from bridge.core.settings import Section
from bridge.crm.config import LostPolicy
from bridge.rules.templates import pipeline_template


class PipedrivePipeline(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: int = Field(gt=0)
    template_id: int | None = Field(default=None, gt=0)


class PipedriveConfig(Section):
    TABLE: ClassVar[str] = "pipedrive"

    default_template_id: int | None = Field(default=None, gt=0)
    # The key of the deal custom field the key is written to (a 40-hex hash in Pipedrive);
    # none: no write-back.
    key_field: str | None = Field(default=None, min_length=1)
    lost_policy: LostPolicy = "none"
    pipeline: tuple[PipedrivePipeline, ...] = ()

    def template_for(self, pipeline: int | None) -> tuple[int, str] | None:
        return pipeline_template(self.pipeline, pipeline, self.default_template_id)
