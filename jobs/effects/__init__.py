"""One Cryptolens effect per intent, whatever the order, the faults and the timing.

The rule every effect follows: before sending a call whose repetition would be a second
effect, write an attempt row; if an attempt's outcome is unknown (no reply, or the worker
died), *read back* first and send again only once the read-back shows the effect absent
*and* the call can no longer land (``settle_after``: its longest duration plus
``BRIDGE_SETTLE_SECONDS``, since a request may still be applied after its client gave
up). Setting calls (ChangeNotes, ChangeCustomer) are repeated freely.

Why each effect is exactly once when two intents race on one key. Three things hold for
every run (each with a test in tests/scenarios/test_effects_races.py):

(a) Runs on one license never overlap: the claim takes the license's lease with the
    intent's, in one transaction, and both are renewed while the run is alive
    (``jobs.lease``). A run that cannot renew stops *before* its next call, and a call is
    only sent while the lease covers its longest duration, so a run that lost its lease
    has no call in flight when another run takes over.
(b) Every call is sent only after the run has settled every unresolved attempt that its
    read-back could confuse with its own (below); so at most one such attempt is ever
    unresolved, and a read-back never credits one intent with another's effect.
(c) The run's outcome (status, settled attempts, license facts) is written in one
    transaction that first checks the run still owns the intent.

- EXTEND aims at an absolute expiry: read the key, extend by the difference or not at all.
  ExtendLicense, BlockKey and UnblockKey share the attempt scope ``key:<license>``: before
  any of them is sent, every unresolved attempt in the scope, of any intent, is settled
  against the exact state it would have produced (an extension: ``before + days``, or
  today + days for an expired key; a block: the flag). An expiry that is neither that
  value nor the one before goes to a person. So renewal B can never be read as A's effect.
- BLOCK / UNBLOCK (the rule: ``bridge.core.blocks``): a block that ends the license
  (canceled, refund, dispute) is applied whatever its age, and holds from the moment its
  intent is stored: an unblock that runs while the ending block's outcome is unknown (its
  reply lost) or before it ran leaves the key alone, reading nothing, so it neither
  lifts it nor credits itself with its BlockKey. Only a won dispute lifts a block, its
  own dispute's, and unblocks only when no other ending block holds and the newest
  payment status is not a block. Payment-status blocks and unblocks (unpaid, past due,
  active again) apply only when newer than the license's last such decision, so
  reordered deliveries converge; they are recorded while the license is ended too.
- REGISTER_EVENT carries the intent id in its Metadata; a lost reply is settled by
  GetEvents filtered on that exact Metadata string, once the call can no longer land.
  Events of one key that are due together go in one RegisterEvents call. It needs no
  license lease (``claims.LEASE_FREE_EFFECTS``): what keeps each event single is its intent
  lease. The claim of one event (the lead) takes, in the same transaction, the key's
  other pending, due events whose calls are all settled (companions), each by an update
  that succeeds only while the row is unchanged since it was read (so an intent another
  run has claimed meanwhile, or claimed, sent and put back with its outcome unknown, is
  left alone), under the lead's lease owner: so an event is in at most one run, alone or
  as anyone's companion, and two leads racing on one key take disjoint sets. The run
  renews and confirms every member's lease before the call (a lost one: nothing sent),
  writes one attempt row per member in one transaction before it, and ends every member
  with the call's outcome in the transaction that ends the lead. The events cannot be
  mistaken for each other: each carries its own intent's exact Metadata, so after a
  lost reply each member, in its own run and alone (an intent with an unresolved call
  is never a companion, and gathers none), finds its own event or, once the call can no
  longer land, sends it again; whether Cryptolens applied the batch whole or in part,
  each event is counted by its own read-back. A batch Cryptolens refuses registered
  nothing: its members go back to pending and are sent alone (an event with a refused
  call is never a companion, and gathers none), so only the bad event fails.
- RECORD_USAGE cannot be read back: an unknown outcome goes to a person.
- REPORT_USAGE sends one usage aggregate. Two of them racing on one key are two
  different aggregates (their ids name the window), each holding its own records: a
  record joins exactly one aggregate, in the transaction that stores it, and only while
  that aggregate is unsealed; the run seals its aggregate before it reads the amount, in
  a transaction ordered with every record's (the aggregate's row lock), so the amount
  sent is final and no record is in two amounts. Runs on one key are serialized by (a);
  RecordUsage adds, so two aggregates' calls never undo each other. Its own RecordUsage
  left unresolved goes to a person (it cannot be read back); a Stripe meter event left
  unresolved is sent again with the same identifier (Stripe dedupes it), but only while
  the first send is under 23 hours old, else to a person.
- TRACK_REVENUE / TRACK_EVENT (myTracker, ``jobs.effects.tracker``) touch no license
  and need no key; like events, a run takes due items of its effect as companions (of
  any license: myTracker batches per app) by the same guarded claim, so an item is in
  one run at a time, and writes one attempt row per item before its one batch call. A
  revenue's idTransaction is unique in the myTracker project and myTracker keeps one
  revenue per id, so a revenue whose call is unresolved is sent again, and two sends
  race harmlessly; a custom event is not deduped, so one whose call is unresolved goes
  to a person and is never sent again by the bridge. A batch refused for bad data
  imported nothing: its items are sent again, each alone (an item with a refused call
  is never a companion again), so only the bad one fails.
- LINK_CUSTOMER links the key to the buyer found by email (added if none), once both the
  key and the buyer are known, whichever start event named the buyer. AddCustomer gets an
  attempt row (scope: the email); its read-back is the search by email, which cannot see
  a call in flight, so while an AddCustomer of that email is unresolved and may still
  land no other is sent, and a search that finds nothing settles it only past its window.
- SET_CUSTOMER (a CRM deal's contact or company changed) applies only when newer than the
  license's last customer decision (``customer_decided_at``, written with the run's
  outcome in the run's transaction), and sends ChangeCustomer only when the customer
  found differs from the one linked: two changes on one key run one after the other
  (a), the older of them is superseded whichever ran first, and ChangeCustomer is a
  setting repeated freely. WRITE_BACK sets a CRM deal property: a setting too.
- LINK_CUSTOMER as a repair from ``reconcile --repair`` names the customer
  (``params["customer_id"]``): it reads the key's link in Cryptolens and sends
  ChangeCustomer only when it differs; a setting, so two such intents on one key
  (serialized by (a) anyway) end with the same link.
- CREATE_KEY merges what every start event of the purchase said (``start_hint``) and, for
  a subscription that nothing names a template for yet, waits ``BRIDGE_START_WAIT_SECONDS``
  for the other start events before the default template. By default the key is made
  by CreateKey with the intent's tag in its notes and the buyer inside: a lost reply is
  read back by GetKeys on the tag once the call can no longer land, with no gate (each
  creation's outcome is its own). For a product in ``[cryptolens] create_from_template``
  creations of one template run concurrently (a launch burst): keys made from one
  template are interchangeable until the bridge tags and links them. The product's
  creation gate (``creations.begin_create``, one transaction each) lets a creation start only
  while every creation in flight is of the same template and no outcome is unknown; once
  one is unknown, new ones wait, the ones in flight end, and one run settles every
  unknown one together while it holds the gate: the Web API Log (state 3010) since the
  first of them, minus every key held or listed in an open review, gives the candidates.
  A key's own tag decides at once; untagged keys of the template are the bridge's only
  where the product is declared the bridge's alone (``[cryptolens] sole_key_maker``);
  anywhere else, or more such keys than unknown attempts, goes to a person. Fewer keys
  than attempts: the attempts left made none, decided only once none of the window's
  calls can still land; those intents create again. Two racing creations on one *key*
  cannot happen (a license has one creation intent, and its runs are serialized by (a)).
"""

from __future__ import annotations

from typing import Any

from bridge.core.intents import Effect
from bridge.rules.deals import needs_deal
from jobs.effects.analytics import register_event
from jobs.effects.blocks import set_block
from jobs.effects.customers import link_customer, set_customer
from jobs.effects.deals import enrich
from jobs.effects.expiry import extend
from jobs.effects.keys import create_key
from jobs.effects.readkey import read_key
from jobs.effects.run import Run
from jobs.effects.stripe_writeback import stripe_write_back
from jobs.effects.tracker import track
from jobs.effects.usage import record_usage, report_usage
from jobs.effects.writeback import write_back
from jobs.errors import NeedsReview

__all__ = ["Run", "apply"]


async def apply(run: Run) -> dict[str, Any]:
    """Run one claimed intent (its license lease is held); returns the intent's result."""
    intent = run.intent
    if needs_deal(intent.effect, intent.params):
        await enrich(run)  # a CRM deal's buyer, pipeline and amount, fetched
    if intent.effect is Effect.CREATE_KEY:
        return await create_key(run)
    if intent.effect in (Effect.TRACK_REVENUE, Effect.TRACK_EVENT):
        return await track(run)  # needs no key: myTracker knows none
    license_ = intent.license
    # claim() parks intents whose license has no key, so these hold for the others.
    assert license_ is not None and license_.key is not None and license_.product_id
    if intent.effect is Effect.EXTEND:
        return await extend(run, license_)
    if intent.effect in (Effect.BLOCK, Effect.UNBLOCK):
        return await set_block(run, license_)
    if intent.effect is Effect.REGISTER_EVENT:
        return await register_event(run, license_)
    if intent.effect is Effect.RECORD_USAGE:
        return await record_usage(run, license_)
    if intent.effect is Effect.REPORT_USAGE:
        return await report_usage(run, license_)
    if intent.effect is Effect.LINK_CUSTOMER:
        return await link_customer(run, license_)
    if intent.effect is Effect.SET_CUSTOMER:
        return await set_customer(run, license_)
    if intent.effect is Effect.WRITE_BACK:
        return await write_back(run, license_)
    if intent.effect is Effect.READ_KEY:
        return await read_key(run, license_)
    if intent.effect is Effect.STRIPE_WRITE_BACK:
        return await stripe_write_back(run, license_)
    raise NeedsReview(f"unknown effect {intent.effect}")
