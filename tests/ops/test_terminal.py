"""What the operator's terminal is shown of stored text."""

from __future__ import annotations

import pytest

from bridge.ops.terminal import printable


@pytest.mark.parametrize(
    "text,shown",
    [
        ("evt_1 crm:zoho:deal:D-42", "evt_1 crm:zoho:deal:D-42"),
        ("Zoë Ωmega 日本", "Zoë Ωmega 日本"),  # letters of any script stay as they are
        ("a\x1b[2Jb", "a\\x1b[2Jb"),  # CSI: clear the screen
        ("a\x9b2Jb", "a\\x9b2Jb"),  # the same as one C1 character
        ("a\rb\nc\td", "a\\x0db\\x0ac\\x09d"),  # no line or column rewritten
        ("abc\u202edef", "abc\\u202edef"),  # right-to-left override
        ("a\u2028b", "a\\u2028b"),  # line separator
        ("a\ud800b", "a\\ud800b"),  # a lone surrogate no terminal can encode
        ("a\U000e0001b", "a\\U000e0001b"),  # a tag character (format)
    ],
)
def test_unsafe_characters_are_escaped(text: str, shown: str) -> None:
    assert printable(text) == shown
