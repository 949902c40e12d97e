"""Storage quota ledger: atomic compare-and-set updates on the users row.

Never read-modify-write: each function is one UPDATE whose WHERE clause carries the check, so
concurrent requests (any number of API processes) can never overspend. Store functions only
flush; the caller's unit of work commits.
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from jobs.db import updated_one
from jobs.models import User

MB = 1024 * 1024


async def _update(session: AsyncSession, stmt: sa.Update) -> bool:
    result = await session.execute(stmt.execution_options(synchronize_session=False))
    return updated_one(result)


async def reserve_storage(session: AsyncSession, user_id: uuid.UUID, nbytes: int) -> bool:
    """Reserve ``nbytes`` if used + reserved + nbytes stays within the quota.

    Returns:
        True when reserved; False when the quota would be exceeded (nothing changed).
    """
    if nbytes < 0:
        raise ValueError("cannot reserve a negative size")
    stmt = (
        sa.update(User)
        .where(
            User.id == user_id,
            User.storage_used_bytes + User.storage_reserved_bytes + nbytes
            <= User.storage_quota_bytes,
        )
        .values(storage_reserved_bytes=User.storage_reserved_bytes + nbytes)
    )
    return await _update(session, stmt)


async def settle_storage(
    session: AsyncSession, user_id: uuid.UUID, reserved: int, actual: int
) -> None:
    """Turn a reservation of ``reserved`` bytes into ``actual`` used bytes.

    ``actual`` may exceed the reservation (a render's estimate, a ZIP's extracted size): the
    account may then sit slightly over its quota and further uploads are refused.
    """
    await _update(
        session,
        sa.update(User)
        .where(User.id == user_id)
        .values(
            storage_reserved_bytes=_minus_floor(User.storage_reserved_bytes, reserved),
            storage_used_bytes=User.storage_used_bytes + max(actual, 0),
        ),
    )


async def settle_within_quota(
    session: AsyncSession, user_id: uuid.UUID, reserved: int, actual: int
) -> bool:
    """Like ``settle_storage``, but only when the account stays within its quota: the
    output may grow past its reservation into the account's free space, never beyond it.

    Returns:
        True when settled; False when ``actual`` does not fit (nothing changed: the caller
        releases the reservation and throws the output away).
    """
    reserved, actual = max(reserved, 0), max(actual, 0)
    return await _update(
        session,
        sa.update(User)
        .where(
            User.id == user_id,
            User.storage_used_bytes + User.storage_reserved_bytes - reserved + actual
            <= User.storage_quota_bytes,
        )
        .values(
            storage_reserved_bytes=_minus_floor(User.storage_reserved_bytes, reserved),
            storage_used_bytes=User.storage_used_bytes + actual,
        ),
    )


async def free_bytes(session: AsyncSession, user_id: uuid.UUID) -> int:
    """What the account may still store: quota minus used and reserved (never negative)."""
    row = (
        await session.execute(
            sa.select(
                User.storage_quota_bytes, User.storage_used_bytes, User.storage_reserved_bytes
            ).where(User.id == user_id)
        )
    ).one()
    return max(0, int(row[0]) - int(row[1]) - int(row[2]))


async def grow_reservation(session: AsyncSession, user_id: uuid.UUID, extra: int) -> bool:
    """Reserve ``extra`` more bytes within the quota (same check as ``reserve_storage``)."""
    return await reserve_storage(session, user_id, extra)


async def release_storage(session: AsyncSession, user_id: uuid.UUID, reserved: int) -> None:
    """Give back a reservation that will not be used (failed upload or job)."""
    await _update(
        session,
        sa.update(User)
        .where(User.id == user_id)
        .values(storage_reserved_bytes=_minus_floor(User.storage_reserved_bytes, reserved)),
    )


async def free_storage(session: AsyncSession, user_id: uuid.UUID, nbytes: int) -> None:
    """Return ``nbytes`` of used storage (a deleted object); never goes below zero."""
    await _update(
        session,
        sa.update(User)
        .where(User.id == user_id)
        .values(storage_used_bytes=_minus_floor(User.storage_used_bytes, nbytes)),
    )


def _minus_floor(
    column: InstrumentedAttribute[int] | sa.ColumnElement[int], amount: int
) -> sa.ColumnElement[int]:
    amount = max(amount, 0)
    return sa.case((column >= amount, column - amount), else_=sa.literal(0))


def storage_status(user: User) -> dict[str, float | int]:
    """The ``StorageStatusDto`` numbers for ``user`` (reserved bytes count as used)."""
    quota = user.storage_quota_bytes
    used = user.storage_used_bytes + user.storage_reserved_bytes
    available = max(quota - used, 0)
    percentage = round(100.0 * used / quota, 2) if quota else (100.0 if used else 0.0)
    return {
        "quotaMB": quota // MB,
        "usedBytes": used,
        "availableBytes": available,
        "usagePercentage": percentage,
    }
