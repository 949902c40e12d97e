"""Shared DTO building blocks: camelCase models, UTC ``Z`` timestamps, errors, pagination,
the ``status`` filter of the library history listings and the multipart upload body."""

from __future__ import annotations

import difflib
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Query
from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, model_validator
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

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


def suggest_field(name: str, known: list[str]) -> str | None:
    """The known field ``name`` most likely stands for (``customisationMap`` ->
    ``customizationMap``, ``template_id`` -> ``templateId``, ``jobinfo`` -> ``jobInfo``)."""

    def norm(text: str) -> str:
        return text.replace("_", "").replace("-", "").lower()

    by_norm = {norm(k): k for k in known}
    if norm(name) in by_norm:
        return by_norm[norm(name)]
    close = difflib.get_close_matches(norm(name), list(by_norm), n=1, cutoff=0.6)
    return by_norm[close[0]] if close else None


def unknown_fields_error(model: type[BaseModel], data: Any) -> PydanticCustomError | None:
    """The error for keys of ``data`` that are not wire names of ``model``'s fields, naming
    each with the known field it resembles; None when every key is known."""
    if not isinstance(data, dict):
        return None
    known = [info.alias or name for name, info in model.model_fields.items()]
    unknown = [key for key in data if key not in known]
    if not unknown:
        return None
    parts = []
    for key in unknown[:5]:
        text = str(key)[:64]
        hint = suggest_field(text, known)
        parts.append(f"'{text}' (did you mean '{hint}'?)" if hint else f"'{text}'")
    return PydanticCustomError(
        "unknown_field",
        "unknown field {fields}; known fields: {known}",
        {"fields": ", ".join(parts), "known": ", ".join(known)},
    )


class StrictFields(BaseModel):
    """Mixin of request bodies: an unknown key is an error that names it and suggests the
    known field it resembles, instead of being silently ignored (a typo such as
    ``customisationMap`` would otherwise render with the defaults)."""

    @model_validator(mode="before")
    @classmethod
    def _refuse_unknown_fields(cls, data: Any) -> Any:
        error = unknown_fields_error(cls, data)
        if error is not None:
            raise error
        return data


class RequestModel(StrictFields, ApiModel):
    """Base of every JSON request body: camelCase wire names only (``template_id`` is a
    typo, not an alias) and no unknown fields (``additionalProperties: false``)."""

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=False,
        validate_by_name=False,
        validate_by_alias=True,
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


class StorageStatusDto(ApiModel):
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


StorageStatus = StorageStatusDto  # the name before the DTOs took the reference's names


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


# ``skip`` beyond this is refused (400), so no offset can overflow a database integer.
MAX_SKIP = 1_000_000_000

IdPath = Annotated[uuid.UUID, Field(description="UUID (case-insensitive)")]


HISTORY_STATUSES = {"completed": JobStatus.Completed, "failed": JobStatus.Failed}


def status_filter(status: str | None, allowed: dict[str, JobStatus]) -> list[JobStatus]:
    """The statuses a ``status`` query filter selects, matched case-insensitively
    (``Completed`` = ``completed``); all of ``allowed`` when absent.

    Raises:
        BadRequest: ``status`` is none of ``allowed``.
    """
    if status is None:
        return list(allowed.values())
    key = status.lower()
    if key not in allowed:
        names = ", ".join(f"'{name}'" for name in allowed)
        raise BadRequest(
            f"query parameter 'status' must be one of {names} (any case), not {status[:50]!r}",
            "invalid_request",
        )
    return [allowed[key]]


def any_case_pattern(*values: str) -> str:
    """A JSON Schema (ECMA-262) pattern matching ``values`` in any letter case."""
    words = ["".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in v) for v in values]
    return "^(" + "|".join(words) + ")$"


def status_query(*values: str) -> Any:
    """The ``status`` query parameter of a listing: one of ``values``, any case. The pattern
    documents it; ``status_filter`` checks it with a message naming the choices."""
    choices = ", ".join(f"'{v}'" for v in values)
    return Query(
        description=f"one of {choices} (any case)",
        json_schema_extra={"pattern": any_case_pattern(*values)},
    )


def history_statuses(status: str | None) -> list[JobStatus]:
    """The job statuses a library ``/history`` listing shows for its ``status`` query.

    Raises:
        BadRequest: ``status`` is neither ``completed`` nor ``failed`` (any case).
    """
    return status_filter(status, HISTORY_STATUSES)


def upload_body(**text_fields: str) -> dict[str, Any]:
    """OpenAPI ``openapi_extra`` for a multipart body: the required binary ``file`` and
    optional text fields (name → description)."""
    properties: dict[str, Any] = {"file": {"type": "string", "format": "binary"}}
    properties.update(
        {name: {"type": "string", "description": text} for name, text in text_fields.items()}
    )
    schema = {
        "type": "object",
        "required": ["file"],
        "properties": properties,
        "additionalProperties": False,
    }
    return {
        "requestBody": {
            "required": True,
            "content": {"multipart/form-data": {"schema": schema}},
        }
    }
