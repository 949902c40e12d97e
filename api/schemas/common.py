"""Shared DTO building blocks: camelCase models, UTC ``Z`` timestamps, errors, pagination."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer
from pydantic.alias_generators import to_camel


def iso_utc(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with a ``Z`` suffix, to the second (``2024-01-15T10:30:00Z``)."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


UtcDateTime = Annotated[datetime, PlainSerializer(iso_utc, return_type=str)]
OptionalUtcDateTime = Annotated[datetime | None, PlainSerializer(iso_utc, return_type=str | None)]


class ApiModel(BaseModel):
    """Base of every request/response model: camelCase on the wire, snake_case in Python."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        serialize_by_alias=True,
        from_attributes=True,
    )


class ErrorResponse(ApiModel):
    """Every 4xx/5xx body."""

    detail: str = Field(examples=["Template not found"])
    code: str = Field(examples=["not_found"])


class MessageResponse(ApiModel):
    """A plain confirmation (``{"message": "Audio deleted successfully"}``)."""

    message: str


class StorageStatus(ApiModel):
    """``StorageStatusDto``: reserved bytes of uploads in flight count as used."""

    quota_mb: int = Field(alias="quotaMB")
    used_bytes: int
    available_bytes: int
    usage_percentage: float


def status_text(value: Any) -> str:
    """A ``JobStatus`` (or string) as the lowercase API string."""
    return str(getattr(value, "value", value)).lower()


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries documenting the error body for ``codes``."""
    return {code: {"model": ErrorResponse} for code in codes}


IdPath = Annotated[uuid.UUID, Field(description="UUID (case-insensitive)")]
