"""Operator commands: events, intents, replay, the dry run and reconcile."""
