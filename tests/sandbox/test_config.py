"""The sandbox config: the built-in default and the TOML format."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.sandbox.config import (
    DEFAULT_PRODUCT_ID,
    DEFAULT_TOKEN,
    ConfigError,
    load_config,
)

EXAMPLE = """
[[products]]
id = 2001
name = "Photo Editor"

[[templates]]
id = 10
name = "Pro monthly"
product = 2001
period = 30
f1 = true
f3 = true
notes = "created by the sandbox"
max_machines = 3

[[tokens]]
value = "admin-token"
methods = "*"

[[tokens]]
value = "extend-only"
methods = ["ExtendLicense", "key/GetKey"]
product = 2001

[[tokens]]
value = "one-template"
methods = ["CreateKeyFromTemplate"]
feature_lock = 10

[[customers]]
name = "Ada"
email = "ada@example.com"
company_name = "Engines"
"""


def test_default() -> None:
    config = load_config(None)
    token = config.token(DEFAULT_TOKEN)
    assert token is not None and token.methods is None and token.product_id == 0
    assert [(t.id, t.name, t.product_id, t.period) for t in config.templates] == [
        (1, "Monthly", DEFAULT_PRODUCT_ID, 30),
        (2, "Yearly", DEFAULT_PRODUCT_ID, 365),
        (3, "Perpetual", DEFAULT_PRODUCT_ID, 0),
    ]
    assert config.product(DEFAULT_PRODUCT_ID) is not None


def test_toml(tmp_path: Path) -> None:
    path = tmp_path / "sandbox.toml"
    path.write_text(EXAMPLE)
    config = load_config(path)
    (template,) = config.templates
    assert template.features == (True, False, True, False, False, False, False, False)
    assert (template.max_no_of_machines, template.notes) == (3, "created by the sandbox")
    admin, extend, one = config.tokens
    assert admin.methods is None
    assert extend.allows("key/ExtendLicense") and extend.allows("GETKEY")
    assert not extend.allows("key/BlockKey") and extend.product_id == 2001
    assert one.feature_lock == 10
    assert config.customers[0].company_name == "Engines"
    assert config.token(DEFAULT_TOKEN) is None  # a file replaces the default


ACCOUNT = """
[account]
stripe_payment_processor = false
data_object_limit = 50

[[products]]
id = 1

[[templates]]
id = 1
name = "Metered"
product = 1
subscription = true

[[tokens]]
value = "t"
"""


def test_account_and_subscription_templates(tmp_path: Path) -> None:
    path = tmp_path / "sandbox.toml"
    path.write_text(ACCOUNT)
    config = load_config(path)
    assert (config.stripe_payment_processor, config.data_object_limit) == (False, 50)
    assert config.templates[0].subscription is True
    default = load_config(None)
    assert (default.stripe_payment_processor, default.data_object_limit) == (True, 0)
    assert not any(t.subscription for t in default.templates)


@pytest.mark.parametrize(
    "text",
    [
        "[account]\nstripe = true\n[[products]]\nid = 1\n[[tokens]]\nvalue = 't'\n",
        "[account]\ndata_object_limit = -1\n[[products]]\nid = 1\n[[tokens]]\nvalue = 't'\n",
        "not = [toml",
        "[[tokens]]\nvalue = 'x'\n",  # no products
        "[[products]]\nid = 1\n",  # no tokens
        "[[products]]\nid = 1\n[[tokens]]\nvalue='t'\n[[templates]]\nid=1\nname='a'\nproduct=2\n",
    ],
)
def test_bad_files(tmp_path: Path, text: str) -> None:
    path = tmp_path / "sandbox.toml"
    path.write_text(text)
    with pytest.raises(ConfigError):
        load_config(path)
