"""EXTEND: the days an ExtendLicense adds so that the key expires at least at the target."""

from __future__ import annotations

import math

DAY = 86400


def extension_days(expires: int, target: int, now: int) -> int:
    """The days to extend a key expiring at ``expires`` towards ``target`` (unix
    seconds), 0 when it already reaches it. ExtendLicense adds to the expiry, or to
    today when the key has already expired, hence ``now``."""
    if expires >= target:
        return 0
    return math.ceil((target - max(expires, now)) / DAY)
