"""The tables: what the bridge has received, what it intends, and what it has done.

The database, not Redis, is the record of truth. Redis only wakes workers up; every
state a worker needs to finish or recover an intent is here.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import BigInteger, Column, DateTime, Index, Text, UniqueConstraint, text
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


def _ts(*, nullable: bool = False, index: bool = False) -> Column[datetime]:
    return Column(DateTime(timezone=True), nullable=nullable, index=index)


class WebhookEvent(SQLModel, table=True):
    """One verified delivery, stored once per (provider, external id) whatever the retries."""

    __tablename__ = "webhook_event"
    __table_args__ = (
        UniqueConstraint("provider", "external_id", name="uq_event_provider_id"),
        # What retention has still to look at, oldest first: pruned rows leave the index.
        Index(
            "ix_webhook_event_unpruned",
            "received_at",
            sqlite_where=text("pruned_at IS NULL"),
            postgresql_where=text("pruned_at IS NULL"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    provider: str = Field(max_length=20)
    external_id: str = Field(max_length=255)
    type: str = Field(max_length=100, index=True)
    api_version: str | None = Field(default=None, max_length=40)
    livemode: bool = False
    # The payload as received, minus values that are secrets (checkout client_secret, ...).
    payload: str = Field(sa_column=Column(Text, nullable=False))
    received_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    # "planned" (it implied intents), "ignored" (handled type, nothing to do, or unhandled).
    outcome: str = Field(max_length=20)
    note: str | None = Field(default=None, max_length=500)
    # When retention emptied ``payload`` (bridge.store.retention); provider, id, type and
    # time stay, so a late redelivery is still a duplicate.
    pruned_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))


class Intent(SQLModel, table=True):
    """One intended Cryptolens effect; its id comes from the business object."""

    __tablename__ = "intent"

    id: str = Field(primary_key=True, max_length=255)
    effect: str = Field(max_length=30)
    license_ref: str = Field(max_length=255, index=True)
    params: str = Field(sa_column=Column(Text, nullable=False))  # JSON
    occurred_at: int = Field(sa_type=BigInteger)  # unix seconds: past 2**31 in 2038
    status: str = Field(max_length=20, index=True)
    attempts: int = 0
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    result: str | None = Field(default=None, sa_column=Column(Text, nullable=True))  # JSON
    event_id: int | None = Field(default=None, foreign_key="webhook_event.id", index=True)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    next_attempt_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    lease_until: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    lease_owner: str | None = Field(default=None, max_length=100)


class License(SQLModel, table=True):
    """The Cryptolens key behind a license ref (a subscription, a one-off payment)."""

    __tablename__ = "license"

    ref: str = Field(primary_key=True, max_length=255)
    product_id: int | None = None
    template_id: int | None = None
    key: str | None = Field(default=None, max_length=100, index=True)
    customer_id: int | None = None
    created_by: str | None = Field(default=None, max_length=255)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    # The newest payment-status block/unblock decision applied (provider time), so that
    # an older one arriving late does not undo it; block_reason is None for an unblock.
    block_decided_at: int | None = Field(default=None, sa_type=BigInteger)
    block_reason: str | None = Field(default=None, max_length=30)
    # An ending block in force (canceled, refund, dispute), whatever the order of
    # deliveries; no payment-status change touches it, and only a won dispute clears it
    # (bridge.core.blocks).
    ended_by: str | None = Field(default=None, max_length=30)
    # The newest customer decision applied (a CRM deal's contact or company changed, in
    # provider time), so that an older change arriving late does not undo it.
    customer_decided_at: int | None = Field(default=None, sa_type=BigInteger)


class StartHint(SQLModel, table=True):
    """What a later delivery says about a key creation already stored under its id.

    A subscription starts with three events in no fixed order (the checkout session,
    ``customer.subscription.created``, the first ``invoice.paid``), all planning the same
    ``create_key`` intent; the first stored is the intent's row, and each later one
    leaves its params here. The worker merges them before the key is created, so the
    most specific template hint wins whatever came first.
    """

    __tablename__ = "start_hint"
    __table_args__ = (UniqueConstraint("intent_id", "event_id", name="uq_start_hint_intent_event"),)

    id: int | None = Field(default=None, primary_key=True)
    intent_id: str = Field(max_length=255, foreign_key="intent.id")
    event_id: int = Field(index=True)
    params: str = Field(sa_column=Column(Text, nullable=False))  # JSON


class LicenseAlias(SQLModel, table=True):
    """Another name for a license ref (a subscription's payment intent or charge)."""

    __tablename__ = "license_alias"

    alias: str = Field(primary_key=True, max_length=255)
    ref: str = Field(max_length=255, index=True)


class Attempt(SQLModel, table=True):
    """A mutating Cryptolens call, written *before* it is sent.

    An attempt whose ``outcome`` is still empty was in flight when its worker stopped, or
    its reply was lost: the next run of the intent reads Cryptolens back before deciding
    to send again. ``sent_at`` bounds the Web API Log / GetEvents window of that read-back.
    """

    __tablename__ = "attempt"

    id: int | None = Field(default=None, primary_key=True)
    intent_id: str = Field(max_length=255, index=True, foreign_key="intent.id")
    method: str = Field(max_length=60)
    # Attempts that must be settled one at a time share a scope: "create:<product id>".
    scope: str | None = Field(default=None, max_length=100, index=True)
    sent_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    finished_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    # "applied", "refused", "not_applied" (transient), "unknown" (outcome unknown), or
    # None while in flight.
    outcome: str | None = Field(default=None, max_length=20)
    detail: str | None = Field(default=None, sa_column=Column(Text, nullable=True))  # JSON


class Lock(SQLModel, table=True):
    """Short leases that serialize work on one license, one product's key creation, ..."""

    __tablename__ = "lock"

    name: str = Field(primary_key=True, max_length=255)
    owner: str = Field(max_length=100)
    until: datetime = Field(sa_column=_ts())


class LoggedDelivery(SQLModel, table=True):
    """A delivery that stored no new event: refused (and why), or a duplicate.

    Only the newest ``bridge.store.deliveries.KEEP`` rows are kept, and never a body: a
    forged or garbled request is evidence of *what* was refused, not something to keep.
    """

    __tablename__ = "delivery_log"

    id: int | None = Field(default=None, primary_key=True)
    provider: str = Field(max_length=20)
    # "refused" or "duplicate"
    outcome: str = Field(max_length=20)
    # Why: no_header, malformed_header, timestamp, no_match, bad_json, ... or duplicate.
    cause: str = Field(max_length=40)
    detail: str | None = Field(default=None, max_length=300)
    external_id: str | None = Field(default=None, max_length=255)  # duplicates only
    client: str | None = Field(default=None, max_length=64)  # the peer's address
    received_at: datetime = Field(default_factory=utcnow, sa_column=_ts(index=True))


class DeliveryCount(SQLModel, table=True):
    """Every delivery ever logged in :class:`LoggedDelivery`, counted by provider and cause
    (the log itself is bounded; these counts are not)."""

    __tablename__ = "delivery_count"

    provider: str = Field(primary_key=True, max_length=20)
    cause: str = Field(primary_key=True, max_length=40)
    outcome: str = Field(max_length=20)
    count: int = Field(default=0, sa_type=BigInteger)
    last_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class AdminSession(SQLModel, table=True):
    """A signed-in session of the admin page (``bridge.store.sessions`` owns the table).

    Only the SHA-256 of the session id is kept: the id itself is in the operator's cookie,
    so reading this table yields nothing that signs anyone in. Signing out deletes the row.
    """

    __tablename__ = "admin_session"

    id_hash: str = Field(primary_key=True, max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    expires_at: datetime = Field(sa_column=_ts(index=True))


class UsageAggregate(SQLModel, table=True):
    """The units of one (product, key, meter) that arrived in one window: one intent.

    ``id`` is the intent's id, built from those four values, so every web process and
    worker names the same aggregate alike. Records are added while ``sealed_at`` is
    empty; the worker seals it before reading ``quantity``, so the amount it reports is
    final, and a record that finds it sealed joins the next (open) window instead.
    """

    __tablename__ = "usage_aggregate"

    id: str = Field(primary_key=True, max_length=255)
    product_id: int
    key: str = Field(max_length=100)
    meter: str = Field(default="", max_length=64)
    window_start: int = Field(sa_type=BigInteger)  # unix seconds, a multiple of the window
    window_seconds: int
    sink: str = Field(max_length=20)  # "cryptolens" or "stripe_meter", fixed when opened
    quantity: int = Field(default=0, sa_type=BigInteger)
    records: int = 0
    sealed_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))


class UsageRecord(SQLModel, table=True):
    """The ledger: one row per unit of usage reported, once per idempotency key."""

    __tablename__ = "usage_record"
    __table_args__ = (UniqueConstraint("idempotency_key", name="uq_usage_record_idempotency_key"),)

    id: int | None = Field(default=None, primary_key=True)
    idempotency_key: str = Field(max_length=255)
    product_id: int
    key: str = Field(max_length=100)
    meter: str = Field(default="", max_length=64)
    quantity: int = Field(sa_type=BigInteger)
    occurred_at: datetime = Field(sa_column=_ts())  # when the usage happened (the sender's)
    received_at: datetime = Field(sa_column=_ts())  # when it arrived: decides the window
    source: str = Field(max_length=20)  # "api" or "collector"
    # The aggregate it was billed with (no foreign key: the record is written first, so
    # that only a new record opens or adds to an aggregate).
    aggregate_id: str = Field(max_length=255, index=True)


class UsageCounter(SQLModel, table=True):
    """The collector's watermark: the last reading of one counter data object on a key.

    Written in the transaction that adds the ledger records for an increase, so a second
    run (or a run after a restart) measures from the reading already billed.
    """

    __tablename__ = "usage_counter"

    product_id: int = Field(primary_key=True)
    key: str = Field(primary_key=True, max_length=100)
    name: str = Field(primary_key=True, max_length=100)
    object_id: int  # the data object's id: a new object (same name) is a new counter
    value: int = Field(sa_type=BigInteger)
    read_at: datetime = Field(sa_column=_ts())  # when the reading's call was sent
    # How many times the counter started over (went down, or a new object): part of the
    # ledger records' idempotency keys, so a counter rising again through the same
    # values after a reset is new usage, not a duplicate.
    epoch: int = 0
    # The last time the counter went down (reported, not billed): "from -> to at <time>".
    note: str | None = Field(default=None, max_length=200)
