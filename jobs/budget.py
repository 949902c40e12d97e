"""The render-time ledger on ``users.render_*`` (SPEC §8).

Every change is one compare-and-set or arithmetic ``UPDATE`` evaluated by the database, never
read-modify-write in Python, so concurrent requests and workers cannot overspend:

- ``render_budget_ms``: the account's total allowance;
- ``render_used_ms``: time charged so far (never exceeds the budget);
- ``render_reserved_ms``: estimates held by pending and processing renders.

Store functions only flush; the caller's session commits.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from jobs.db import updated_one
from jobs.models.account import User
from jobs.models.render import Render


@dataclass(frozen=True)
class BudgetStatus:
    """The account's render-time figures in milliseconds (the API's budget status DTO)."""

    total_ms: int
    used_ms: int
    reserved_ms: int

    @property
    def remaining_ms(self) -> int:
        """What is neither charged nor reserved (never negative)."""
        return max(0, self.total_ms - self.used_ms - self.reserved_ms)


@dataclass(frozen=True)
class Charge:
    """Outcome of charging worker time: ``charged_ms`` actually booked, and whether the
    account ran out (the render must stop)."""

    charged_ms: int
    exhausted: bool


async def lock_account(session: AsyncSession, user_id: uuid.UUID) -> None:
    """Serialise this transaction against others that lock the same account.

    A no-op ``UPDATE`` of the user row takes PostgreSQL's row lock and SQLite's write lock
    (``BEGIN IMMEDIATE``, see ``jobs.db``) until commit, so a count-then-insert that follows
    (the concurrency limit) cannot be raced past.
    """
    await session.execute(
        sa.update(User)
        .where(User.id == user_id)
        .values(render_reserved_ms=User.render_reserved_ms)
        .execution_options(synchronize_session=False)
    )


async def budget_status(session: AsyncSession, user_id: uuid.UUID) -> BudgetStatus:
    """The account's current figures, read fresh from the database."""
    row = (
        await session.execute(
            sa.select(User.render_budget_ms, User.render_used_ms, User.render_reserved_ms).where(
                User.id == user_id
            )
        )
    ).one()
    return BudgetStatus(total_ms=row[0], used_ms=row[1], reserved_ms=row[2])


async def reserve_render_time(session: AsyncSession, user_id: uuid.UUID, ms: int) -> bool:
    """Reserve ``ms`` of the account's budget if that much is free; True when reserved.

    Raises:
        ValueError: ``ms`` is negative.
    """
    if ms < 0:
        raise ValueError(f"cannot reserve a negative render time ({ms} ms)")
    result = await session.execute(
        sa.update(User)
        .where(
            User.id == user_id,
            User.render_used_ms + User.render_reserved_ms + ms <= User.render_budget_ms,
        )
        .values(render_reserved_ms=User.render_reserved_ms + ms)
        .execution_options(synchronize_session=False)
    )
    return updated_one(result)


async def release_render_time(session: AsyncSession, user_id: uuid.UUID, ms: int) -> None:
    """Give back ``ms`` of a reservation that will not be charged."""
    if ms <= 0:
        return
    await session.execute(
        sa.update(User)
        .where(User.id == user_id)
        .values(
            render_reserved_ms=sa.case(
                (User.render_reserved_ms > ms, User.render_reserved_ms - ms), else_=0
            )
        )
        .execution_options(synchronize_session=False)
    )


async def charge_render_time(
    session: AsyncSession, user_id: uuid.UUID, *, from_reserved: int, extra: int
) -> Charge:
    """Book worker time: ``from_reserved`` ms move from reserved to used, and up to ``extra``
    ms more are taken from the free budget. When less than ``extra`` is free, only what is
    free is charged and ``exhausted`` is True.
    """
    from_reserved = max(0, from_reserved)
    extra = max(0, extra)
    if from_reserved == 0 and extra == 0:
        return Charge(0, False)
    free = User.render_budget_ms - User.render_used_ms - User.render_reserved_ms
    # Right-hand sides see the row as it was, so `free` is the same before and after the
    # reserved -> used move.
    result = await session.execute(
        sa.update(User)
        .where(User.id == user_id, free >= extra)
        .values(
            render_reserved_ms=User.render_reserved_ms - from_reserved,
            render_used_ms=User.render_used_ms + from_reserved + extra,
        )
        .execution_options(synchronize_session=False)
    )
    if updated_one(result):
        return Charge(from_reserved + extra, False)
    # Not enough free budget: charge what is left. The row lock taken by lock_account makes
    # the read and the write below one step (no other transaction can change the row).
    await lock_account(session, user_id)
    status = await budget_status(session, user_id)
    extra_charged = max(0, min(extra, status.remaining_ms))
    await session.execute(
        sa.update(User)
        .where(User.id == user_id)
        .values(
            render_reserved_ms=User.render_reserved_ms - from_reserved,
            render_used_ms=User.render_used_ms + from_reserved + extra_charged,
        )
        .execution_options(synchronize_session=False)
    )
    return Charge(from_reserved + extra_charged, True)


async def charge_render(session: AsyncSession, render: Render, elapsed_ms: int) -> Charge:
    """Charge ``elapsed_ms`` of worker time to ``render`` and its account.

    The render's own reservation is drawn down first; beyond it the free budget is used.
    The render row is updated with arithmetic too, so a concurrent status change (cancel)
    never loses a charge. ``render.reserved_render_ms`` / ``render_time_ms`` are refreshed
    on the instance.
    """
    if elapsed_ms <= 0:
        return Charge(0, False)
    take = min(elapsed_ms, max(0, render.reserved_render_ms))
    charge = await charge_render_time(
        session, render.user_id, from_reserved=take, extra=elapsed_ms - take
    )
    await session.execute(
        sa.update(Render)
        .where(Render.id == render.id)
        .values(
            reserved_render_ms=Render.reserved_render_ms - take,
            render_time_ms=Render.render_time_ms + charge.charged_ms,
        )
        .execution_options(synchronize_session=False)
    )
    render.reserved_render_ms -= take
    render.render_time_ms += charge.charged_ms
    return charge


async def release_render(session: AsyncSession, render: Render) -> None:
    """Release whatever budget reservation ``render`` still holds (terminal states)."""
    held = render.reserved_render_ms
    if held <= 0:
        return
    await release_render_time(session, render.user_id, held)
    await session.execute(
        sa.update(Render)
        .where(Render.id == render.id)
        .values(reserved_render_ms=Render.reserved_render_ms - held)
        .execution_options(synchronize_session=False)
    )
    render.reserved_render_ms -= held


async def refund_render(session: AsyncSession, render: Render) -> int:
    """Give back everything ``render`` was charged (a failure that was the service's fault,
    such as a full disk); returns the milliseconds refunded."""
    charged = int(
        await session.scalar(sa.select(Render.render_time_ms).where(Render.id == render.id)) or 0
    )
    if charged > 0:
        await session.execute(
            sa.update(User)
            .where(User.id == render.user_id)
            .values(
                render_used_ms=sa.case(
                    (User.render_used_ms > charged, User.render_used_ms - charged), else_=0
                )
            )
            .execution_options(synchronize_session=False)
        )
        await session.execute(
            sa.update(Render)
            .where(Render.id == render.id)
            .values(render_time_ms=Render.render_time_ms - charged)
            .execution_options(synchronize_session=False)
        )
    render.render_time_ms = 0
    return charged
