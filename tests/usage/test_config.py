"""The [usage] TOML: refused at start-up when it could not bill as written."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config import BridgeConfig
from bridge.core.errors import ConfigError
from bridge.core.settings import Settings


def load(tmp_path: Path, text: str) -> BridgeConfig:
    path = tmp_path / "bridge.toml"
    path.write_text(text)
    return BridgeConfig.load(path)


class TestUsageConfig:
    def test_the_issue_s_example_works_as_written(self, tmp_path: Path) -> None:
        config = load(
            tmp_path,
            """
[usage.collector]
products = [1001]
interval_seconds = 60
data_object = "usage"
[[usage.product]]
id = 1001
sink = "stripe_meter"
window_seconds = 60
meter_event_name = "api_calls"
""",
        )
        product = config.usage.product_for(1001)
        assert product is not None and product.event_name("") == "api_calls"

    @pytest.mark.parametrize(
        ("text", "words"),
        [
            ('[[usage.product]]\nid = 1\nsink = "stripe_meter"\n', "meter_event_name"),
            ('[[usage.product]]\nid = 1\nsink = "paypal"\n', "sink"),
            ('[[usage.product]]\nid = 1\nsink = "cryptolens"\nwindow_seconds = 0\n', "window"),
            (
                '[[usage.product]]\nid = 1\nsink = "cryptolens"\n'
                '[[usage.product]]\nid = 1\nsink = "cryptolens"\n',
                "twice",
            ),
            ("[usage.collector]\nproducts = [7]\n", "[[usage.product]]"),
            ('[usage.collector]\ndata_object = "much_too_long"\n', "data_object"),
        ],
    )
    def test_refused_with_a_reason(self, tmp_path: Path, text: str, words: str) -> None:
        with pytest.raises(ConfigError, match=words.replace("[", r"\[").replace("]", r"\]")):
            load(tmp_path, text)


class TestUsageTokens:
    def test_rotation_and_placeholders(self) -> None:
        one, other = "usage-token-one-0123456789", "usage-token-two-0123456789"
        two = Settings(_env_file=None, BRIDGE_USAGE_TOKENS=f" {one}, {other}")
        assert two.usage_tokens_list() == (one, other)
        assert Settings(_env_file=None).usage_tokens_list() == ()
        with pytest.raises(ConfigError):
            Settings(_env_file=None, BRIDGE_USAGE_TOKENS="changeme").usage_tokens_list()
        with pytest.raises(ConfigError):
            Settings(_env_file=None, BRIDGE_USAGE_TOKENS="short").usage_tokens_list()
        with pytest.raises(ConfigError, match="distinct"):
            Settings(_env_file=None, BRIDGE_USAGE_TOKENS=f"{one},{'a' * 40}").usage_tokens_list()
