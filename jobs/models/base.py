"""Declarative base, naming convention, UTC timestamps and the shared ``JobStatus`` enum."""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# Constraint names are derived, so alembic autogenerate and both databases agree on them.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


def new_id() -> uuid.UUID:
    """A fresh random primary key."""
    return uuid.uuid4()


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python.

    SQLite keeps no offset, so values are normalised to UTC on the way in and tagged as UTC on
    the way out; PostgreSQL stores ``timestamptz`` and round-trips the same way.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given for a UTC column; use jobs.models.utcnow()")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class JobStatus(enum.StrEnum):
    """Lifecycle of every job (SPEC §7). Values are the lowercase strings the API shows."""

    Pending = "pending"
    Processing = "processing"
    Cancelling = "cancelling"
    Completed = "completed"
    Failed = "failed"
    Cancelled = "cancelled"
    Deleted = "deleted"

    @property
    def is_active(self) -> bool:
        """Pending, processing or cancelling: the job still holds resources."""
        return self in ACTIVE_STATUSES

    @property
    def is_terminal(self) -> bool:
        """Completed, failed or cancelled (or deleted)."""
        return not self.is_active


ACTIVE_STATUSES = frozenset({JobStatus.Pending, JobStatus.Processing, JobStatus.Cancelling})


def job_status_column() -> Any:
    """The column type used for every ``JobStatus`` field: a plain string on both databases."""
    return sa.Enum(
        JobStatus,
        native_enum=False,
        length=16,
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
        name="job_status",
    )


class Base(DeclarativeBase):
    """Base of every model; carries the naming convention and common type mapping."""

    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        datetime: UTCDateTime(),
        uuid.UUID: sa.Uuid(),
        dict[str, Any]: sa.JSON(),
        JobStatus: job_status_column(),
    }


class IdMixin:
    """A UUID primary key generated in Python (so ids exist before the INSERT)."""

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)


class CreatedMixin:
    """``created_at`` in UTC, set on insert."""

    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class EnqueuedMixin:
    """``last_enqueued_at``: when the job's message was last sent (set on insert, since the
    row is enqueued by the transaction that creates it, and again at every re-send). The
    sweeper re-sends pending jobs whose message has been out too long (``jobs.resend``)."""

    last_enqueued_at: Mapped[datetime | None] = mapped_column(default=utcnow)
