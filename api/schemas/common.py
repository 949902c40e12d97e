"""Shared DTO building blocks: camelCase models, UTC ``Z`` timestamps, errors, pagination,
the ``status`` filter of the library history listings and the multipart upload body."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer
from pydantic.alias_generators import to_camel

from api.errors import BadRequest
from jobs.models import JobStatus


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


def examples(*bodies: dict[str, Any]) -> ConfigDict:
    """``model_config`` giving a model's OpenAPI schema these example ``bodies`` (camelCase,
    as on the wire); subclasses inherit them unless they set their own."""
    return ConfigDict(json_schema_extra={"examples": list(bodies)})


class ErrorResponse(ApiModel):
    """Every 4xx/5xx body: ``detail`` for the person fixing the request, ``code`` for code."""

    model_config = examples(
        {"detail": "Template 123e4567-e89b-12d3-a456-426614174000 not found", "code": "not_found"}
    )

    detail: str = Field(examples=["Template not found"])
    code: str = Field(examples=["not_found"])


class MessageResponse(ApiModel):
    """A plain confirmation (``{"message": "Audio deleted successfully"}``)."""

    model_config = examples({"message": "Audio deleted successfully"})

    message: str


class StorageStatus(ApiModel):
    """``StorageStatusDto``: reserved bytes of uploads in flight count as used."""

    model_config = examples(
        {
            "quotaMB": 5000,
            "usedBytes": 1310720000,
            "availableBytes": 3932160000,
            "usagePercentage": 25.0,
        }
    )

    quota_mb: int = Field(alias="quotaMB")
    used_bytes: int
    available_bytes: int
    usage_percentage: float


def status_text(value: Any) -> str:
    """A ``JobStatus`` (or string) as the lowercase API string."""
    return str(getattr(value, "value", value)).lower()


ERROR_DESCRIPTIONS: dict[int | str, str] = {
    400: "Invalid request (the detail names the field), or refused (e.g. quota exceeded)",
    401: "Missing or invalid API key",
    402: "Insufficient render time budget",
    403: "Forbidden (e.g. the admin API is disabled)",
    404: "Not found, or not owned by the caller",
    409: "Conflict with the current state (e.g. not processed yet)",
    413: "File size exceeds the maximum allowed",
    416: "Range not satisfiable",
    429: "Too many concurrent renders",
    503: "A dependency (database, broker) is unavailable; retry after ``Retry-After`` seconds",
    507: "The server's storage is full or below its free-space floor (``storage_full``)",
    # Declaring a default also keeps FastAPI from documenting a 422 this API never sends.
    "default": "Any other error (500 internal_error); request validation answers 400, not 422",
}


def error_responses(*codes: int | str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries documenting the ``{detail, code}`` body for ``codes``."""
    return {
        code: {"model": ErrorResponse, "description": ERROR_DESCRIPTIONS[code]} for code in codes
    }


IdPath = Annotated[uuid.UUID, Field(description="UUID (case-insensitive)")]


HISTORY_STATUSES = {"completed": JobStatus.Completed, "failed": JobStatus.Failed}


def history_statuses(status: str | None) -> list[JobStatus]:
    """The job statuses a library ``/history`` listing shows for its ``status`` query.

    Raises:
        BadRequest: ``status`` is neither ``completed`` nor ``failed`` (any case).
    """
    if status is None:
        return list(HISTORY_STATUSES.values())
    key = status.strip().lower()
    if key not in HISTORY_STATUSES:
        raise BadRequest(
            f"query parameter 'status' must be 'completed' or 'failed', not {status!r}",
            "invalid_request",
        )
    return [HISTORY_STATUSES[key]]


def upload_body(**text_fields: str) -> dict[str, Any]:
    """OpenAPI ``openapi_extra`` for a multipart body: the required binary ``file`` and
    optional text fields (name → description)."""
    properties: dict[str, Any] = {"file": {"type": "string", "format": "binary"}}
    properties.update(
        {name: {"type": "string", "description": text} for name, text in text_fields.items()}
    )
    schema = {"type": "object", "required": ["file"], "properties": properties}
    return {
        "requestBody": {
            "required": True,
            "content": {"multipart/form-data": {"schema": schema}},
        }
    }
