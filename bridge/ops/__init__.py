"""The operator's commands: they raise the bridge's errors; the CLI wraps them."""
