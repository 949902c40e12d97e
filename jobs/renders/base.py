"""What the render store modules share: status groups and the compare-and-set update
(refusals are ``jobs.errors.Refused``).

Store functions only flush; the edge that owns the session commits (``api.deps`` for
requests, ``Database.session()`` in actors). Every status change is a compare-and-set
``UPDATE ... WHERE status = <expected>``: whoever loses a race changes nothing and backs off.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from jobs.db import updated_one
from jobs.models.base import ACTIVE_STATUSES, JobStatus
from jobs.models.render import Render, RenderChunk

# lease_owner of a render whose chunks are out with workers (each chunk holds its own lease).
CHUNKED = "chunked"
MAX_ATTEMPTS = 3


ACTIVE = tuple(ACTIVE_STATUSES)
TERMINAL = (JobStatus.Completed, JobStatus.Failed, JobStatus.Cancelled)
RUNNING = (JobStatus.Processing, JobStatus.Cancelling)


async def compare_and_set(
    session: AsyncSession,
    row_id: uuid.UUID,
    expected: Sequence[JobStatus],
    values: dict[str, Any],
    *,
    owner: str | None = None,
    table: type[Render | RenderChunk] = Render,
) -> bool:
    """Update the ``table`` row ``row_id`` only while its status is one of ``expected`` (and
    ``owner`` holds its lease, when given); True when this call changed it."""
    stmt = sa.update(table).where(table.id == row_id, table.status.in_(list(expected)))
    if owner is not None:
        stmt = stmt.where(table.lease_owner == owner)
    result = await session.execute(
        stmt.values(**values).execution_options(synchronize_session=False)
    )
    return updated_one(result)
