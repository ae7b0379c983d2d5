"""The operator's page at ``/admin``: deliveries, intents, licenses, the needs-review queue.

Server-rendered (Jinja2, plain forms, no script), behind ``BRIDGE_ADMIN_TOKEN`` and a
session kept in the database (``bridge.admin.auth``, ``bridge.store.sessions``: signing
out ends it in every web process); mounted by ``bridge.app`` only when a token is set,
so it answers 404 otherwise and the webhook path never imports it. License keys are shown
(that is what the operator came for) but never logged; no secret or token is rendered.
"""

from bridge.admin.routes import mount

__all__ = ["mount"]
