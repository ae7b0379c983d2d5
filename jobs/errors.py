"""How a run of an intent stops short of done, other than a Cryptolens error.

    RunStopped
    ├── NeedsReview   the read-back cannot tell what happened: a person decides, nothing
    │                 is sent again (status needs_review, the reason kept with the intent)
    ├── LeaseLost     the run no longer owns its intent or one of its leases: it stops
    │                 without sending or writing anything (another run, or a person, has it)
    ├── Busy          another run holds a license, product or customer this run needs:
    │                 tried again shortly, not counted as an attempt
    └── NotYet        the run must wait for something the clock brings: a call of another
                      run that may still land at Cryptolens, or the other start events of
                      a subscription; tried again after ``retry_in`` seconds, not counted

The runner (``jobs.runner``) maps each to the intent's next status in one place.
"""

from __future__ import annotations


class RunStopped(Exception):
    """Base class: the run ends without an effect, and says why."""


class NeedsReview(RunStopped):
    pass


class LeaseLost(RunStopped):
    pass


class Busy(RunStopped):
    pass


class NotYet(RunStopped):
    def __init__(self, reason: str, retry_in: float) -> None:
        super().__init__(reason)
        self.retry_in = max(retry_in, 0.01)
