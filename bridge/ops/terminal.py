"""What the operator's terminal is shown: stored text with its control characters escaped.

Ids, types, notes and errors are stored as senders wrote them; printed raw, an escape
sequence (``\\x1b[2J``, a cursor move, an OSC title), a carriage return or a bidi override
from a sender would rewrite what the operator sees. Every line a command prints of
stored data goes through :func:`say` (JSON output is escaped by ``json.dumps`` already).
"""

from __future__ import annotations

import unicodedata

import click

# Controls (C0, DEL, C1), formats (bidi overrides, zero widths), line and paragraph
# separators, and lone surrogates (no terminal encoding has them).
_UNSAFE = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


def printable(text: str) -> str:
    """``text`` with every unsafe character as a visible escape (``\\x1b``, ``\\u202e``)."""
    if text.isprintable():
        return text
    return "".join(_escape(c) if unicodedata.category(c) in _UNSAFE else c for c in text)


def _escape(c: str) -> str:
    code = ord(c)
    return (
        f"\\x{code:02x}"
        if code < 0x100
        else f"\\u{code:04x}"
        if code < 0x10000
        else f"\\U{code:08x}"
    )


def say(line: str) -> None:
    """Print one line of output, escaped: a stored newline cannot forge another line."""
    click.echo(printable(line))
