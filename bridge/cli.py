"""The ``cryptolens-bridge`` command.

Each sub-command lives in the module that owns its subject and is imported only when it
runs, so ``serve`` never loads the worker and ``--help`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

# name -> "module:attribute" of a click.Command
_COMMANDS = {
    "serve": "bridge.serve:command",
    "worker": "jobs.worker:command",
    "sandbox": "bridge.sandbox.cli:command",
    "migrate": "bridge.cli:migrate_command",
    "dev": "bridge.tools.dev:command",
    "send": "bridge.tools.send:command",
    "bench": "bridge.tools.bench:command",
    "chaos": "bridge.tools.chaos:command",
    "intents": "bridge.tools.ops:intents_command",
    "replay": "bridge.tools.ops:replay_command",
    "events": "bridge.tools.ops:events_command",
    "reconcile": "bridge.tools.reconcile:command",
    "collect": "jobs.collector:command",
}

_HELP = {
    "serve": "Run the webhook receiver (Starlette under uvicorn).",
    "worker": "Run the arq worker that applies intents to Cryptolens.",
    "sandbox": "Run the Cryptolens Web API sandbox.",
    "migrate": "Apply the database migrations.",
    "dev": "Web + worker + sandbox in one process tree, on local defaults.",
    "send": "Sign a webhook payload and post it to the bridge.",
    "bench": "Measure ingest throughput, webhook-to-key latency and memory.",
    "chaos": "Faults, redeliveries and worker kills; check every effect happened once.",
    "intents": "List intents and their status (what the bridge did, or will do).",
    "replay": "Put failed or needs_review intents back to pending (--plan: a dry run).",
    "events": "List stored deliveries (events show ID: one and its intents).",
    "reconcile": "Compare every paid license with Cryptolens; --repair drift through intents.",
    "collect": "Read the Cryptolens usage counters once and bill what increased.",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        command: Any = getattr(importlib.import_module(module_name), attr)
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # List the commands without importing them all.
        with formatter.section("Commands"):
            formatter.write_dl([(name, _HELP[name]) for name in _COMMANDS])


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
