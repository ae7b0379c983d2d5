"""``cryptolens-bridge chaos``: exactly once under redeliveries, reordering, faults and kills.

One run: a fresh database (a SQLite file, or a throwaway PostgreSQL database created next
to ``--database-url`` and dropped afterwards), a private ``redis-server``, the sandbox
failing 10% of calls before applying them and losing 5% of replies after (a 504 or a cut
connection), slow replies near the worker's read timeout in bursts, the web app, and a
worker that is SIGKILLed at random moments and started again. The workload
(``devtools.workload``): one-off purchases and subscriptions with renewals,
refunds, disputes, cancellations and unpaid spells, every event delivered three times,
all shuffled and posted concurrently. Beside the bridge, another client of the vendor
creates keys of the same product (every template) from the same network while replies
are lost (``POST /sandbox/keys``).

Once no intent is pending, running or waiting, the sandbox's state and the database are
checked against what each purchase must have become: exactly one key, of its template,
linked to its buyer, expiring where its payments say, blocked exactly where it ended,
one analytics event per payment, no key held by two licenses, every foreign key left as
its maker made it, and no key nobody accounts for.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import secrets
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bridge.core.signing import sign
from bridge.store.db import migrate
from devtools import procs, workload
from devtools.bench.stack import SECRET, bridge_env, machine, stack
from devtools.workload import DAY, PERIODS, Purchase

DELIVERIES = 3
POST_CONCURRENCY = 8
# The worker's settings: realistic in kind, short so that a run takes seconds.
WORKER_ENV = {
    "CRYPTOLENS_CONNECT_TIMEOUT": "1",
    "CRYPTOLENS_READ_TIMEOUT": "2",
    "BRIDGE_LEASE_SECONDS": "8",
    "BRIDGE_SETTLE_SECONDS": "1",
    "BRIDGE_START_WAIT_SECONDS": "3",
    "BRIDGE_MAX_ATTEMPTS": "40",
    "BRIDGE_RETRY_BASE_SECONDS": "0.2",
    "BRIDGE_RETRY_CAP_SECONDS": "2",
    "BRIDGE_RELAY_INTERVAL": "2",
    "BRIDGE_WORKER_SHUTDOWN_WAIT": "1",
}


@dataclass
class RunResult:
    seed: int
    database: str
    passed: bool = False
    seconds: float = 0.0
    kills: int = 0
    kills_busy: int = 0  # while some intent was unfinished
    deliveries: int = 0
    keys: int = 0
    intents: dict[str, int] = field(default_factory=dict)
    sandbox_calls: int = 0
    failures: list[str] = field(default_factory=list)
    needs_review: list[str] = field(default_factory=list)
    foreign_keys: int = 0  # made by the other client during the run


# -- the database --------------------------------------------------------------------------


@contextlib.contextmanager
def fresh_database(workdir: Path, admin_url: str | None) -> Any:
    """A migrated, empty database for one run: SQLite in ``workdir``, or a new PostgreSQL
    database on the server of ``admin_url`` (dropped afterwards)."""
    if admin_url is None:
        url = f"sqlite:///{workdir / 'bridge.db'}"
        migrate(url)
        yield url
        return
    import psycopg

    admin = make_url(admin_url)
    name = f"chaos_{secrets.token_hex(4)}"
    conninfo = (
        f"host={admin.host} port={admin.port or 5432} user={admin.username} "
        f"dbname={admin.database or 'postgres'}"
    )
    if admin.password:
        conninfo += f" password={admin.password}"
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        url = admin.set(database=name).render_as_string(hide_password=False)
        migrate(url)
        yield url
    finally:
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _rows(database_url: str, sql: str, params: dict[str, Any] | None = None) -> list[Any]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return list(connection.execute(text(sql), params or {}))
    finally:
        engine.dispose()


def _unfinished(database_url: str) -> int:
    sql = "SELECT COUNT(*) FROM intent WHERE status IN ('pending', 'running', 'waiting')"
    return int(_rows(database_url, sql)[0][0])


# -- the run -------------------------------------------------------------------------------


async def _post_all(url: str, bodies: list[bytes]) -> list[int]:
    gate = asyncio.Semaphore(POST_CONCURRENCY)
    async with httpx.AsyncClient(timeout=30) as client:

        async def post(body: bytes) -> int:
            async with gate:
                headers = {
                    "Content-Type": "application/json",
                    "Stripe-Signature": sign(body, SECRET),
                }
                for _ in range(5):
                    with contextlib.suppress(httpx.TransportError):
                        response = await client.post(url, content=body, headers=headers)
                        return response.status_code
                    await asyncio.sleep(0.2)
                return 0

        return await asyncio.gather(*(post(b) for b in bodies))


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


def run_once(
    seed: int,
    *,
    database_url: str | None = None,
    keep: Path | None = None,
    one_offs: int = 20,
    subscriptions: int = 8,
    timeout: float = 90.0,
) -> RunResult:
    """One chaos run, checked; never raises for what it finds (see ``RunResult``)."""
    rng = random.Random(seed)
    result = RunResult(seed, "postgresql" if database_url else "sqlite")
    started = time.monotonic()
    with stack(keep) as st, fresh_database(st.workdir, database_url) as db_url:
        config = st.workdir / "bridge.toml"
        config.write_text(workload.BRIDGE_CONFIG)
        sandbox_config = st.workdir / "sandbox.toml"
        sandbox_config.write_text(workload.SANDBOX_CONFIG)
        redis_url = st.start_redis()
        sandbox_port, web_port = procs.free_port(), procs.free_port()
        sandbox = f"http://127.0.0.1:{sandbox_port}"
        env = bridge_env(db_url, f"{redis_url}/0", config, f"{sandbox}/api/")
        env.update(WORKER_ENV)
        proc = st.python(
            "sandbox",
            ["-m", "bridge", "sandbox", "--port", str(sandbox_port), "--no-access-log",
             "--config", str(sandbox_config), "--fail-rate", "0.1", "--lost-reply-rate",
             "0.05", "--lost-reply-mode", "mixed", "--seed", str(seed)],
            env,
        )  # fmt: skip
        st.wait_http(f"{sandbox}/sandbox/faults", proc)
        web = st.python("web", ["-m", "bridge", "serve", "--port", str(web_port)], env)
        st.wait_http(f"http://127.0.0.1:{web_port}/healthz", web)
        worker = st.python("worker", ["-m", "bridge", "worker"], env)

        load = workload.build(
            seed=seed, now=int(time.time()), one_offs=one_offs, subscriptions=subscriptions
        )
        bodies = [json.dumps(e).encode() for e in load.events for _ in range(DELIVERIES)]
        rng.shuffle(bodies)
        result.deliveries = len(bodies)
        slow = SlowReplies(
            sandbox, random.Random(seed + 1), float(WORKER_ENV["CRYPTOLENS_READ_TIMEOUT"])
        )
        slow.start()
        foreign = ForeignKeys(sandbox, random.Random(seed + 2))
        foreign.start()
        t0 = time.monotonic()
        # Kills at random moments while the work is under way, each a while after the
        # worker (re)started (it takes about a second to start): at least two per run.
        kills_left = rng.randint(2, 4)
        next_kill = t0 + rng.uniform(0.3, 3.0)
        statuses = asyncio.run(_post_all(f"http://127.0.0.1:{web_port}/webhooks/stripe", bodies))
        bad = Counter(s for s in statuses if not 200 <= s < 300)
        if bad:
            result.failures.append(f"deliveries not acknowledged: {dict(bad)}")
        deadline = t0 + timeout
        quiet_since: float | None = None
        while time.monotonic() < deadline:
            if kills_left and time.monotonic() >= next_kill:
                kills_left -= 1
                result.kills_busy += _unfinished(db_url) > 0
                st.kill(worker)
                result.kills += 1
                time.sleep(rng.uniform(0, 1.0))
                worker = st.python("worker", ["-m", "bridge", "worker"], env)
                next_kill = time.monotonic() + rng.uniform(1.0, 4.0)
                quiet_since = None
                continue
            if worker.poll() is not None:
                result.failures.append(f"the worker stopped by itself ({worker.returncode})")
                st.stop(worker)  # gone already: forgotten, so that it is not stopped again
                worker = st.python("worker", ["-m", "bridge", "worker"], env)
            if not kills_left and _unfinished(db_url) == 0:
                # Quiet twice in a row, a moment apart: nothing was about to be re-queued.
                if quiet_since is not None and time.monotonic() - quiet_since > 1.0:
                    break
                quiet_since = quiet_since or time.monotonic()
            else:
                quiet_since = None
            time.sleep(0.25)
        else:
            result.failures.append(
                f"{_unfinished(db_url)} intent(s) still unfinished after {timeout:g} s"
            )
        slow.stop()
        foreign.stop()
        result.foreign_keys = len(foreign.keys)
        state = httpx.get(f"{sandbox}/sandbox/state", timeout=30).json()
        check(result, load.purchases, state, db_url, frozenset(foreign.keys))
        result.sandbox_calls = state["counts"]["calls_received"]
        if keep is not None:
            (st.workdir / "state.json").write_text(json.dumps(state, indent=1))
            (st.workdir / "foreign.json").write_text(json.dumps(sorted(foreign.keys)))
    result.seconds = round(time.monotonic() - started, 1)
    result.passed = not result.failures
    return result


# -- the check -----------------------------------------------------------------------------


def check(
    result: RunResult,
    purchases: list[Purchase],
    state: dict[str, Any],
    db_url: str,
    foreign: frozenset[str] = frozenset(),
) -> None:
    fail = result.failures.append
    intents = _rows(db_url, "SELECT id, status, last_error, license_ref FROM intent")
    result.intents = dict(Counter(i.status for i in intents))
    for i in intents:
        if i.status == "needs_review":
            result.needs_review.append(f"{i.id}: {i.last_error}")
        elif i.status != "done":
            fail(f"intent {i.id} is {i.status}: {i.last_error}")
    licenses = {
        r.ref: r for r in _rows(db_url, "SELECT ref, key, customer_id, ended_by FROM license")
    }
    keys = {k["key"]: k for k in state["keys"]}
    result.keys = len(set(keys) - foreign)
    holders = Counter(r.key for r in licenses.values() if r.key)
    for count in holders.values():
        if count > 1:
            fail(f"a key is held by {count} licenses")
    for key_string in foreign:
        made = keys.get(key_string)
        if made is None:
            fail("a foreign key is gone")
            continue
        if key_string in holders:
            fail("a foreign key is held by a license")
        untouched = (
            made["notes"] == ""
            and made["customer_id"] is None
            and not made["block"]
            and made["expires"] == made["created"] + made["period"] * DAY
        )
        if not untouched:
            fail(f"a foreign key was touched: {made}")
    customers = {c["id"]: c for c in state["customers"]}
    by_email = Counter(c["email"].lower() for c in state["customers"] if c["email"])
    for email, count in by_email.items():
        if count > 1:
            fail(f"{count} Cryptolens customers for {email}")
    events: dict[str, Counter[str]] = {}
    for e in state["events"]:
        events.setdefault(e["key"], Counter())[e["event_name"]] += 1
    meta = Counter(json.loads(e["metadata"]).get("intent") for e in state["events"])
    for intent_id, count in meta.items():
        if count > 1:
            fail(f"RegisterEvent of {intent_id} applied {count} times")
            # What the bridge recorded of each send, and when the sandbox applied each.
            times = sorted(
                e["time"]
                for e in state["events"]
                if json.loads(e["metadata"]).get("intent") == intent_id
            )
            fail(f"  applied at (sandbox, unix s): {times}")
            for row in _rows(
                db_url,
                "SELECT id, sent_at, finished_at, outcome FROM attempt"
                " WHERE intent_id = :intent ORDER BY id",
                {"intent": intent_id},
            ):
                fail(f"  attempt {tuple(str(v) for v in row)}")

    accounted: set[str] = set()
    for p in purchases:
        row = licenses.get(p.ref)
        what = f"{p.ref} ({', '.join(p.story) or 'plain'})"
        if row is None or row.key is None:
            fail(f"{what}: no key")
            continue
        accounted.add(row.key)
        key = keys.get(row.key)
        if key is None:
            fail(f"{what}: its key is not in Cryptolens")
            continue
        if key["period"] != PERIODS[p.template]:
            fail(f"{what}: period {key['period']}, expected {PERIODS[p.template]} (template)")
        if bool(key["block"]) != p.blocked:
            fail(f"{what}: blocked={key['block']}, expected {p.blocked}")
        _check_expiry(fail, what, p, key)
        if p.email is None:
            if key["customer_id"] is not None:
                fail(f"{what}: linked to customer {key['customer_id']}, but no email was given")
        else:
            customer = customers.get(key["customer_id"])
            if customer is None or customer["email"].lower() != p.email:
                fail(f"{what}: customer {key['customer_id']}, expected the one of {p.email}")
        got = dict(events.get(row.key, Counter()))
        if got != p.events:
            fail(f"{what}: events {got}, expected {p.events}")
    others = set(keys) - accounted - foreign
    if others:
        fail(f"{len(others)} key(s) in Cryptolens that no purchase accounts for")
    created = state["counts"]["keys_created"] - len(foreign)
    if created != len(purchases):
        fail(f"{created} key creations of the bridge applied for {len(purchases)} purchases")


def _check_expiry(fail: Any, what: str, p: Purchase, key: dict[str, Any]) -> None:
    created, expires = int(key["created"]), int(key["expires"])
    from_template = created + PERIODS[p.template] * DAY
    if p.target is None or from_template >= p.target:
        if expires != from_template:
            fail(f"{what}: expires {_day(expires)}, expected {_day(from_template)} (template)")
        return
    # ExtendLicense adds whole days: the first expiry at or past the target.
    if not p.target <= expires < p.target + DAY:
        fail(f"{what}: expires {_day(expires)}, expected {_day(p.target)} (period end + grace)")


def _day(unix: int) -> str:
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%d %H:%M:%S")


# -- report --------------------------------------------------------------------------------


def line(r: RunResult) -> str:
    verdict = "PASS" if r.passed else "FAIL"
    review = f", {len(r.needs_review)} needs_review" if r.needs_review else ""
    return (
        f"seed {r.seed} {r.database}: {verdict} in {r.seconds:g} s, "
        f"{r.kills} kills ({r.kills_busy} mid-work), "
        f"{r.deliveries} deliveries, {r.keys} keys (+{r.foreign_keys} foreign), "
        f"{r.sandbox_calls} calls, "
        f"intents {dict(sorted(r.intents.items()))}{review}"
    )


def summary(results: list[RunResult]) -> str:
    rows = [("database", "runs", "passed", "failed", "kills", "needs_review")]
    for db in sorted({r.database for r in results}):
        mine = [r for r in results if r.database == db]
        rows.append((
            db, str(len(mine)), str(sum(r.passed for r in mine)),
            str(sum(not r.passed for r in mine)), str(sum(r.kills for r in mine)),
            str(sum(len(r.needs_review) for r in mine)),
        ))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    out = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    out.insert(1, "  ".join("-" * w for w in widths))
    for r in results:
        for failure in r.failures:
            out.append(f"seed {r.seed} {r.database}: {failure}")
        for review in r.needs_review:
            out.append(f"seed {r.seed} {r.database}: needs_review {review}")
    return "\n".join(out)


@click.command("chaos")
@click.option("--runs", default=1, show_default=True, type=click.IntRange(1, 1000))
@click.option("--seed", type=int, help="Seed of the first run (then +1 per run); default random.")
@click.option(
    "--database-url",
    help="A PostgreSQL server (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/postgres): "
    "each run creates and drops a database of its own there. Default: SQLite files.",
)
@click.option("--one-offs", default=20, show_default=True, type=click.IntRange(1, 500))
@click.option("--subscriptions", default=8, show_default=True, type=click.IntRange(0, 100))
@click.option(
    "--timeout", default=90.0, show_default=True, help="Seconds a run may take to settle."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead.")
@click.option(
    "--keep",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep each run's databases, logs and sandbox state under this directory.",
)
def command(
    runs: int,
    seed: int | None,
    database_url: str | None,
    one_offs: int,
    subscriptions: int,
    timeout: float,
    as_json: bool,
    keep: Path | None,
) -> None:
    """Run the bridge under redeliveries, faults, slow replies and worker kills; check
    that every purchase had each of its effects exactly once. Exit code 1 if a run failed.
    """
    first = seed if seed is not None else random.randrange(1_000_000)
    results = []
    for n in range(runs):
        run_seed = first + n
        result = run_once(
            run_seed,
            database_url=database_url,
            keep=keep / f"run-{run_seed}" if keep else None,
            one_offs=one_offs,
            subscriptions=subscriptions,
            timeout=timeout,
        )
        results.append(result)
        if not as_json:
            click.echo(line(result))
    if as_json:
        click.echo(
            json.dumps({"machine": machine(), "runs": [asdict(r) for r in results]}, indent=2)
        )
    else:
        click.echo("\n" + summary(results))
    if not all(r.passed for r in results):
        raise SystemExit(1)
