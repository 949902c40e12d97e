"""Transactional outbox: messages are collected on the session and sent only after commit.

``enqueue`` records ``(actor_name, ids)`` on the session. An ``after_commit`` hook moves them
to the "ready" list and a rollback drops them, so a worker can never receive the id of a row
that was not committed. The edges (``Database.session()`` and therefore ``api.deps`` and
``jobs.actors.run_job``) call ``send_outbox`` after the commit. A crash between commit and
send is covered by the recovery sweeper (``jobs.recovery``), which re-enqueues stranded jobs.
"""

from __future__ import annotations

import logging
from typing import Any

import dramatiq
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, SessionTransaction

log = logging.getLogger(__name__)

_PENDING = "velocity.outbox.pending"
_READY = "velocity.outbox.ready"

Message = tuple[str, tuple[str, ...]]


class OutboxSession(Session):
    """The sync session class behind every ``AsyncSession``; carries the outbox hooks."""


def _sync(session: AsyncSession | Session) -> Session:
    return session.sync_session if isinstance(session, AsyncSession) else session


def enqueue(session: AsyncSession | Session, actor_name: str, *ids: object) -> None:
    """Queue a message for ``actor_name`` to be sent once ``session`` commits.

    Args:
        session: the unit of work whose commit makes the ids visible.
        actor_name: the dramatiq ``actor_name`` (e.g. ``"process_template"``).
        ids: identifiers only (UUIDs or strings); they are sent as strings.
    """
    pending: list[Message] = _sync(session).info.setdefault(_PENDING, [])
    pending.append((actor_name, tuple(str(i) for i in ids)))


@event.listens_for(OutboxSession, "after_commit")
def _after_commit(session: Session) -> None:
    pending: list[Message] = session.info.pop(_PENDING, [])
    if pending:
        session.info.setdefault(_READY, []).extend(pending)


@event.listens_for(OutboxSession, "after_soft_rollback")
def _after_rollback(session: Session, previous_transaction: SessionTransaction) -> None:
    if previous_transaction.parent is None:
        session.info.pop(_PENDING, None)


def pending_messages(session: AsyncSession | Session) -> list[Message]:
    """Messages recorded but not yet committed (for tests and diagnostics)."""
    return list(_sync(session).info.get(_PENDING, []))


def send_outbox(session: AsyncSession | Session, broker: dramatiq.Broker | None = None) -> int:
    """Send every committed message of ``session`` through ``broker`` (default: global).

    A send failure is logged and not raised: the data is already committed, and the recovery
    sweeper re-enqueues anything stranded. Returns the number of messages sent.
    """
    ready: list[Message] = _sync(session).info.pop(_READY, [])
    if not ready:
        return 0
    broker = broker or dramatiq.get_broker()
    sent = 0
    for actor_name, ids in ready:
        try:
            actor: Any = broker.get_actor(actor_name)
            actor.send(*ids)
            sent += 1
        except Exception:
            log.exception("could not enqueue %s%s; recovery will retry", actor_name, ids)
    return sent
