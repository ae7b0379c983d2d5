"""myTracker's server-to-server import: payments and business events, off unless
configured (``[mytracker] app_id`` in the TOML and ``MYTRACKER_API_KEY``).

``config`` is the TOML table, ``items`` what the planners add beside the Cryptolens
intents (pure), ``api`` the worker's calls (customRevenueBatch, customEventBatch).
"""
