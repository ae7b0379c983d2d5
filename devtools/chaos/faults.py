"""The faults a chaos run adds beside the sandbox's own: bursts of slow replies, and
another client of the vendor creating keys of the same product."""

from __future__ import annotations

import contextlib
import random
import threading

import httpx

from devtools.workload import PERIODS


class ForeignKeys(threading.Thread):
    """Another client of the vendor (its back office, another integration) creating keys
    of the product from the bridge's network, at random moments, of random templates."""

    def __init__(self, sandbox: str, rng: random.Random) -> None:
        super().__init__(daemon=True)
        self.url = f"{sandbox}/sandbox/keys"
        self.rng = rng
        self.stopped = threading.Event()
        self.keys: set[str] = set()

    def run(self) -> None:
        while not self.stopped.wait(self.rng.uniform(0.1, 0.8)):
            template = self.rng.choice(sorted(PERIODS))
            with contextlib.suppress(httpx.HTTPError):
                made = httpx.post(self.url, json={"template_id": template}, timeout=5)
                if made.status_code == 200:
                    self.keys.add(str(made.json()["key"]))

    def stop(self) -> None:
        self.stopped.set()
        self.join(10)


class SlowReplies(threading.Thread):
    """Bursts of replies delayed to around the worker's read timeout (applied first,
    answered late or never heard: the outcome the worker must read back)."""

    def __init__(self, sandbox: str, rng: random.Random, read_timeout: float) -> None:
        super().__init__(daemon=True)
        self.url = f"{sandbox}/sandbox/faults"
        self.rng = rng
        self.read_timeout = read_timeout
        self.stopped = threading.Event()
        self.bursts = 0

    def _set(self, delay_ms: float) -> None:
        with contextlib.suppress(httpx.HTTPError):
            httpx.post(self.url, json={"reply_delay_ms": delay_ms}, timeout=5)

    def run(self) -> None:
        while not self.stopped.wait(self.rng.uniform(1.5, 4.0)):
            self._set(self.read_timeout * 1000 * self.rng.uniform(0.8, 1.3))
            self.bursts += 1
            if self.stopped.wait(self.rng.uniform(0.5, 1.5)):
                break
            self._set(0)
        self._set(0)

    def stop(self) -> None:
        self.stopped.set()
        self.join(10)
