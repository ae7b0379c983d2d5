"""Developer tools: in a checkout (``make install``), never in the bridge's wheel or image.

Each module is here because no operator of a running bridge needs it, and the product
must not carry what only development runs:

    procs           the one process supervisor: dev, the bench, chaos and the tests
    dev             the demo's supervisor: web, worker, sandbox on local defaults
                    (dev_setup: the environment it fills in and the banner)
    send, send_crm  sign a sample webhook as its sender would: a test input, not an
                    operation on the bridge's records
    bench/          measurements (stack, ingest, burst, starts, usage, reconcile, scrape)
    loadgen         the bench's load generator and bare endpoint (loadgen_requests: what it sends)
    chaos/, workload exactly once under faults and kills, and the purchases it drives
    crm_standin, stripe_standin   stand-ins for HubSpot/Pipedrive and Stripe's API

The operator commands (events, intents, replay, the dry run, reconcile) and the terminal
escaping they print through are the product's: ``bridge.ops``. ``commands`` registers
``dev``, ``send``, ``bench`` and ``chaos`` with ``cryptolens-bridge`` (``bridge.cli``).
"""
