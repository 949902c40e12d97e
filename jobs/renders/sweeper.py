"""Recovery of renders whose worker died: ``recover_renders`` (start-up and the sweeper)
and the ``RenderSweeper`` thread every worker runs through its middleware."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import dramatiq

from jobs import metrics
from jobs.actors import current_settings
from jobs.db import Database, create_database
from jobs.faults import is_unavailable
from jobs.models.base import JobStatus
from jobs.queues import RENDER_ACTOR
from jobs.renders import recovery as recovery_store
from jobs.renders.chunked import remove_chunk_outputs
from jobs.renders.inputs import remove_partial_outputs
from jobs.resend import expire_pending_renders, resend_stale
from jobs.settings import Settings
from jobs.storage import Storage

log = logging.getLogger(__name__)


async def recover_renders(
    db: Database,
    broker: dramatiq.Broker | None = None,
    *,
    storage: Storage | None = None,
    requeue_pending: bool = True,
) -> dict[str, int]:
    """Return stranded renders to the queue.

    Renders whose lease expired while processing go back to pending (and are re-enqueued;
    after ``render_base.MAX_ATTEMPTS`` they fail), expired ``cancelling`` ones become cancelled.
    With ``requeue_pending`` every pending render is re-enqueued too (start-up: a crash may
    have come between commit and send); duplicates are harmless since claiming is a
    compare-and-set.

    Args:
        db: the database.
        broker: where to send; default the global broker.
        storage: when given, partial outputs of recovered renders are deleted.
        requeue_pending: also re-send every pending render.

    Returns:
        Counts by outcome: ``requeued``, ``failed``, ``cancelled``, ``pending``.
    """
    from jobs.messages import send_outbox

    counts = {"requeued": 0, "failed": 0, "cancelled": 0, "pending": 0}
    async with db.session() as s:
        expired = await recovery_store.expired_leases(s)
    for render in expired:
        async with db.sessionmaker() as s:
            try:
                outcome = await recovery_store.requeue_expired(s, render)
                if outcome is not None and storage is not None:
                    # Before commit: once committed, a new attempt may start writing.
                    remove_partial_outputs(storage, render.id, render.attempts)
                await s.commit()
            except BaseException:
                await s.rollback()
                raise
            finally:
                send_outbox(s, broker)
        if outcome is None:
            continue
        key = {
            JobStatus.Pending: "requeued",
            JobStatus.Failed: "failed",
            JobStatus.Cancelled: "cancelled",
        }[outcome]
        counts[key] += 1
        log.warning("render %s: lease expired; now %s", render.id, outcome.value)
    await _recover_chunks(db, broker, storage, counts, requeue_pending=requeue_pending)
    if requeue_pending:
        async with db.session() as s:
            ids = await recovery_store.pending_ids(s)
        target = broker or dramatiq.get_broker()
        actor: Any = target.get_actor(RENDER_ACTOR)
        for rid in ids:
            actor.send(str(rid))
        counts["pending"] = len(ids)
    return counts


async def _recover_chunks(
    db: Database,
    broker: dramatiq.Broker | None,
    storage: Storage | None,
    counts: dict[str, int],
    *,
    requeue_pending: bool,
) -> None:
    """Chunks whose worker died go back to pending (or fail their render, or are cancelled
    with it); chunked renders nobody moves on get a finalize message."""
    from jobs.messages import send_outbox

    async with db.session() as s:
        expired = await recovery_store.expired_chunks(s)
    for chunk in expired:
        async with db.sessionmaker() as s:
            try:
                outcome = await recovery_store.requeue_expired_chunk(s, chunk)
                if outcome is not None and storage is not None:
                    remove_chunk_outputs(storage, chunk.render_id, chunk)
                await s.commit()
            except BaseException:
                await s.rollback()
                raise
            finally:
                send_outbox(s, broker)
        if outcome is not None:
            counts["chunks_" + outcome.value] = counts.get("chunks_" + outcome.value, 0) + 1
            log.warning(
                "chunk %s of render %s: lease expired; now %s",
                chunk.index,
                chunk.render_id,
                outcome.value,
            )
    settings_lease = _lease_seconds()
    async with db.sessionmaker() as s:
        try:
            sent, _ = await recovery_store.requeue_stranded_chunks(
                s, all_pending=requeue_pending, stall_seconds=2 * settings_lease
            )
            await s.commit()
        except BaseException:
            await s.rollback()
            raise
        finally:
            send_outbox(s, broker)
    if sent:
        counts["chunks_resent"] = counts.get("chunks_resent", 0) + sent


def _lease_seconds() -> float:
    try:
        return float(current_settings().lease_seconds)
    except RuntimeError:  # recovery run before jobs.actors.configure(): the default lease
        return float(Settings.model_fields["lease_seconds"].default)


class RenderSweeper:
    """A daemon thread that runs ``recover_renders`` (lease expiry only) every third of
    ``lease_seconds`` with its own event loop and database connection."""

    def __init__(self, settings: Settings, broker: dramatiq.Broker | None = None) -> None:
        self.settings = settings
        self.broker = broker
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="velocity-render-sweeper", daemon=True
        )

    def start(self) -> RenderSweeper:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    async def sweep(self, db: Database, storage: Storage, *, leases: bool = True) -> dict[str, int]:
        """One pass: expired leases (unless ``leases`` is False), then lost messages, then
        renders pending too long."""
        counts: dict[str, int] = {}
        if leases:
            counts = await recover_renders(db, self.broker, storage=storage, requeue_pending=False)
            metrics.LEASE_EXPIRIES.inc(
                sum(n for k, n in counts.items() if k != "pending" and not k.endswith("resent"))
            )
        resent = await resend_stale(db, self.broker, self.settings)
        for kind, n in resent.items():
            if n:
                counts["resent_" + kind] = n
                metrics.RESENDS.labels(kind).inc(n)
        expired = await expire_pending_renders(db, self.settings)
        if expired:
            counts["pending_timeout"] = expired
            metrics.PENDING_TIMEOUTS.inc(expired)
        return counts

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        db = create_database(self.settings, null_pool=True)
        storage = Storage(self.settings.storage_dir)
        lease = float(self.settings.lease_seconds)
        # After an outage every lease looks expired, though most workers are alive and
        # renew within a third of a lease once the database is back (or complete their
        # finished render): leases are not reclaimed until one and a half leases after the
        # last failed pass.
        grace_until = 0.0
        try:
            # Sweeping every third of a lease bounds the wait after a crash to ~1.33 leases.
            while not self._stop.wait(max(1.0, lease / 3)):
                try:
                    loop.run_until_complete(
                        self.sweep(db, storage, leases=time.monotonic() >= grace_until)
                    )
                except Exception as exc:
                    down = is_unavailable(exc)
                    if down is None:
                        log.exception("render sweeper pass failed")
                        continue
                    # The database or broker is down: the next pass tries again.
                    log.warning("sweeper pass skipped: %s unavailable", down)
                    if down == "database":  # leases could not be renewed meanwhile
                        grace_until = time.monotonic() + 1.5 * lease
        finally:
            loop.run_until_complete(db.dispose())
            loop.close()


class RenderSweeperMiddleware(dramatiq.Middleware):
    """Starts a ``RenderSweeper`` when a dramatiq worker boots and stops it at shutdown."""

    def __init__(self) -> None:
        self.sweeper: RenderSweeper | None = None

    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        try:
            settings = current_settings()
        except RuntimeError:
            log.warning("render sweeper not started: jobs.actors.configure() was not called")
            return
        self.sweeper = RenderSweeper(settings, broker).start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        if self.sweeper is not None:
            self.sweeper.stop()
            self.sweeper = None


def install_sweeper(broker: dramatiq.Broker) -> None:
    """Add the ``RenderSweeperMiddleware`` to ``broker`` once (before its worker starts)."""
    if not any(isinstance(m, RenderSweeperMiddleware) for m in broker.middleware):
        broker.add_middleware(RenderSweeperMiddleware())


__all__ = [
    "RenderSweeper",
    "RenderSweeperMiddleware",
    "install_sweeper",
    "recover_renders",
]
