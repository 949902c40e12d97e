"""Admin endpoints (header ``X-Admin-Key`` = ``VELOCITY_ADMIN_KEY``; disabled when unset)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Path
from pydantic import ConfigDict, Field

from api.auth import issue_key
from api.deps import AdminDep, SessionDep, SettingsDep
from api.errors import BadRequest, NotFound
from api.schemas.common import (
    ApiModel,
    MessageResponse,
    RequestModel,
    UtcDateTime,
    error_responses,
    examples,
)
from jobs.models import ApiKey, Asset, Audio, JobStatus, Template, User
from jobs.models.render import Render
from jobs.quota import MB
from jobs.store import accounts

router = APIRouter(
    prefix="/admin",
    tags=["admin"],
    dependencies=[AdminDep],
    responses=error_responses(401, 403, "default"),
)

USER_EXAMPLE: dict[str, Any] = {
    "id": "3f2b8c1d-9a4e-4b7f-8c6d-5e4f3a2b1c0d",
    "name": "alice",
    "quotaMB": 5000,
    "storageUsedBytes": 1310720000,
    "storageReservedBytes": 0,
    "renderBudgetMs": 3600000,
    "renderUsedMs": 180000,
    "renderReservedMs": 0,
    "maxConcurrentRenders": 10,
    "createdAt": "2024-01-15T10:30:00Z",
}
# Ceilings that keep every stored figure far inside a 64-bit integer (and the SQLite INTEGER
# the embedded mode stores it in): 1 EB of quota, ~3,000 years of render time.
MAX_QUOTA_MB = 10**12
MAX_RENDER_BUDGET_MS = 10**14
MAX_CONCURRENT = 100_000
KEY_EXAMPLE = "vel_Ab12Cd34_8rT3kq0ZpW6yXvN1mL5sJ2hF9gD4cB7a"


class UserCreate(RequestModel):
    model_config = examples({"name": "alice", "quotaMB": 5000, "renderBudgetMs": 3600000})

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.@-]+$")
    quota_mb: int | None = Field(default=None, alias="quotaMB", ge=0, le=MAX_QUOTA_MB)
    render_budget_ms: int | None = Field(default=None, ge=0, le=MAX_RENDER_BUDGET_MS)
    max_concurrent_renders: int | None = Field(default=None, ge=1, le=MAX_CONCURRENT)


class UserUpdate(RequestModel):
    # At least one field: an empty update is refused (400), and the schema says so.
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"quotaMB": 10000, "maxConcurrentRenders": 4}],
            "minProperties": 1,
        }
    )

    quota_mb: int | None = Field(default=None, alias="quotaMB", ge=0, le=MAX_QUOTA_MB)
    render_budget_ms: int | None = Field(default=None, ge=0, le=MAX_RENDER_BUDGET_MS)
    max_concurrent_renders: int | None = Field(default=None, ge=1, le=MAX_CONCURRENT)


class UserDto(ApiModel):
    model_config = examples(USER_EXAMPLE)

    id: uuid.UUID
    name: str
    quota_mb: int = Field(alias="quotaMB")
    storage_used_bytes: int
    storage_reserved_bytes: int
    render_budget_ms: int
    render_used_ms: int
    render_reserved_ms: int
    max_concurrent_renders: int
    created_at: UtcDateTime

    @classmethod
    def of(cls, user: User, default_max: int) -> UserDto:
        return cls(
            id=user.id,
            name=user.name,
            quota_mb=user.storage_quota_bytes // MB,
            storage_used_bytes=user.storage_used_bytes,
            storage_reserved_bytes=user.storage_reserved_bytes,
            render_budget_ms=user.render_budget_ms,
            render_used_ms=user.render_used_ms,
            render_reserved_ms=user.render_reserved_ms,
            max_concurrent_renders=user.max_concurrent_renders or default_max,
            created_at=user.created_at,
        )


class KeyCreated(ApiModel):
    model_config = examples(
        {"userId": USER_EXAMPLE["id"], "prefix": KEY_EXAMPLE[:12], "apiKey": KEY_EXAMPLE}
    )

    user_id: uuid.UUID
    prefix: str
    api_key: str = Field(description="Shown once; only its hash is stored")


class UserCreated(UserDto):
    model_config = examples({**USER_EXAMPLE, "apiKey": KEY_EXAMPLE, "keyPrefix": KEY_EXAMPLE[:12]})

    api_key: str
    key_prefix: str


@router.post(
    "/users",
    response_model=UserCreated,
    summary="Create a user and its first API key",
    responses=error_responses(400, 409),
)
async def create_user(body: UserCreate, session: SessionDep, settings: SettingsDep) -> UserCreated:
    """Create a user and its first API key (shown once)."""
    user = await accounts.create_user(
        session,
        body.name,
        storage_quota_mb=(
            body.quota_mb if body.quota_mb is not None else settings.default_storage_quota_mb
        ),
        render_budget_ms=(
            body.render_budget_ms
            if body.render_budget_ms is not None
            else settings.default_render_budget_ms
        ),
        max_concurrent_renders=body.max_concurrent_renders,
    )
    key = await issue_key(session, user.id)
    dto = UserDto.of(user, settings.max_concurrent_renders)
    return UserCreated(**dto.model_dump(by_alias=False), api_key=key.key, key_prefix=key.prefix)


@router.get("/users", response_model=list[UserDto], summary="List users")
async def list_users(session: SessionDep, settings: SettingsDep) -> list[UserDto]:
    """Every user with its ledgers."""
    return [
        UserDto.of(u, settings.max_concurrent_renders) for u in await accounts.list_users(session)
    ]


@router.post(
    "/users/{user_id}/keys",
    response_model=KeyCreated,
    summary="Issue another API key",
    responses=error_responses(400, 404),
)
async def create_key(user_id: uuid.UUID, session: SessionDep) -> KeyCreated:
    """Issue another API key for the user (shown once)."""
    if await accounts.get_user(session, user_id) is None:
        raise NotFound(f"User {user_id} not found")
    key = await issue_key(session, user_id)
    return KeyCreated(user_id=user_id, prefix=key.prefix, api_key=key.key)


@router.delete(
    "/keys/{prefix}",
    response_model=MessageResponse,
    summary="Revoke an API key",
    responses=error_responses(404),
)
async def revoke_key(
    prefix: Annotated[str, Path(min_length=1, max_length=64)], session: SessionDep
) -> MessageResponse:
    """Revoke the key with this visible prefix (``vel_`` + 8 characters)."""
    if not await accounts.revoke_api_key(session, prefix):
        raise NotFound(f"No active API key with prefix {prefix!r}")
    return MessageResponse(message="API key revoked")


@router.patch(
    "/users/{user_id}",
    response_model=UserDto,
    summary="Change quota, budget or concurrency limit",
    responses=error_responses(400, 404),
)
async def update_user(
    user_id: uuid.UUID, body: UserUpdate, session: SessionDep, settings: SettingsDep
) -> UserDto:
    """Set the storage quota (MB), render-time budget (ms) or concurrent-render limit."""
    fields = body.model_dump(exclude_unset=True, by_alias=False)
    if not fields:
        raise BadRequest(
            "Set at least one of quotaMB, renderBudgetMs, maxConcurrentRenders", "invalid_request"
        )
    values: dict[str, Any] = {}
    if "quota_mb" in fields and fields["quota_mb"] is not None:
        values["storage_quota_bytes"] = fields["quota_mb"] * MB
    if "render_budget_ms" in fields and fields["render_budget_ms"] is not None:
        values["render_budget_ms"] = fields["render_budget_ms"]
    if "max_concurrent_renders" in fields:
        values["max_concurrent_renders"] = fields["max_concurrent_renders"]
    if values:
        await session.execute(
            sa.update(User)
            .where(User.id == user_id)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
    user = await accounts.get_user(session, user_id)
    if user is None:
        raise NotFound(f"User {user_id} not found")
    await session.refresh(user)
    return UserDto.of(user, settings.max_concurrent_renders)


@router.get(
    "/stats",
    summary="Service-wide counts and usage",
    responses={
        200: {
            "description": "Counts by status (lowercase) and totals",
            "content": {
                "application/json": {
                    "example": {
                        "users": 3,
                        "storageUsedBytes": 1310720000,
                        "renderUsedMs": 180000,
                        "activeApiKeys": 4,
                        "templates": {"completed": 5, "failed": 1},
                        "audio": {"completed": 12},
                        "assets": {"completed": 7, "processing": 1},
                        "renders": {"completed": 20, "processing": 2, "cancelled": 1},
                    }
                }
            },
        }
    },
)
async def stats(session: SessionDep) -> dict[str, Any]:
    """Counts of users, keys, templates, audio and assets by status, renders by status, and
    storage and render time used."""

    async def by_status(model: Any) -> dict[str, int]:
        rows = (
            await session.execute(sa.select(model.status, sa.func.count()).group_by(model.status))
        ).all()
        return {JobStatus(s).value: int(n) for s, n in rows}

    totals = (
        await session.execute(
            sa.select(
                sa.func.count(User.id),
                sa.func.coalesce(sa.func.sum(User.storage_used_bytes), 0),
                sa.func.coalesce(sa.func.sum(User.render_used_ms), 0),
            )
        )
    ).one()
    result: dict[str, Any] = {
        "users": int(totals[0]),
        "storageUsedBytes": int(totals[1]),
        "renderUsedMs": int(totals[2]),
        "activeApiKeys": int(
            (
                await session.execute(
                    sa.select(sa.func.count(ApiKey.id)).where(ApiKey.revoked_at.is_(None))
                )
            ).scalar_one()
        ),
        "templates": await by_status(Template),
        "audio": await by_status(Audio),
        "assets": await by_status(Asset),
    }
    result["renders"] = await by_status(Render)
    return result
