"""What the store refuses: a change that contradicts what the database holds.

    BridgeError (bridge.core.errors)
    └── Permanent
        ├── KeyHeld        the key is another license's, or listed in an open review:
        │                  never given (the worker parks the intent for a person)
        └── NotReplayable  an operator's replay that does not apply: not failed or in
            │              review, or a key creation without the key found
            └── UnknownIntent  no intent by that id

Raised only before anything is written: the transaction that raises changes nothing.
"""

from __future__ import annotations

from bridge.core.errors import Permanent


class KeyHeld(Permanent):
    """The key is held by another license, or listed in an open review."""


class NotReplayable(Permanent):
    """A replay refused, with the reason for the operator."""


class UnknownIntent(NotReplayable):
    """No intent by that id."""
