"""What a CRM webhook only names by id, fetched from the CRM before an effect needs it.

A HubSpot or Pipedrive intent carries ``deal_id``; its provider's ``deal`` hook reads the
deal's current pipeline, amount and primary contact and company through the worker's
one client for that CRM. The facts fill what the planner could not know (the buyer, the
pipeline that names the template, the value of ``deal_won``) and never replace what the
payload itself said. A read is repeated freely: no attempt row.
"""

from __future__ import annotations

import dataclasses

from bridge import registry
from bridge.rules.deals import enriched
from jobs.effects.run import Run


async def enrich(run: Run) -> None:
    """Fill ``run.intent.params`` from the deal, where the intent asks for it
    (``bridge.rules.deals.enriched``, as the dry run does)."""
    intent = run.intent
    deal_id = intent.params.get("deal_id")
    hooks = registry.hooks_for(intent.ref)
    hook = hooks.deal if hooks is not None else None
    if deal_id is None or hook is None:
        return
    deal = await hook(run.rt, str(deal_id))
    run.intent = dataclasses.replace(intent, params=enriched(intent.params, deal))
