"""The rules that keep the tree readable, checked with the rest of ``make check``.

- Modules stay small: at most ``[tool.cryptolens-bridge.module-size] limit`` lines, with
  per-module ceilings for today's exceptions that may only shrink.
- Functions stay simple: ruff's C901 at ``[tool.ruff.lint.mccabe] max-complexity``, with
  per-file exemptions in ``[tool.ruff.lint.per-file-ignores]`` that may only shrink.

The import layers are import-linter's (``[tool.importlinter]``, run by ``make lint``).
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bridge", "jobs", "devtools")


def _pyproject() -> dict[str, Any]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)


def _modules() -> dict[str, int]:
    """Every product and tool module (migrations aside: one revision each, never edited),
    by path relative to the checkout, with its line count."""
    found: dict[str, int] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if "/migrations/" in relative:
                continue
            found[relative] = len(path.read_text(encoding="utf-8").splitlines())
    return found


class TestModuleSize:
    def test_every_module_is_within_the_limit_or_its_ceiling(self) -> None:
        rule = _pyproject()["tool"]["cryptolens-bridge"]["module-size"]
        limit, exempt = int(rule["limit"]), dict(rule["exempt"])
        over = {
            path: lines
            for path, lines in _modules().items()
            if lines > int(exempt.get(path, limit))
        }
        assert not over, (
            f"modules over {limit} lines (or over their ceiling in pyproject.toml): {over}; "
            "split them by concept"
        )

    def test_a_ceiling_is_only_kept_while_its_module_needs_it(self) -> None:
        rule = _pyproject()["tool"]["cryptolens-bridge"]["module-size"]
        limit, exempt = int(rule["limit"]), dict(rule["exempt"])
        modules = _modules()
        stale = {
            path: modules.get(path)
            for path in exempt
            if path not in modules or modules[path] <= limit
        }
        assert not stale, f"remove these module-size exemptions from pyproject.toml: {stale}"
        loose = {
            path: (ceiling, modules[path])
            for path, ceiling in exempt.items()
            if path in modules and int(ceiling) > modules[path]
        }
        assert not loose, (
            f"lower these ceilings to the module's size (ceiling, lines): {loose}; "
            "a ceiling may only shrink"
        )


class TestComplexity:
    def test_every_complexity_exemption_is_still_needed(self) -> None:
        config = _pyproject()["tool"]["ruff"]["lint"]
        limit = config["mccabe"]["max-complexity"]
        exempt = [
            pattern
            for pattern, codes in config["per-file-ignores"].items()
            if "C901" in codes and not pattern.startswith("tests/")
        ]
        # ruff on the exempt files alone, with the exemptions left out.
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "ruff",
                "check",
                "--isolated",
                "--select",
                "C901",
                "--config",
                f"lint.mccabe.max-complexity={limit}",
                "--output-format",
                "concise",
                "--exit-zero",
                *exempt,
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        offenders = {line.split(":", 1)[0] for line in result.stdout.splitlines() if "C901" in line}
        stale = sorted(set(exempt) - offenders)
        assert not stale, f"remove the C901 exemption of {stale} from pyproject.toml"
