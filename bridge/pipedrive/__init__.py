"""Pipedrive: ``POST /webhooks/pipedrive`` (webhooks v2 behind HTTP Basic auth) and the
API v2 the worker reads deals, persons and organizations from and writes keys back to."""
