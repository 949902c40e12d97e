"""Signed webhook delivery for renders that reach a terminal state.

The body is canonical JSON (sorted keys, no spaces) so a receiver can verify the signature over
the exact bytes it got: ``X-Velocity-Signature: sha256=<hex HMAC-SHA256(secret, body)>``.
Delivery happens in its own actor so a slow or failing receiver never delays a render; the
actor raises on failure and dramatiq retries it with exponential back-off.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime
from typing import Any

import httpx

SIGNATURE_HEADER = "X-Velocity-Signature"
EVENT_HEADER = "X-Velocity-Event"


class WebhookDeliveryError(RuntimeError):
    """The receiver did not answer 2xx (or could not be reached); the delivery is retried."""


def sign(secret: str, body: bytes) -> str:
    """The ``X-Velocity-Signature`` value for ``body`` under ``secret``: ``sha256=<hex>``."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify(secret: str, body: bytes, signature: str) -> bool:
    """True when ``signature`` is the valid ``X-Velocity-Signature`` of ``body``."""
    return hmac.compare_digest(sign(secret, body), signature)


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.isoformat().replace("+00:00", "Z")


def render_event_body(
    *,
    render_id: str,
    name: str,
    status: str,
    template_id: str | None,
    reason: str | None,
    failure_code: str | None,
    size_bytes: int | None,
    render_time_ms: int,
    completed_at: datetime | None,
) -> bytes:
    """The canonical JSON body sent for a render in a terminal ``status``."""
    payload: dict[str, Any] = {
        "event": f"render.{status}",
        "renderId": render_id,
        "name": name,
        "templateId": template_id,
        "status": status,
        "reason": reason,
        "failureCode": failure_code,
        "sizeBytes": size_bytes,
        "renderTimeMilliseconds": render_time_ms,
        "completedAt": _iso(completed_at),
        "videoDownloadUrl": f"/render/{render_id}/download" if status == "completed" else None,
    }
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode("utf-8")


def post_signed(url: str, body: bytes, secret: str, *, event: str, timeout_s: float) -> int:
    """POST ``body`` to ``url`` signed with ``secret``; returns the HTTP status.

    Redirects are not followed (a signed body must not be replayed to another host).

    Raises:
        WebhookDeliveryError: the receiver was unreachable, timed out or answered non-2xx.
    """
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign(secret, body),
        EVENT_HEADER: event,
        "User-Agent": "velocity-webhook/1",
    }
    try:
        response = httpx.post(
            url, content=body, headers=headers, timeout=timeout_s, follow_redirects=False
        )
    except httpx.HTTPError as exc:
        raise WebhookDeliveryError(f"webhook {url} unreachable: {type(exc).__name__}") from exc
    if not 200 <= response.status_code < 300:
        raise WebhookDeliveryError(f"webhook {url} answered {response.status_code}")
    return response.status_code
