"""The ``cryptolens-bridge`` command: the product's commands, and those other installed
distributions register (in a checkout: the developer tools, ``devtools/``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from bridge import cli


@pytest.fixture
def fresh_table() -> Iterator[None]:
    cli.commands.cache_clear()
    yield
    cli.commands.cache_clear()


def _distribution(root: Path, name: str, entry_points: str, module: str = "") -> None:
    """An installed distribution on ``root`` (a dist-info directory, as pip writes one)."""
    info = root / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{cli.ENTRY_POINTS}]\n{entry_points}\n")
    if module:
        (root / f"{name}.py").write_text(module)


def test_help_lists_the_products_and_the_checkouts_developer_tools(fresh_table: None) -> None:
    shown = CliRunner().invoke(cli.main, ["--help"])
    assert shown.exit_code == 0, shown.output
    listed = [line.split()[0] for line in shown.output.split("Commands:")[1].splitlines() if line]
    assert {"serve", "worker", "migrate", "replay", "reconcile"} <= set(listed)
    # make install registers devtools/ beside the bridge (devtools/pyproject.toml).
    assert {"dev", "send", "bench", "chaos"} <= set(listed)
    bench = CliRunner().invoke(cli.main, ["bench", "--help"])
    assert bench.exit_code == 0 and "--burst" in bench.output


def test_a_registration_never_replaces_a_product_command_nor_breaks_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_table: None
) -> None:
    table = 'COMMANDS = {"serve": ("x:y", "not ours"), "hello": ("plugin_ok:hello", "Hi.")}\n'
    hello = "import click\n\n@click.command()\ndef hello() -> None:\n    click.echo('hi')\n"
    _distribution(tmp_path, "plugin_ok", "ok = plugin_ok:COMMANDS", table + hello)
    # Uninstalled but still listed: its table cannot be imported.
    _distribution(tmp_path, "plugin_gone", "gone = plugin_gone_missing:COMMANDS")
    monkeypatch.syspath_prepend(str(tmp_path))

    found = cli.commands()
    assert found["serve"] == cli._COMMANDS["serve"]
    assert found["hello"] == ("plugin_ok:hello", "Hi.")
    ran = CliRunner().invoke(cli.main, ["hello"])
    assert (ran.exit_code, ran.output) == (0, "hi\n")
