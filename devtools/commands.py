"""The developer tools' commands, added to ``cryptolens-bridge`` in a checkout.

``devtools/pyproject.toml`` registers :data:`COMMANDS` under the
``cryptolens_bridge.commands`` entry-point group (``bridge.cli``): a table of command
name to ``("module:attribute", help)``, so that ``cryptolens-bridge --help`` lists them
without importing them. Nothing here is in the bridge's wheel or image.
"""

from __future__ import annotations

COMMANDS: dict[str, tuple[str, str]] = {
    "dev": (
        "devtools.dev:command",
        "Web + worker + sandbox in one process tree, on local defaults.",
    ),
    "send": ("devtools.send:command", "Sign a webhook payload and post it to the bridge."),
    "bench": (
        "devtools.bench.command:command",
        "Measure ingest throughput, webhook-to-key latency and memory.",
    ),
    "chaos": (
        "devtools.chaos.command:command",
        "Faults, redeliveries and worker kills; check every effect happened once.",
    ),
}
