"""What every CRM shares: deal events, their intents, the generic signed contract and
the CRM API error split. HubSpot and Pipedrive read their own payloads into
:class:`bridge.crm.deals.DealEvent` and plan with :func:`bridge.crm.deals.plan`."""
