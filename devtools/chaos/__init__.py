"""``cryptolens-bridge chaos``: exactly once under redeliveries, reordering, faults and kills.

One run: a fresh database (a SQLite file, or a throwaway PostgreSQL database created next
to ``--database-url`` and dropped afterwards), a private ``redis-server``, the sandbox
failing 10% of calls before applying them and losing 5% of replies after (a 504 or a cut
connection), slow replies near the worker's read timeout in bursts, the web app, and a
worker that is SIGKILLed at random moments and started again. The workload
(``devtools.workload``): one-off purchases and subscriptions with renewals,
refunds, disputes, cancellations and unpaid spells, every event delivered three times,
all shuffled and posted concurrently. Beside the bridge, another client of the vendor
creates keys of the same product (every template) from the same network while replies
are lost (``POST /sandbox/keys``).

Once no intent is pending, running or waiting, the sandbox's state and the database are
checked against what each purchase must have become: exactly one key, of its template,
linked to its buyer, expiring where its payments say, blocked exactly where it ended,
one analytics event per payment, no key held by two licenses, every foreign key left as
its maker made it, and no key nobody accounts for.

Its modules: ``run`` (one run: the stack, the deliveries, the kills), ``faults`` (the
slow replies and the other client's keys), ``db`` (a throwaway database per run),
``check`` (what each purchase must have become), ``report`` (a run's result and its
lines) and ``command`` (``cryptolens-bridge chaos``).
"""
