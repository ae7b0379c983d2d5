"""Operator commands: they raise bridge.core.errors; the CLI and the admin page wrap them."""
