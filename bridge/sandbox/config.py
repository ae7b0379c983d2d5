"""What the sandbox serves: products, license templates, access tokens, seed customers,
and the account settings recurring billing and data objects depend on.

The built-in default (``SandboxConfig()``) is enough for the demo and the tests; a TOML
file (``load_config``) replaces it as a whole, so what a file declares is all there is.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_TOKEN = "sandbox-demo-token-0001"  # noqa: S105 - public by design, sandbox only
DEFAULT_PRODUCT_ID = 1001


class ConfigError(ValueError):
    """The TOML file does not describe a usable sandbox."""


def method_name(name: str) -> str:
    """The comparable form of a method name: ``key/ExtendLicense`` and ``ExtendLicense``
    both become ``extendlicense`` (the service's token scopes list bare method names)."""
    return name.rsplit("/", 1)[-1].strip().lower()


@dataclass(frozen=True)
class Product:
    id: int
    name: str


@dataclass(frozen=True)
class TemplateObject:
    """A data object a v2 template adds to each key it makes (its AddDataObjectToKey)."""

    name: str
    string_value: str | None = None
    int_value: int = 0


@dataclass(frozen=True)
class Template:
    """A license template. ``period`` 0 means a key that never expires; like the real
    service the key's ``expires`` then equals ``created``, and since F1 (the product's
    time-limited feature) is off, clients treat it as perpetual."""

    id: int
    name: str
    product_id: int
    period: int
    features: tuple[bool, ...] = (False,) * 8  # F1..F8
    notes: str = ""
    max_no_of_machines: int = 0
    trial_activation: bool = False
    # Keys made from it are linked to a Stripe subscription item, as recurring billing's
    # keys are: only those accept RecordUsage.
    subscription: bool = False
    # Non-empty: a v2 template (GetLicenseTemplates shows a list of calls, CreateKey first).
    data_objects: tuple[TemplateObject, ...] = ()


@dataclass(frozen=True)
class Token:
    """An access token and its scope, as on the Cryptolens access token page.

    ``methods`` None allows every method; a method is allowed by its permission name
    (``IncrementIntValue`` for every IncrementIntValue* path, ``Subscription`` for
    RecordUsage). ``product_id`` 0 and ``key`` None lift the product and key locks.
    ``feature_lock`` (0: none) restricts CreateKeyFromTemplate to one template id and
    bounds the constant of IncrementIntValue and DecrementIntValue.
    """

    value: str
    methods: frozenset[str] | None = None
    product_id: int = 0
    key: str | None = None
    feature_lock: int = 0
    name: str = ""

    def allows(self, method: str) -> bool:
        return self.methods is None or method_name(method) in self.methods

    def scope(self) -> str:
        methods = "all methods" if self.methods is None else ", ".join(sorted(self.methods))
        locks = [f"product {self.product_id}"] if self.product_id else []
        locks += [f"key {self.key}"] if self.key else []
        locks += [f"template {self.feature_lock}"] if self.feature_lock else []
        return methods + (f" (locked to {', '.join(locks)})" if locks else "")


@dataclass(frozen=True)
class SeedCustomer:
    name: str
    email: str = ""
    company_name: str = ""


def _time_limited(period: int) -> tuple[bool, ...]:
    return (period > 0,) + (False,) * 7


DEFAULT_TEMPLATES = (
    Template(1, "Monthly", DEFAULT_PRODUCT_ID, 30, _time_limited(30)),
    Template(2, "Yearly", DEFAULT_PRODUCT_ID, 365, _time_limited(365)),
    Template(3, "Perpetual", DEFAULT_PRODUCT_ID, 0, _time_limited(0)),
)


@dataclass(frozen=True)
class SandboxConfig:
    products: tuple[Product, ...] = (Product(DEFAULT_PRODUCT_ID, "Sandbox Product"),)
    templates: tuple[Template, ...] = DEFAULT_TEMPLATES
    tokens: tuple[Token, ...] = (Token(DEFAULT_TOKEN, name="demo"),)
    customers: tuple[SeedCustomer, ...] = ()
    # RecordUsage answers "No Stripe payment processor was set up." without one.
    stripe_payment_processor: bool = True
    # The account's limit on data objects (the service's depends on the plan); 0: none.
    data_object_limit: int = 0
    _by_token: dict[str, Token] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_token", {t.value: t for t in self.tokens})
        product_ids = {p.id for p in self.products}
        for template in self.templates:
            if template.product_id not in product_ids:
                raise ConfigError(
                    f"template {template.id} uses unknown product {template.product_id}"
                )
        if len({t.id for t in self.templates}) != len(self.templates):
            raise ConfigError("template ids must be unique")

    def token(self, value: str) -> Token | None:
        return self._by_token.get(value)

    def product(self, product_id: int) -> Product | None:
        return next((p for p in self.products if p.id == product_id), None)

    def template(self, template_id: int) -> Template | None:
        return next((t for t in self.templates if t.id == template_id), None)


def load_config(path: Path | None) -> SandboxConfig:
    """The config in the TOML file at ``path``, or the built-in default for None."""
    if path is None:
        return SandboxConfig()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    try:
        return _parse(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: {exc!r}") from exc


def _parse(data: dict[str, Any]) -> SandboxConfig:
    products = tuple(Product(int(p["id"]), str(p.get("name", ""))) for p in data["products"])
    templates = tuple(_template(t) for t in data.get("templates", []))
    tokens = tuple(_token(t) for t in data.get("tokens", []))
    if not tokens:
        raise ValueError("declare at least one [[tokens]]")
    customers = tuple(
        SeedCustomer(str(c["name"]), str(c.get("email", "")), str(c.get("company_name", "")))
        for c in data.get("customers", [])
    )
    account = data.get("account", {})
    if not isinstance(account, dict):
        raise TypeError("[account] must be a table")
    unknown = set(account) - {"stripe_payment_processor", "data_object_limit"}
    if unknown:
        raise ValueError(f"unknown [account] settings: {sorted(unknown)}")
    limit = int(account.get("data_object_limit", 0))
    if limit < 0:
        raise ValueError("data_object_limit must be 0 (none) or positive")
    return SandboxConfig(
        products,
        templates,
        tokens,
        customers,
        stripe_payment_processor=bool(account.get("stripe_payment_processor", True)),
        data_object_limit=limit,
    )


def _template(t: dict[str, Any]) -> Template:
    features = tuple(bool(t.get(f"f{i}", False)) for i in range(1, 9))
    return Template(
        id=int(t["id"]),
        name=str(t["name"]),
        product_id=int(t["product"]),
        period=int(t.get("period", 0)),
        features=features,
        notes=str(t.get("notes", "")),
        max_no_of_machines=int(t.get("max_machines", 0)),
        trial_activation=bool(t.get("trial_activation", False)),
        subscription=bool(t.get("subscription", False)),
        data_objects=tuple(
            TemplateObject(
                str(o["name"]),
                None if o.get("string_value") is None else str(o["string_value"]),
                int(o.get("int_value", 0)),
            )
            for o in t.get("data_objects", [])
        ),
    )


def _token(t: dict[str, Any]) -> Token:
    methods = t.get("methods", "*")
    scope = None if methods == "*" else frozenset(method_name(str(m)) for m in methods)
    if scope is not None and "*" in scope:
        scope = None
    key = t.get("key")
    return Token(
        value=str(t["value"]),
        methods=scope,
        product_id=int(t.get("product", 0)),
        key=str(key) if key else None,
        feature_lock=int(t.get("feature_lock", 0)),
        name=str(t.get("name", "")),
    )
