"""Signed webhook delivery of a render's terminal state (``deliver_webhook``, which the
``deliver_render_webhook`` actor in ``jobs.renders.actors`` calls); signing and posting
live in ``jobs.webhooks``."""

from __future__ import annotations

import asyncio
import logging
import uuid

from jobs.db import Database
from jobs.renders import lifecycle, queries
from jobs.settings import Settings
from jobs.webhooks import (
    UnsafeWebhookTarget,
    WebhookDeliveryError,
    post_signed,
    render_event_body,
)

log = logging.getLogger(__name__)


async def _webhook_payload(
    db: Database, render_id: uuid.UUID
) -> tuple[str, bytes, str, str] | None:
    async with db.session() as s:
        found = await queries.webhook_to_send(s, render_id)
        if found is None:
            return None
        row, secret = found
        body = render_event_body(
            render_id=str(row.id),
            name=row.name,
            status=row.status.value,
            template_id=str(row.template_id) if row.template_id else None,
            reason=row.reason,
            failure_code=row.failure_code,
            size_bytes=row.size_bytes,
            render_time_ms=row.render_time_ms,
            completed_at=row.completed_at,
        )
        assert row.webhook_url is not None
        return row.webhook_url, body, secret, f"render.{row.status.value}"


async def deliver_webhook(db: Database, settings: Settings, render_id: uuid.UUID) -> None:
    """POST the signed terminal-state event of a render to its ``webhookUrl``, once: a
    render without one, not finished yet or already delivered makes this a no-op.

    Raises:
        WebhookDeliveryError: non-2xx or unreachable; the actor retries with back-off.
    """
    payload = await _webhook_payload(db, render_id)
    if payload is None:
        return
    url, body, secret, event = payload
    try:
        await asyncio.to_thread(
            post_signed,
            url,
            body,
            secret,
            event=event,
            timeout_s=settings.webhook_timeout_s,
            allow_private=settings.webhook_allow_private,
        )
    except UnsafeWebhookTarget as exc:
        # Checked at submission, so the name now resolves inward (DNS rebinding, or a
        # record changed since): never retried, never sent.
        log.warning("webhook for render %s not sent: %s", render_id, exc)
        return
    except WebhookDeliveryError:
        log.warning("webhook for render %s not delivered; will retry", render_id)
        raise
    async with db.session() as s:
        await lifecycle.mark_webhook_delivered(s, render_id)


__all__ = [
    "deliver_webhook",
]
