"""Actor runtime: settings for actors, and an event loop + database per worker thread.

Actors are synchronous dramatiq functions; they do their database work with
``run_job(lambda db: coro(db))``, which runs the coroutine on this worker thread's own event
loop with this thread's ``Database``. ``async with db.session() as s`` is the unit of work:
it commits, and sends the outbox after the commit. Worker-thread engines use a NullPool so no
connection is shared between event loops.

The composition root calls ``configure(settings)`` before workers start; the actor modules
themselves (``jobs.queues.ACTOR_MODULES``) are imported by
``jobs.broker.setup_broker`` once the broker exists.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import dramatiq

from jobs.db import Database, create_database
from jobs.settings import Settings
from jobs.storage import Storage

T = TypeVar("T")


@dataclass
class _Config:
    settings: Settings
    storage: Storage
    generation: int


@dataclass
class _ThreadState:
    loop: asyncio.AbstractEventLoop
    db: Database
    generation: int


_lock = threading.Lock()
_configs: list[_Config] = []  # at most one: the current configuration
_local = threading.local()


def configure(settings: Settings) -> None:
    """Set the settings every actor in this process uses (call before workers start), and
    the Lottie sandbox's limits for the renderer in this process (renders and previews)."""
    from renderer.media import sandbox

    sandbox.configure(settings.lottie_limits())
    with _lock:
        generation = (_configs[0].generation + 1) if _configs else 1
        storage = Storage(settings.storage_dir)
        storage.ensure()
        _configs[:] = [_Config(settings, storage, generation)]


def _current() -> _Config:
    if not _configs:
        raise RuntimeError("jobs.actors.configure(settings) was not called in this process")
    return _configs[0]


def current_settings() -> Settings:
    """The settings given to ``configure``."""
    return _current().settings


def current_storage() -> Storage:
    """The storage root of the configured settings."""
    return _current().storage


def _close_state(state: _ThreadState) -> None:
    try:
        state.loop.run_until_complete(state.db.dispose())
    finally:
        state.loop.close()


def _thread_state() -> _ThreadState:
    config = _current()
    state: _ThreadState | None = getattr(_local, "state", None)
    if state is not None and state.generation != config.generation:
        _close_state(state)
        state = None
    if state is None:
        loop = asyncio.new_event_loop()
        db = create_database(config.settings, null_pool=True)
        state = _ThreadState(loop, db, config.generation)
        _local.state = state
    return state


def run_job(fn: Callable[[Database], Awaitable[T]]) -> T:
    """Run ``fn(db)`` to completion on this thread's event loop and return its result.

    Args:
        fn: a callable taking the thread's ``Database`` and returning an awaitable.

    Raises:
        Whatever ``fn`` raises.
    """
    state = _thread_state()
    return state.loop.run_until_complete(fn(state.db))


def close_thread_runtime() -> None:
    """Dispose of this thread's engine and close its event loop (idempotent)."""
    state: _ThreadState | None = getattr(_local, "state", None)
    if state is not None:
        _local.state = None
        _close_state(state)


class ThreadRuntimeMiddleware(dramatiq.Middleware):
    """Closes each worker thread's loop and engine when the thread shuts down."""

    def before_worker_thread_shutdown(self, broker: dramatiq.Broker, thread: Any) -> None:
        close_thread_runtime()
