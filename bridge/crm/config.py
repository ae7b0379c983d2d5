"""The ``[crm.<source>]`` tables of the TOML file (the generic signed contract's sources),
and what every CRM's table shares: the lost policy (a pipeline's template:
``bridge.rules.templates.pipeline_template``)."""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, field_validator

from bridge.core.settings import ConfigTables

# What a CRM deal lost (or deleted) after it was won does to its key.
LostPolicy = Literal["block", "none"]
# A generic source's name: its URL part, its CRM_SECRET_<NAME>, its license refs' part.
SOURCE_NAME = r"^[a-z0-9_]{1,16}$"


class ProductMapping(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    template_id: int = Field(gt=0)


class CrmSourceConfig(BaseModel):
    """One ``[crm.<source>]`` table: a CRM that posts the generic signed contract."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default_template_id: int | None = Field(default=None, gt=0)
    lost_policy: LostPolicy = "none"
    product: tuple[ProductMapping, ...] = ()

    def template_for(self, template_id: int | None, product: str | None) -> tuple[int, str] | None:
        """``deal.template_id``, else the product table's, else the default."""
        if template_id is not None:
            return template_id, "deal"
        for p in self.product:
            if p.id == product:
                return p.template_id, "product"
        if self.default_template_id is not None:
            return self.default_template_id, "default"
        return None


class CrmConfig(RootModel[dict[str, CrmSourceConfig]]):
    """Every ``[crm.<source>]`` table, by source name."""

    TABLE: ClassVar[str] = "crm"

    @field_validator("root")
    @classmethod
    def _source_names(cls, value: dict[str, CrmSourceConfig]) -> dict[str, CrmSourceConfig]:
        for name in value:
            if not re.fullmatch(SOURCE_NAME, name):
                raise ValueError(f"[crm.{name}]: a source name is 1-16 of a-z, 0-9 and _")
        return value

    @classmethod
    def of(cls, config: ConfigTables) -> CrmConfig:
        return config.section(cls.TABLE, cls)

    def source(self, name: str) -> CrmSourceConfig:
        """Source ``name``'s table; its defaults when the file has none."""
        return self.root.get(name) or CrmSourceConfig()
