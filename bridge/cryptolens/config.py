"""The ``[cryptolens]`` table of the TOML file: how the bridge makes keys per product."""

from __future__ import annotations

from typing import ClassVar

from bridge.core.settings import Section


class CryptolensConfig(Section):
    TABLE: ClassVar[str] = "cryptolens"

    # Products whose keys the bridge makes with CreateKeyFromTemplate (for an access token
    # feature-locked to a template) instead of CreateKey with its tag in the notes.
    create_from_template: tuple[int, ...] = ()
    # Products in which nobody but the bridge creates keys. A lost CreateKeyFromTemplate
    # reply is settled (by the new untagged keys) only there; elsewhere a person decides.
    sole_key_maker: tuple[int, ...] = ()
