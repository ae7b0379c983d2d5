"""Failed credential checks, throttled per client: growing waits, answered 429.

Guessing the admin token, the Pipedrive webhook's password or a usage token took one
request per guess at full speed. Now each (kind of credential, client) pair may fail
:data:`FREE` times; each failure past those refuses that pair for a wait that doubles
(1, 2, 4 ... s) up to :data:`CAP` seconds. While refused, a request is answered 429 with
``Retry-After`` and its credential is not even compared: a guess during the wait tells
nothing. Failures leak away (one per :data:`LEAK` seconds without a new one once the
wait is over), and a success by the same client forgets them at once.

Why per client and never global: a global lockout would let anyone lock the real sender
(Pipedrive, the reporting service, the operator) out by failing on purpose. Per client,
an attacker at another address only throttles itself, and the longest a shared address
(behind a proxy without ``BRIDGE_TRUST_FORWARDED``) is refused is :data:`CAP` seconds past
the attacker's last failure. IPv6 clients are keyed by their /64, which one host
usually owns whole: otherwise a new address per guess would dodge the count.

Why in this process's memory and not in Redis: a credential check runs on the webhook
path, which must answer (and store) while Redis is down, and a round trip per request
is the cost this guards against. So the budget is per web process: with ``serve
--workers N`` a client gets N x :data:`FREE` free failures and then N times the rate, still
about one guess per :data:`CAP` seconds per process instead of hundreds a second. Memory
is bounded: the least recently failed of more than :data:`MAX_CLIENTS` clients is
forgotten (which only ever gives a client back its free failures).
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter

from bridge.core.logs import get_logger

log = get_logger(__name__)

FREE = 5  # failures a client may make before it waits
BASE = 1.0  # seconds of the first wait
CAP = 60.0  # the longest wait, in seconds
LEAK = 60.0  # seconds without a failure that forget one
MAX_CLIENTS = 10_000  # (kind, client) pairs remembered

CHECKS = Counter(
    "bridge_credential_checks_failed_total",
    "Credential checks that failed (wrong, missing) or were throttled (429, not checked)",
    ["kind", "outcome"],
)


@dataclass(slots=True)
class _Record:
    failures: float  # leaks away over time
    at: float  # when ``failures`` was last brought up to date
    until: float  # refused until then (unix seconds)


class Throttle:
    """Per-(kind, client) failure counts; ``clock`` (unix seconds) is the test's to set."""

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        *,
        free: int = FREE,
        base: float = BASE,
        cap: float = CAP,
        leak: float = LEAK,
        max_clients: int = MAX_CLIENTS,
    ) -> None:
        self._clock = clock
        self._free, self._base, self._cap, self._leak = free, base, cap, leak
        self._max = max_clients
        self._records: OrderedDict[tuple[str, str], _Record] = OrderedDict()

    def wait(self, kind: str, client: str) -> int | None:
        """Whole seconds ``client`` must still wait before a ``kind`` check (counted as a
        throttled request), or None: check it."""
        record = self._records.get((kind, client))
        if record is None:
            return None
        left = record.until - self._clock()
        if left <= 0:
            return None
        CHECKS.labels(kind=kind, outcome="throttled").inc()
        return max(1, math.ceil(left))

    def failed(self, kind: str, client: str) -> None:
        """One failed check; past the free ones, the client waits (logged when it starts)."""
        now = self._clock()
        CHECKS.labels(kind=kind, outcome="failed").inc()
        key = (kind, client)
        record = self._records.pop(key, None) or _Record(0.0, now, 0.0)
        # Only quiet time past the wait leaks: waiting a wait out is no good behaviour.
        quiet = max(0.0, now - max(record.at, record.until))
        record.failures = max(0.0, record.failures - quiet / self._leak) + 1
        record.at = now
        self._records[key] = record  # the most recent at the end
        while len(self._records) > self._max:
            self._records.popitem(last=False)
        over = math.ceil(record.failures) - self._free
        if over <= 0:
            return
        delay = min(self._cap, self._base * 2 ** min(over - 1, 32))
        if record.until <= now:  # a new wait, not one extended: one line per start
            log.warning(
                "credential checks throttled",
                kind=kind,
                client=client,
                failures=math.ceil(record.failures),
                retry_after=delay,
            )
        record.until = now + delay

    def succeeded(self, kind: str, client: str) -> None:
        self._records.pop((kind, client), None)


def client_key(scope: Mapping[str, Any], trust_forwarded: bool) -> str:
    """Who is asking: the peer's address, or behind a trusted proxy the address it
    appended to ``X-Forwarded-For`` (the last value: the ones before it are the client's
    to write). IPv6 addresses by their /64."""
    address = ""
    if trust_forwarded:
        values = [
            v.decode("latin-1")
            for k, v in scope.get("headers", [])
            if k.lower() == b"x-forwarded-for"
        ]
        if values:
            address = values[-1].rsplit(",", 1)[-1].strip()
    if not address:
        client = scope.get("client")
        address = str(client[0]) if client else "unknown"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)
