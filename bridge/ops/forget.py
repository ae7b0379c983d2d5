"""``cryptolens-bridge forget EMAIL [--dry-run]``: erase one person from the bridge.

    cryptolens-bridge forget ada@example.com --dry-run   # where the address is; no change
    cryptolens-bridge forget ada@example.com

Removes the address, and the names and companies stored with it, from every stored
delivery body, intent parameter, start hint, attempt, refusal record (and so from every
admin page and ``events show``), and leaves no copy in the database files the bridge
controls (``bridge.store.erasure``). Ids, statuses and times stay: effects already done
stay done, and a redelivery of an erased event is still a duplicate. Nothing changes in
Cryptolens, Stripe or the CRMs: the README says how to erase the person there.

:func:`forget` raises ``bridge.core.errors`` only; the click command below turns them
into the CLI's errors, so the admin page (or a test) can call it as it is.
"""

from __future__ import annotations

import json
from dataclasses import asdict

import click

from bridge.core.errors import BridgeError
from bridge.core.personal import Address
from bridge.core.settings import Settings
from bridge.ops.terminal import say
from bridge.store import erasure
from bridge.store.db import make_engine


def forget(
    database_url: str, email: str, *, dry_run: bool = False, full_vacuum: bool = True
) -> erasure.Erasure:
    """Erase ``email`` (any case) from the database at ``database_url``."""
    address = Address(email)  # InvalidAddress before anything is opened
    engine = make_engine(database_url)
    try:
        return erasure.forget(engine, address, dry_run=dry_run, full_vacuum=full_vacuum)
    finally:
        engine.dispose()


def report(result: erasure.Erasure) -> list[str]:
    """What was (or, in a dry run, would be) changed, one line per fact."""
    verb = "would change" if result.dry_run else "changed"
    if not result.changed:
        lines = [f"no stored row holds {result.address}: nothing to change"]
    else:
        lines = [f"{verb} {n} row(s) of {name}" for name, n in sorted(result.rows.items())]
    if result.leases:
        lines.append(f"{verb} {result.leases} expired customer lease(s) (deleted)")
    if result.held_leases:
        lines.append(
            f"{result.held_leases} customer lease(s) naming it are held by a running job:"
            " run forget again once it ends"
        )
    if result.events:
        lines.append("deliveries: " + ", ".join(result.events))
    if result.intents:
        lines.append("intents: " + ", ".join(result.intents))
    if result.unfinished:
        lines.append(
            "not finished yet, so they will run without the buyer (no customer linked): "
            + ", ".join(result.unfinished)
        )
    for name, n in sorted(result.kept.items()):
        lines.append(
            f"kept: {n} row(s) of {name} spell the address in an id the exactly-once"
            " record keys on (not changed)"
        )
    if result.vacuumed:
        lines.append("vacuumed: " + ", ".join(result.vacuumed))
    if result.files_clean is not None:
        state = "no copy left" if result.files_clean else "A COPY IS STILL THERE"
        lines.append(f"database files read back ({', '.join(result.files_checked)}): {state}")
    elif not result.dry_run:
        lines.append(
            "PostgreSQL: the touched tables were vacuumed; its WAL, replicas and backups"
            " are outside the bridge (see the README)"
        )
    lines.append("Cryptolens, Stripe and the CRMs were not changed (see the README)")
    return lines


@click.command("forget")
@click.argument("email")
@click.option("--dry-run", is_flag=True, help="Print what would change; change nothing.")
@click.option(
    "--plain-vacuum",
    is_flag=True,
    help="PostgreSQL: a plain VACUUM instead of VACUUM FULL (no table lock, but the old "
    "bytes stay in free space until it is reused).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead.")
def command(email: str, dry_run: bool, plain_vacuum: bool, as_json: bool) -> None:
    """Erase EMAIL and the names and companies stored with it (BRIDGE_DATABASE_URL)."""
    try:
        result = forget(
            Settings().database_url, email, dry_run=dry_run, full_vacuum=not plain_vacuum
        )
    except BridgeError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(asdict(result)))
        return
    for line in report(result):
        say(line)
    if result.files_clean is False:
        raise click.ClickException("a copy of the address is still in the database files")
