"""Database engine, unit-of-work sessions and migrations for SQLite and PostgreSQL.

SQLite (the embedded default) runs in WAL mode with a busy timeout and foreign keys on.
Its transactions are made safe for concurrent writers this way: reads run in autocommit
(they never hold a lock and never go stale), and the first write of a transaction issues
``BEGIN IMMEDIATE``, so the write lock is taken up front (waiting up to the busy timeout)
instead of failing with "database is locked" when a read snapshot would be upgraded. The
resulting semantics match PostgreSQL's READ COMMITTED closely enough for our compare-and-set
updates. Keep write transactions short: never await network, sleep or stream a file while a
session holds uncommitted writes.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.ext.asyncio import create_async_engine as _create_async_engine
from sqlalchemy.pool import NullPool

from jobs.messages import OutboxSession, send_outbox
from jobs.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
SQLITE_BUSY_TIMEOUT_MS = 30_000
_IN_WRITE_TX = "velocity.sqlite.write_tx"
_WRITE_VERBS = ("INSERT", "UPDATE", "DELETE", "REPLAC")


def updated_one(result: object) -> bool:
    """Whether the UPDATE (or DELETE) that returned ``result`` changed exactly one row: the
    check behind every compare-and-set and conditional charge (whoever loses a race, or finds
    the condition false, changes nothing and backs off)."""
    return int(getattr(result, "rowcount", 0)) == 1


def _prepare_sqlite_file(url: str) -> None:
    database = make_url(url).database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)


def _install_sqlite_hooks(engine: AsyncEngine) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # isolation_level=None: the driver never opens transactions behind our back.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(sync_engine, "before_cursor_execute")
    def _begin_on_first_write(conn: Any, cursor: Any, statement: str, *_args: Any) -> None:
        if conn.info.get(_IN_WRITE_TX):
            return
        if statement.lstrip()[:6].upper() in _WRITE_VERBS:
            cursor.execute("BEGIN IMMEDIATE")
            conn.info[_IN_WRITE_TX] = True

    def _end(conn: Any) -> None:
        conn.info.pop(_IN_WRITE_TX, None)

    event.listen(sync_engine, "commit", _end)
    event.listen(sync_engine, "rollback", _end)

    @event.listens_for(sync_engine.pool, "reset")
    def _on_reset(dbapi_connection: Any, connection_record: Any, reset_state: Any) -> None:
        connection_record.info.pop(_IN_WRITE_TX, None)


def create_engine(database_url: str, *, null_pool: bool = False) -> AsyncEngine:
    """An ``AsyncEngine`` for ``database_url`` with the SQLite hooks where relevant.

    Args:
        database_url: ``sqlite+aiosqlite:///path`` or ``postgresql+asyncpg://...``.
        null_pool: open a connection per session (used by worker threads, whose event loops
            must not share pooled connections).
    """
    kwargs: dict[str, Any] = {}
    if null_pool:
        kwargs["poolclass"] = NullPool
    is_sqlite = database_url.startswith("sqlite")
    if is_sqlite:
        _prepare_sqlite_file(database_url)
        kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
    else:
        kwargs["pool_pre_ping"] = True
    engine = _create_async_engine(database_url, **kwargs)
    if is_sqlite:
        _install_sqlite_hooks(engine)
    return engine


class Database:
    """An engine plus a session factory; ``session()`` is the unit of work.

    ``async with db.session() as s:`` commits when the block ends normally, rolls back when
    it raises, and sends the outbox (``jobs.messages``) after a successful commit.
    Sessions use ``expire_on_commit=False`` so loaded rows stay readable after commit.
    """

    def __init__(self, engine: AsyncEngine, settings: Settings | None = None) -> None:
        self.engine = engine
        self.settings = settings
        self.sessionmaker = async_sessionmaker(
            engine, expire_on_commit=False, sync_session_class=OutboxSession
        )

    @property
    def is_sqlite(self) -> bool:
        """True for the SQLite backend."""
        return self.engine.dialect.name == "sqlite"

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """Open a session; commit on success, roll back on error, then send the outbox."""
        async with self.sessionmaker() as session:
            try:
                yield session
                await session.commit()
            except BaseException:
                await session.rollback()
                raise
            finally:
                send_outbox(session)

    async def ping(self) -> bool:
        """True when a trivial query succeeds."""
        try:
            async with self.engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
            return True
        except Exception:
            return False

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()


def create_database(settings: Settings, *, null_pool: bool = False) -> Database:
    """Build the ``Database`` for ``settings.database_url``.

    Args:
        settings: service settings.
        null_pool: see ``create_engine``.
    """
    return Database(create_engine(settings.database_url, null_pool=null_pool), settings)


def alembic_config(database_url: str) -> Any:
    """An alembic ``Config`` pointing at this repository's migrations and ``database_url``."""
    from alembic.config import Config

    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    cfg.attributes["database_url"] = database_url
    return cfg


def run_migrations(database_url: str, revision: str = "head") -> None:
    """Apply alembic migrations up to ``revision`` (works for SQLite and PostgreSQL).

    Safe to call from a thread that runs an event loop: the migration runs on its own loop
    in a helper thread.
    """
    from alembic import command

    if database_url.startswith("sqlite"):
        _prepare_sqlite_file(database_url)

    def _upgrade() -> None:
        command.upgrade(alembic_config(database_url), revision)

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        _upgrade()
        return
    errors: list[BaseException] = []

    def _target() -> None:
        try:
            _upgrade()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=_target, name="velocity-migrate")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
