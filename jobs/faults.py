"""Which failures are the infrastructure's rather than the job's: an unreachable database
or broker (``is_unavailable``) and a full disk (``is_disk_full``).

The API maps the first to 503 ``service_unavailable`` and the second to 507
``storage_full``; workers retry the first and never charge a user for either.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from typing import Literal

import sqlalchemy.exc

Dependency = Literal["database", "broker"]

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# Failure code of a render that ran out of disk: failed, not charged (see README).
STORAGE_FULL = "storage_full"
STORAGE_FULL_REASON = (
    "The server ran out of disk space while rendering; nothing was charged. "
    "Submit the render again later"
)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _asyncpg_unavailable(exc: BaseException) -> bool:
    try:
        import asyncpg
    except ImportError:  # pragma: no cover - asyncpg is a dependency
        return False
    return isinstance(
        exc,
        (
            asyncpg.exceptions.PostgresConnectionError,
            asyncpg.exceptions.CannotConnectNowError,
            asyncpg.exceptions.TooManyConnectionsError,
            asyncpg.exceptions.AdminShutdownError,
            asyncpg.exceptions.InterfaceError,
        ),
    )


def _redis_unavailable(exc: BaseException) -> bool:
    try:
        import redis.exceptions
    except ImportError:  # pragma: no cover - redis is a dependency
        return False
    return isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError))


def is_unavailable(exc: BaseException) -> Dependency | None:
    """``"database"`` or ``"broker"`` when ``exc`` (or what caused it) says that dependency
    cannot be reached right now, else None. Programming errors (bad SQL, constraint
    violations) are not outages and answer None."""
    for item in _chain(exc):
        if _redis_unavailable(item):
            return "broker"
        if isinstance(item, sqlalchemy.exc.DBAPIError) and item.connection_invalidated:
            return "database"
        if isinstance(
            item,
            (
                sqlalchemy.exc.OperationalError,
                sqlalchemy.exc.InterfaceError,
                sqlalchemy.exc.DisconnectionError,
                sqlalchemy.exc.TimeoutError,  # pool checkout timed out
            ),
        ):
            return "database"
        if _asyncpg_unavailable(item):
            return "database"
        if isinstance(item, (ConnectionError, TimeoutError)) or (
            isinstance(item, OSError) and item.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH)
        ):
            # Raw socket errors surface from asyncpg's connect(); the broker's are redis
            # exceptions (above), so a bare connection error here is the database's.
            return "database"
    return None


def outage_exception_types() -> tuple[type[Exception], ...]:
    """The exception classes an outage or a full disk surfaces as (the API handles these
    so that it can answer 503 or 507; anything else of these types is still a 500)."""
    import asyncpg
    import redis.exceptions

    return (
        sqlalchemy.exc.SQLAlchemyError,
        OSError,
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
        redis.exceptions.RedisError,
    )


def is_disk_full(exc: BaseException) -> bool:
    """True when ``exc`` (or what caused it) is ENOSPC or EDQUOT, however wrapped (PyAV
    reports encoder write failures as its own ``OSError`` subclasses)."""
    return any(isinstance(item, OSError) and item.errno in DISK_FULL_ERRNOS for item in _chain(exc))


__all__ = [
    "DISK_FULL_ERRNOS",
    "STORAGE_FULL",
    "STORAGE_FULL_REASON",
    "Dependency",
    "is_disk_full",
    "is_unavailable",
    "outage_exception_types",
]
