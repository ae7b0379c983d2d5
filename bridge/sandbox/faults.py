"""Fault injection: what the network and the service do to a call besides answering it.

Kinds, and whether the call took effect:

    fail_before   HTTP 503, not applied
    rate_limit    HTTP 429 with Retry-After, not applied
    lost_request  HTTP 504, not applied (a proxy gave up before the service saw the call):
                  the client cannot tell it from ``lost_reply``
    lost_reply    applied, then HTTP 504 (a proxy that gave up waiting)
    drop          applied, then the connection closes mid-body

A scripted fault (``FaultConfig.script``) is consumed by the next call of its method and
wins over the random rates, so a test can force exactly one lost reply where it wants it.
"""

from __future__ import annotations

import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal, cast, get_args

FaultKind = Literal["fail_before", "rate_limit", "lost_request", "lost_reply", "drop"]
LostReplyMode = Literal["504", "drop", "mixed"]
BEFORE: frozenset[FaultKind] = frozenset({"fail_before", "rate_limit", "lost_request"})


@dataclass
class ScriptedFault:
    method: str  # "key/ExtendLicense" (any casing, the group may be left out) or "*"
    fault: FaultKind

    def matches(self, method: str) -> bool:
        wanted = self.method.strip("/").lower()
        return wanted in ("*", method.lower()) or wanted == method.rsplit("/", 1)[-1].lower()


@dataclass
class FaultConfig:
    latency_ms: float = 0.0
    # Applied first, then the reply waits: a client that gives up (or dies) in between
    # leaves an effect it never heard of — the crash and read-timeout case.
    reply_delay_ms: float = 0.0
    fail_rate: float = 0.0
    lost_reply_rate: float = 0.0
    lost_reply_mode: LostReplyMode = "504"
    rate_limit: float = 0.0  # calls per second; 0 = unlimited
    seed: int | None = None
    script: list[ScriptedFault] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "latency_ms": self.latency_ms,
            "reply_delay_ms": self.reply_delay_ms,
            "fail_rate": self.fail_rate,
            "lost_reply_rate": self.lost_reply_rate,
            "lost_reply_mode": self.lost_reply_mode,
            "rate_limit": self.rate_limit,
            "seed": self.seed,
            "script": [{"method": s.method, "fault": s.fault} for s in self.script],
        }


class FaultError(ValueError):
    """A fault setting that cannot be applied (bad rate, unknown kind)."""


def _rate(data: dict[str, Any], name: str) -> float:
    value = data[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise FaultError(f"{name} must be a number from 0 to 1")
    return float(value)


def _non_negative(data: dict[str, Any], name: str) -> float:
    value = data[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise FaultError(f"{name} must be a number >= 0")
    return float(value)


def _script(items: Any) -> list[ScriptedFault]:
    if not isinstance(items, list):
        raise FaultError("script must be a list of {method, fault}")
    script = []
    for item in items:
        if not isinstance(item, dict) or item.get("fault") not in get_args(FaultKind):
            raise FaultError(f"script entries need a fault in {get_args(FaultKind)}: {item!r}")
        script.append(ScriptedFault(str(item.get("method", "*")), cast(FaultKind, item["fault"])))
    return script


class Faults:
    """The live fault settings of one app, changed at run time by ``POST /sandbox/faults``."""

    def __init__(self, config: FaultConfig | None = None) -> None:
        self.config = FaultConfig()
        self._rng = random.Random()
        self._window: deque[float] = deque()
        self.update((config or FaultConfig()).as_json())

    def update(self, data: dict[str, Any]) -> None:
        """Apply the given fields only; ``script`` replaces the queue, ``seed`` restarts
        the random generator. Validates everything before changing anything."""
        unknown = set(data) - set(FaultConfig().as_json())
        if unknown:
            raise FaultError(f"unknown fault settings: {sorted(unknown)}")
        changes: dict[str, Any] = {}
        for name in ("fail_rate", "lost_reply_rate"):
            if name in data:
                changes[name] = _rate(data, name)
        for name in ("latency_ms", "reply_delay_ms", "rate_limit"):
            if name in data:
                changes[name] = _non_negative(data, name)
        if "lost_reply_mode" in data:
            if data["lost_reply_mode"] not in get_args(LostReplyMode):
                raise FaultError(f"lost_reply_mode must be one of {get_args(LostReplyMode)}")
            changes["lost_reply_mode"] = data["lost_reply_mode"]
        if "seed" in data:
            if data["seed"] is not None and not isinstance(data["seed"], int):
                raise FaultError("seed must be an integer or null")
            changes["seed"] = data["seed"]
        if "script" in data:
            changes["script"] = _script(data["script"])
        for name, value in changes.items():
            setattr(self.config, name, value)
        if "seed" in changes:
            self._rng.seed(self.config.seed)

    def plan(self, method: str) -> FaultKind | None:
        """The fault for this call, decided as it arrives. The first scripted fault for
        the method wins; otherwise the rate limit, then the random rates."""
        for i, scripted in enumerate(self.config.script):
            if scripted.matches(method):
                del self.config.script[i]
                return scripted.fault
        if self.config.rate_limit and self._over_rate():
            return "rate_limit"
        if self.config.fail_rate and self._rng.random() < self.config.fail_rate:
            return "fail_before"
        if self.config.lost_reply_rate and self._rng.random() < self.config.lost_reply_rate:
            mode = self.config.lost_reply_mode
            if mode == "mixed":
                mode = self._rng.choice(("504", "drop"))
            return "drop" if mode == "drop" else "lost_reply"
        return None

    def _over_rate(self) -> bool:
        # A sliding one-second window of the calls let through.
        now = time.monotonic()
        while self._window and now - self._window[0] >= 1.0:
            self._window.popleft()
        if len(self._window) >= self.config.rate_limit:
            return True
        self._window.append(now)
        return False
