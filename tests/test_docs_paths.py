"""Every dotted path the docs name exists: ``bridge.x.y`` or ``jobs.x.y``, optionally
``:attr`` or ``.attr``, quoted in a comment or a string of ``bridge/`` and ``jobs/``, or
in the README.

A module moved or renamed leaves its old name in prose; this test lists each such name
with where it is written (``file:line: path: why``), so fixing them is a search away.
"""

from __future__ import annotations

import importlib
import io
import re
import tokenize
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).parent.parent

# Not inside a file name, a URL or a longer identifier (./bridge.db, https://bridge.example.com).
_PATH = re.compile(
    r"(?<![\w./:-])((?:bridge|jobs)(?:\.[A-Za-z_]\w*)+(?::[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)?)"
)
# Dotted words that are file or host names, not Python paths.
_NOT_PYTHON = re.compile(r"\.(py|toml|db|com|md|json|ya?ml|txt|html|css|sh|log)$|^bridge\.example")


# Comments and strings (3.12 splits an f-string into parts: its text is FSTRING_MIDDLE).
_PROSE = {tokenize.COMMENT, tokenize.STRING, getattr(tokenize, "FSTRING_MIDDLE", tokenize.STRING)}


def _texts(path: Path) -> Iterator[tuple[int, str]]:
    """The comments and string literals of a Python file, with their first line."""
    source = path.read_text(encoding="utf-8")
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type in _PROSE:
            yield token.start[0], token.string


def _quoted() -> Iterator[tuple[str, int, str]]:
    """(file, line, dotted path) for every path quoted in the docs."""
    for top in ("bridge", "jobs"):
        for path in sorted((ROOT / top).rglob("*.py")):
            for line, text in _texts(path):
                for match in _PATH.finditer(text):
                    at = line + text.count("\n", 0, match.start())
                    yield str(path.relative_to(ROOT)), at, match.group(1)
    for number, text in enumerate((ROOT / "README.md").read_text().splitlines(), 1):
        for match in _PATH.finditer(text):
            yield "README.md", number, match.group(1)


def _has(owner: Any, name: str) -> bool:
    if hasattr(owner, name):
        return True
    # A field of a pydantic model or a dataclass without a default is no class attribute.
    if isinstance(owner, type):
        return any(name in getattr(k, "__annotations__", {}) for k in owner.__mro__)
    return False


def missing(dotted: str) -> str | None:
    """Why ``dotted`` names nothing, or None when it names something."""
    path, _, attrs = dotted.partition(":")
    parts = path.split(".")
    module: Any = None
    for end in range(len(parts), 0, -1):
        name = ".".join(parts[:end])
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and not name.startswith(exc.name):
                raise  # the module exists, one of its imports does not
            continue
        rest = parts[end:] + (attrs.split(".") if attrs else [])
        break
    else:
        return f"no module {parts[0]}"
    owner, walked = module, name
    for attr in rest:
        if not _has(owner, attr):
            return f"{walked} has no {attr}"
        owner, walked = getattr(owner, attr, None), f"{walked}.{attr}"
    return None


def test_every_quoted_path_exists() -> None:
    problems = []
    for where, line, dotted in _quoted():
        if _NOT_PYTHON.search(dotted):
            continue
        why = missing(dotted)
        if why is not None:
            problems.append(f"{where}:{line}: {dotted}: {why}")
    assert not problems, "paths the docs name that do not exist:\n" + "\n".join(problems)


def test_a_wrong_path_is_found() -> None:
    assert missing("bridge.core.settings:Settings.lease_seconds") is None
    assert missing("jobs.effects.blocks.set_block") is None
    assert missing("bridge.core.settings:Settings.check_leases") is not None
    assert missing("bridge.usage.sinks") is not None
