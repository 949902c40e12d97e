"""``GET /health``: unauthenticated liveness of the database, broker, storage and encoders."""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

router = APIRouter(tags=["health"])

HEALTHY = {
    "ok": True,
    "database": True,
    "broker": True,
    "storage": True,
    "storageFreeBytes": 52_428_800_000,
    "storageFloorBytes": 209_715_200,
    "down": [],
    "mode": "embedded",
    "encoders": {"libx264": True, "libx265": True, "libsvtav1": True, "h264_nvenc": False},
}


def _broker_ok(broker: Any) -> bool:
    client = getattr(broker, "client", None)
    if client is None:
        return True  # in-process StubBroker
    try:
        return bool(client.ping())
    except Exception:
        return False


def _storage_ok(storage: Any) -> bool:
    try:
        probe = storage.tmp_path(".probe")
        probe.write_bytes(b"ok")
        probe.unlink()
        return True
    except OSError:
        return False


def _free_bytes(storage: Any) -> int | None:
    try:
        return int(storage.free_bytes())
    except OSError:
        return None


def _encoders() -> dict[str, bool]:
    # The media stack is imported here only, on first use, to keep the API process light.
    from renderer.encode.encoder import available_encoders

    return available_encoders()


@router.get(
    "/health",
    summary="Service health",
    responses={
        200: {
            "description": "Every dependency is up",
            "content": {"application/json": {"example": HEALTHY}},
        },
        503: {
            "description": "A dependency is down (``ok`` false, the failing one false and named "
            "in ``down``)",
            "content": {
                "application/json": {
                    "example": {**HEALTHY, "ok": False, "broker": False, "down": ["broker"]}
                }
            },
        },
    },
)
async def health(request: Request) -> JSONResponse:
    """``{ok, database, broker, storage, storageFreeBytes, storageFloorBytes, down,
    encoders}``; 503 when a dependency is down (``down`` names it) or storage free space is
    below ``VELOCITY_MIN_FREE_MB``."""
    service = request.app.state.service
    database = await service.db.ping()
    broker = await anyio.to_thread.run_sync(_broker_ok, service.broker)
    storage = await anyio.to_thread.run_sync(_storage_ok, service.storage)
    encoders = service.extras.get("encoders")
    if encoders is None:
        try:
            encoders = await anyio.to_thread.run_sync(_encoders)
        except Exception:
            encoders = {}
        service.extras["encoders"] = encoders
    free = await anyio.to_thread.run_sync(_free_bytes, service.storage)
    floor = service.settings.min_free_mb * 1024 * 1024
    storage = storage and free is not None and free >= floor
    ok = database and broker and storage
    down = [name for name, up in (("database", database), ("broker", broker)) if not up]
    if not storage:
        down.append("storage")
    body = {
        "ok": ok,
        "database": database,
        "broker": broker,
        "storage": storage,
        "storageFreeBytes": free,
        "storageFloorBytes": floor,
        "down": down,
        "mode": "embedded" if service.settings.embedded else "distributed",
        "encoders": encoders,
    }
    return JSONResponse(body, status_code=200 if ok else 503)
