"""An async client for the part of Cryptolens Web API 3 that the bridge uses: the
transport (:mod:`bridge.cryptolens.transport`) with the methods of each area of the API.
"""

from __future__ import annotations

from bridge.cryptolens.analytics import AnalyticsMethods
from bridge.cryptolens.customers import CustomerMethods
from bridge.cryptolens.data_objects import DataObjectMethods
from bridge.cryptolens.keys import KeyMethods


class CryptolensClient(KeyMethods, DataObjectMethods, AnalyticsMethods, CustomerMethods):
    """Typed calls to Web API 3. Every method raises only :class:`CryptolensError`s."""


__all__ = ["CryptolensClient"]
