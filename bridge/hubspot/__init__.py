"""HubSpot: ``POST /webhooks/hubspot`` (signed batches of CRM events) and the CRM v3 API
the worker reads deals from and writes keys back to."""
