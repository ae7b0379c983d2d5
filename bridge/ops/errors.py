"""What an operator command refuses, by why: the CLI and the admin page both catch these.

    BridgeError                  (bridge.core.errors)
    └── OpsError                 an operator's request that cannot be done as asked
        ├── UnknownRecord            no intent (or event) by that id
        └── NotReplayable            the intent's status or the arguments forbid the replay:
                                     done or pending, --key on no key creation, a key
                                     another license holds, a key creation in review
                                     without --key

``bridge.cli`` turns them into click's ``Error: ...`` (exit status 1), the admin page into
a 404 or 409; neither the operations nor the page know of click.
"""

from __future__ import annotations

from bridge.core.errors import BridgeError


class OpsError(BridgeError):
    """An operator's request that cannot be done as asked; the message says why."""


class UnknownRecord(OpsError):
    """No intent or event by that id."""


class NotReplayable(OpsError):
    """The intent may not be replayed as asked (its status, or the ``key`` given)."""
