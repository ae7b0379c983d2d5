"""The ``cryptolens-bridge`` command.

Each sub-command lives in the module that owns its subject and is imported only when it
runs, so ``serve`` never loads the worker and ``--help`` stays fast.

The product's commands are listed below. Other distributions add theirs through the
``cryptolens_bridge.commands`` entry-point group: each entry point names a mapping of
command name to ``("module:attribute", "one line of help")``, the shape of
:data:`_COMMANDS`, so listing them imports that small table and not the commands. In a
checkout, ``make install`` installs the developer tools (``devtools/``: ``dev``,
``send``, ``bench``, ``chaos``) that way; the wheel and the image have none of them.

Operator commands raise the project's errors (``bridge.ops.errors``); this is the edge
that turns them into click's ``Error: ...`` and exit status 1, their text escaped for the
terminal (``bridge.ops.terminal``).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Mapping
from typing import Any

import click

from bridge.ops.errors import OpsError

ENTRY_POINTS = "cryptolens_bridge.commands"

# name -> ("module:attribute" of a click.Command, its line in --help)
_COMMANDS = {
    "serve": ("bridge.serve:command", "Run the webhook receiver (Starlette under uvicorn)."),
    "worker": ("jobs.worker:command", "Run the arq worker that applies intents to Cryptolens."),
    "sandbox": ("bridge.sandbox.cli:command", "Run the Cryptolens Web API sandbox."),
    "migrate": ("bridge.cli:migrate_command", "Apply the database migrations."),
    "intents": (
        "bridge.ops.intents:intents_command",
        "List intents and their status (what the bridge did, or will do).",
    ),
    "replay": (
        "bridge.ops.intents:replay_command",
        "Put failed or needs_review intents back to pending (--dry-run: print the calls).",
    ),
    "events": (
        "bridge.ops.intents:events_command",
        "List stored deliveries (events show ID: one and its intents).",
    ),
    "reconcile": (
        "bridge.ops.reconcile:command",
        "Compare every paid license with Cryptolens; --repair drift through intents.",
    ),
    "collect": (
        "jobs.collector:command",
        "Read the Cryptolens usage counters once and bill what increased.",
    ),
    "catch-up": (
        "bridge.ops.catchup:command",
        "Record the Stripe events the webhook missed (Events API, last 30 days).",
    ),
    "forget": (
        "bridge.ops.forget:command",
        "Erase one person's address, names and companies from the bridge's database.",
    ),
}


@functools.cache
def commands() -> dict[str, tuple[str, str]]:
    """The product's commands, then those other installed distributions register (a
    product command's name is never taken over). A registration whose table cannot be
    imported (a distribution removed but still listed) is left out, so that it cannot
    break the product's own commands."""
    from importlib.metadata import entry_points  # only when a listing or lookup needs it

    found = dict(_COMMANDS)
    for entry in entry_points(group=ENTRY_POINTS):
        try:
            table: Any = entry.load()
        except ImportError:
            continue
        if not isinstance(table, Mapping):
            raise TypeError(f"entry point {entry.value} ({ENTRY_POINTS}) is not a mapping")
        for name, (target, help_) in table.items():
            found.setdefault(str(name), (str(target), str(help_)))
    return found


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(commands())

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        # The product's own first: running one never reads the installed distributions.
        found = _COMMANDS.get(cmd_name) or commands().get(cmd_name)
        if found is None:
            return None
        module_name, attr = found[0].split(":")
        command: Any = getattr(importlib.import_module(module_name), attr)
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # List the commands without importing them all.
        with formatter.section("Commands"):
            formatter.write_dl([(name, help_) for name, (_, help_) in commands().items()])

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OpsError as exc:
            from bridge.ops.terminal import printable

            raise click.ClickException(printable(str(exc))) from exc


@click.group(cls=_LazyGroup)
@click.version_option(package_name="cryptolens-bridge")
def main() -> None:
    """Stripe and CRM webhooks to Cryptolens license effects, exactly once."""


@click.command("migrate")
@click.option("--database-url", envvar="BRIDGE_DATABASE_URL", default="sqlite:///./bridge.db")
def migrate_command(database_url: str) -> None:
    """Apply the database migrations (BRIDGE_DATABASE_URL)."""
    # Imported here: ``--help`` loads no database driver (see the module docstring).
    from bridge.store.db import migrate, shown

    migrate(database_url)
    click.echo(f"database is at the newest schema: {shown(database_url)}")
