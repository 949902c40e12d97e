"""The OpenAPI document a client generator can trust, finished in one place.

FastAPI derives paths, parameters and the named DTO schemas from the routes. This module adds
what the routes do not say themselves, uniformly, so that a generated client (for example
``openapi-python-client``) needs no hand edits:

* every status an operation can answer is declared with the ``ErrorResponse`` schema: 400
  (validation; never 422, which the service does not send), 401 where a key is needed, 404
  where the path names a resource, 413 where there is a body, 402 and 429 on render
  submission, 503 everywhere (database or broker unreachable);
* downloads are ``format: binary`` under their own media type and
  ``application/octet-stream``, with 206, 304 and 416, the ``Range``/``If-Range`` request
  headers and the ``Accept-Ranges``/``Content-Range``/``ETag`` response headers, and a
  ``HEAD`` operation;
* the PNG preview is declared binary too.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from api.schemas.common import ERROR_DESCRIPTIONS

ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}
BINARY = {"type": "string", "format": "binary"}
METHODS = ("get", "put", "post", "delete", "patch")
EXTRA_DESCRIPTIONS = {
    503: "Service unavailable (database or broker unreachable); retry after Retry-After",
}
RETRY_AFTER = {"schema": {"type": "integer"}, "description": "seconds to wait before retrying"}
RANGE_PARAMETERS = [
    {
        "name": "Range",
        "in": "header",
        "required": False,
        "description": "RFC 9110 byte range, e.g. bytes=0-1023",
        "schema": {"type": "string"},
    },
    {
        "name": "If-Range",
        "in": "header",
        "required": False,
        "description": "serve the range only if the ETag or Last-Modified still matches",
        "schema": {"type": "string"},
    },
]
DOWNLOAD_HEADERS = {
    "Accept-Ranges": {"schema": {"type": "string"}, "description": "bytes"},
    "Content-Length": {"schema": {"type": "integer"}},
    "ETag": {"schema": {"type": "string"}},
    "Last-Modified": {"schema": {"type": "string"}},
    "Content-Disposition": {"schema": {"type": "string"}},
}


def _error(code: int) -> dict[str, Any]:
    description = EXTRA_DESCRIPTIONS.get(code) or str(ERROR_DESCRIPTIONS.get(code, "Error"))
    return {"description": description, "content": {"application/json": {"schema": ERROR_REF}}}


def _media_types(response: dict[str, Any]) -> list[str]:
    types = [t for t in (response.get("content") or {}) if t != "application/json"]
    return types or ["application/octet-stream"]


def _binary_content(types: list[str]) -> dict[str, Any]:
    ordered = [
        *types,
        *(["application/octet-stream"] if "application/octet-stream" not in types else []),
    ]
    return {t: {"schema": dict(BINARY)} for t in ordered}


def _finish_download(path: str, operation: dict[str, Any]) -> dict[str, Any]:
    """Declare a download's binary bodies, ranges and headers; return its HEAD twin."""
    responses = operation.setdefault("responses", {})
    types = _media_types(responses.get("200", {}))
    content = _binary_content(types)
    responses["200"] = {
        "description": "The whole file",
        "headers": DOWNLOAD_HEADERS,
        "content": content,
    }
    responses["206"] = {
        "description": "The requested byte range",
        "headers": {
            **DOWNLOAD_HEADERS,
            "Content-Range": {"schema": {"type": "string"}, "description": "bytes a-b/size"},
        },
        "content": copy.deepcopy(content),
    }
    responses["304"] = {"description": "Not modified (If-None-Match matched)"}
    responses["416"] = _error(416)
    params = operation.setdefault("parameters", [])
    names = {p.get("name") for p in params}
    params.extend(copy.deepcopy(p) for p in RANGE_PARAMETERS if p["name"] not in names)
    head = copy.deepcopy(operation)
    head["operationId"] = f"{operation.get('operationId', path)}_head"
    head["summary"] = f"{operation.get('summary', 'Download')} (headers only)"
    for status in ("200", "206"):
        head["responses"][status] = {
            "description": head["responses"][status]["description"] + " (headers only)",
            "headers": head["responses"][status]["headers"],
        }
    return head


def finish_openapi(schema: dict[str, Any]) -> dict[str, Any]:
    """Apply the rules of this module's docstring to a FastAPI-generated ``schema``."""
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    for path, item in schema.get("paths", {}).items():
        heads: dict[str, Any] = {}
        for method in METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            codes = [503]
            if "{" in path or operation.get("parameters") or "requestBody" in operation:
                codes.append(400)
            if operation.get("security"):
                codes.append(401)
            if "{" in path:
                codes.append(404)
            if "requestBody" in operation:
                codes.append(413)
            if method == "post" and path in ("/render", "/render/batch"):
                codes += [402, 429]
            for code in codes:
                responses.setdefault(str(code), _error(code))
            for status, response in responses.items():
                if status.startswith(("4", "5")) or status == "default":
                    response["content"] = {"application/json": {"schema": ERROR_REF}}
                if status in ("429", "503"):
                    response["headers"] = {"Retry-After": RETRY_AFTER}
            if method == "get" and path.endswith("/download"):
                heads["head"] = _finish_download(path, operation)
            elif path.endswith("/preview"):
                responses["200"] = {
                    "description": "The frame as PNG",
                    "content": _binary_content(["image/png"]),
                }
        item.update(heads)
    return schema


def operation_id(route: APIRoute) -> str:
    """A route's OpenAPI ``operationId``: its handler's name."""
    return route.name


def install_openapi(app: FastAPI) -> None:
    """Serve the finished document at ``/openapi.json`` (built once, then cached)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                description=app.description,
                routes=app.routes,
            )
            app.openapi_schema = finish_openapi(schema)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
