"""BLOCK / UNBLOCK: the verdict (``bridge.core.blocks.decide``, which the store's reads
share) and the call it makes on a key as Cryptolens has it now."""

from __future__ import annotations

from bridge.core.blocks import Stored, Verdict, decide

__all__ = ["BLOCK_KEY", "UNBLOCK_KEY", "Stored", "Verdict", "decide", "key_call"]

BLOCK_KEY = "key/BlockKey"
UNBLOCK_KEY = "key/UnblockKey"


def key_call(verdict: Verdict, blocked: bool) -> str | None:
    """The call the verdict makes on a key whose flag is ``blocked`` now: none when the
    verdict leaves the key alone or the flag is already the verdict's."""
    if verdict.block is None or verdict.block == blocked:
        return None
    return BLOCK_KEY if verdict.block else UNBLOCK_KEY
