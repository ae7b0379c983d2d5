"""Operator commands: events, intents, replay, the dry run, reconcile, catch-up, forget.

The product's (in the wheel and the image), because operators run them against a live
bridge's records, and the admin page calls them too: ``intents`` (events, intents,
replay), ``catchup`` (Stripe events the webhook missed), ``dryrun`` (``replay
--dry-run``, the admin page's plan), ``reconcile``, ``forget`` (one person's data
erased), and ``terminal`` (stored text escaped for the terminal they print to). They
raise ``bridge.ops.errors``, never click's errors: ``bridge.cli`` and the admin page
translate. Never on the request path: the web app imports them only for the admin page.
"""
