"""The API's error vocabulary, mapped to responses in one place (``install_error_handlers``).

Every error body is ``{"detail": "<what to fix>", "code": "<machine code>"}``. Unknown
exceptions become a 500 ``internal_error`` whose text never reaches the client (it is logged).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from jobs.faults import is_disk_full, is_unavailable, outage_exception_types

log = logging.getLogger("velocity.api")

# Seconds a client should wait before retrying while the database or broker is down.
RETRY_AFTER_S = 2


class AppError(Exception):
    """Base of errors a client can cause; ``status``, ``code`` and ``detail`` go on the wire."""

    status = 400
    code = "bad_request"

    def __init__(self, detail: str, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.detail = detail
        if code:
            self.code = code
        self.headers = headers


class BadRequest(AppError):
    status = 400
    code = "bad_request"


class Unauthorized(AppError):
    status = 401
    code = "unauthorized"


class PaymentRequired(AppError):
    status = 402
    code = "insufficient_render_budget"


class Forbidden(AppError):
    status = 403
    code = "forbidden"


class NotFound(AppError):
    status = 404
    code = "not_found"


class Conflict(AppError):
    status = 409
    code = "conflict"


class PayloadTooLarge(AppError):
    status = 413
    code = "payload_too_large"


class RangeNotSatisfiable(AppError):
    status = 416
    code = "range_not_satisfiable"


class TooManyRequests(AppError):
    status = 429
    code = "too_many_requests"


class InsufficientStorage(AppError):
    status = 507
    code = "storage_full"


def error_body(detail: str, code: str) -> dict[str, str]:
    """The JSON error body."""
    return {"detail": detail, "code": code}


def _field_name(loc: tuple[Any, ...]) -> str:
    where = {
        "query": "query parameter",
        "path": "path parameter",
        "header": "header",
        "body": "body field",
        "cookie": "cookie",
        "form": "form field",
    }
    if not loc:
        return "request"
    head, *rest = loc
    parts = [str(p) for p in rest]
    if head in where:
        if not parts:
            return "request body" if head == "body" else where[head]
        path = parts[0] + "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in parts[1:])
        return f"{where[head]} '{path}'"
    return "'" + ".".join(str(p) for p in loc) + "'"


def validation_detail(exc: RequestValidationError) -> str:
    """One readable sentence per problem, naming the field: ``query parameter 'take': ...``."""
    messages = []
    for err in exc.errors()[:5]:
        msg = str(err.get("msg", "invalid value"))
        loc = tuple(err.get("loc", ()))
        if err.get("type") == "json_invalid":
            # loc is ("body", <character offset>): not a field name, so say what it is.
            reason = (err.get("ctx") or {}).get("error", "JSON decode error")
            at = f" at character {loc[1]}" if len(loc) > 1 else ""
            messages.append(f"request body is not valid JSON{at}: {reason}")
            continue
        if loc == ("body",) and err.get("type") in (
            "model_attributes_type",
            "dict_type",
        ):
            # Usually `curl -d` without a JSON content type: the body arrived as a string.
            messages.append(
                "request body must be a JSON object sent with Content-Type: application/json"
            )
            continue
        if err.get("type") == "missing":
            messages.append(f"{_field_name(loc)} is required")
            continue
        elif err.get("type") == "extra_forbidden":
            msg = "unknown field"
        msg = msg.removeprefix("Value error, ")
        messages.append(f"{_field_name(loc)}: {msg}")
    return "; ".join(messages) or "invalid request"


# Validation errors inside these request fields get the code the service's own checks of
# the same field use, so a client sees one code per field whatever layer caught it.
FIELD_CODES = {
    "encoderConfig": "invalid_encoder_config",
    "customizationMap": "invalid_customization",
}


def validation_code(exc: RequestValidationError) -> str:
    """The machine code of a request validation error (``invalid_request`` by default)."""
    for err in exc.errors()[:1]:
        for part in err.get("loc", ()):
            if part in FIELD_CODES:
                return FIELD_CODES[part]
    return "invalid_request"


def _infrastructure(request: Request, exc: Exception) -> JSONResponse | None:
    """503 for an outage of the database or broker, 507 for a full disk; None for a bug."""
    down = is_unavailable(exc)
    if down is not None:
        # An outage, not a bug: the client should retry; pool_pre_ping reconnects.
        log.warning("%s unavailable on %s %s", down, request.method, request.url.path)
        return JSONResponse(
            error_body(
                f"The service's {down} is unavailable right now; retry shortly",
                "service_unavailable",
            ),
            503,
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )
    if is_disk_full(exc):
        log.error("storage full on %s %s", request.method, request.url.path)
        return JSONResponse(
            error_body(
                "The server's storage is full; nothing was kept. Retry later",
                "storage_full",
            ),
            507,
            headers={"Retry-After": "60"},
        )
    return None


def install_error_handlers(app: FastAPI) -> None:
    """Map ``AppError``, validation errors, HTTP errors and crashes to ``{detail, code}``."""

    @app.exception_handler(AppError)
    async def _app_error(_request: Request, exc: AppError) -> JSONResponse:
        return JSONResponse(error_body(exc.detail, exc.code), exc.status, headers=exc.headers)

    # Store refusals (jobs.errors.Refused) are mapped here, once: route bodies
    # let them through. 429 asks the client to wait about the time a short render takes.
    from jobs.errors import Refused

    refusals: dict[str, type[AppError]] = {
        "bad_request": BadRequest,
        "not_found": NotFound,
        "payment_required": PaymentRequired,
        "too_many": TooManyRequests,
        "conflict": Conflict,
    }

    @app.exception_handler(Refused)
    async def _refused(request: Request, exc: Refused) -> JSONResponse:
        headers = {"Retry-After": "10"} if exc.kind == "too_many" else None
        return await _app_error(request, refusals[exc.kind](exc.detail, exc.code, headers=headers))

    # The API calls the renderer only on what the client sent (a preview of its own
    # customisations), so a renderer refusal is the client's to fix: 400 with its code.
    from renderer.errors import RendererError

    @app.exception_handler(RendererError)
    async def _renderer(request: Request, exc: RendererError) -> JSONResponse:
        return await _app_error(request, BadRequest(str(exc), exc.code))

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(error_body(validation_detail(exc), validation_code(exc)), 400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized"}
        detail = exc.detail if isinstance(exc.detail, str) else "request refused"
        if exc.status_code == 404 and detail == "Not Found":
            detail = "No such endpoint"
        return JSONResponse(
            error_body(detail, codes.get(exc.status_code, "http_error")),
            exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    async def _outage(request: Request, exc: Exception) -> JSONResponse:
        # Registered per class (not only under Exception) so the answer goes through
        # ExceptionMiddleware: the catch-all handler's ServerErrorMiddleware re-raises after
        # answering, and the server then drops the keep-alive connection.
        answer = _infrastructure(request, exc)
        if answer is not None:
            return answer
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse(error_body("internal error", "internal_error"), 500)

    for cls in outage_exception_types():
        app.add_exception_handler(cls, _outage)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        answer = _infrastructure(request, exc)
        if answer is not None:
            return answer
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(error_body("internal error", "internal_error"), 500)
