"""The caller's own account: who it is and the secret its webhooks are signed with."""

from __future__ import annotations

import secrets
import uuid

from fastapi import APIRouter

from api.deps import SessionDep, SettingsDep, UserDep
from api.schemas.common import ApiModel, UtcDateTime, error_responses

router = APIRouter(prefix="/account", tags=["account"])


class AccountDto(ApiModel):
    id: uuid.UUID
    name: str
    created_at: UtcDateTime
    max_concurrent_renders: int
    webhook_secret: str


def _dto(user: UserDep, settings: SettingsDep) -> AccountDto:
    return AccountDto(
        id=user.id,
        name=user.name,
        created_at=user.created_at,
        max_concurrent_renders=user.max_concurrent_renders or settings.max_concurrent_renders,
        webhook_secret=user.webhook_secret,
    )


@router.get("", response_model=AccountDto, responses=error_responses(401))
async def get_account(user: UserDep, settings: SettingsDep) -> AccountDto:
    """The account behind the API key, with the secret that signs its webhooks
    (`X-Velocity-Signature: sha256=HMAC-SHA256(secret, body)`)."""
    return _dto(user, settings)


@router.post("/webhook-secret", response_model=AccountDto, responses=error_responses(401))
async def rotate_webhook_secret(
    user: UserDep, settings: SettingsDep, session: SessionDep
) -> AccountDto:
    """Replace the webhook secret; deliveries from now on are signed with the new one."""
    user.webhook_secret = secrets.token_urlsafe(32)
    session.add(user)
    await session.flush()
    return _dto(user, settings)
