"""Secrets from the environment: one reader for every comma-separated list of them, and
the test of a secret the operator makes up (long enough, enough distinct characters)."""

from __future__ import annotations

from bridge.core.errors import ConfigError

# Values people paste from examples; a bridge that runs with one of them accepts forgeries.
PLACEHOLDERS = {"", "changeme", "change-me", "secret", "xxx", "whsec_...", "whsec_xxx", "todo"}


# Secrets the operator makes up (the admin token, the Pipedrive webhook's password, usage
# tokens, CRM_SECRET_<SOURCE>) must be hard to guess: online guessing is throttled
# (bridge.core.throttle), but "aaaaaaaaaaaaaaaa" or "p" fall to a short list of guesses.
# Secrets a vendor issues (Stripe's, HubSpot's, API keys) are taken as they come.
SECRET_MIN_LENGTH = 16
SECRET_MIN_DISTINCT = 8  # characters; a random 16-character token has about 13
MAKE_ONE = "make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"


def weakness(value: str) -> str | None:
    """Why ``value`` is too weak to be a secret, or None."""
    if value.lower() in PLACEHOLDERS:
        return "is empty or a placeholder"
    if len(value) < SECRET_MIN_LENGTH:
        return f"is shorter than {SECRET_MIN_LENGTH} characters"
    if len(set(value)) < SECRET_MIN_DISTINCT:
        return f"has fewer than {SECRET_MIN_DISTINCT} distinct characters"
    return None


class SecretList:
    """The one reader of a comma-separated list of secrets (several during a rotation).

    ``parse`` gives () when the variable is unset, and refuses (:class:`ConfigError`,
    naming the variable, never a value) a placeholder or an empty value among them: an
    empty secret verifies against an empty key, which anyone can forge. ``strong``:
    secrets the operator makes up must also be hard to guess (:func:`weakness`).
    ``skip_blanks``: empty items are dropped instead (``a,,b``).
    """

    @staticmethod
    def parse(
        name: str, raw: str, *, strong: bool = False, skip_blanks: bool = False, hint: str = ""
    ) -> tuple[str, ...]:
        if not raw.strip():
            return ()
        parts = tuple(p.strip() for p in raw.split(","))
        if skip_blanks:
            parts = tuple(p for p in parts if p)
        if any(p.lower() in PLACEHOLDERS for p in parts):
            raise ConfigError(hint or f"{name} holds an empty value or a placeholder")
        if strong:
            for value in parts:
                why = weakness(value)
                if why is not None:
                    which = "one of its values" if len(parts) > 1 else "its value"
                    raise ConfigError(f"{name}: {which} {why}; {MAKE_ONE}")
        return parts
