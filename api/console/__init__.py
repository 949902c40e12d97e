"""The Velocity console: a static single-page app served at ``/`` by ``velocity serve``.

Plain HTML, CSS and ES modules shipped as package data (no build step, no CDN); it talks to
the same API as any client, with the key the person pastes kept in ``sessionStorage``.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent / "static"
# Revalidate on each load so an upgraded server never runs a stale script.
_NO_CACHE = {"Cache-Control": "no-cache"}


def install_console(app: FastAPI) -> None:
    """Serve ``index.html`` at ``/`` and its assets under ``/console/``."""

    @app.get("/", include_in_schema=False)
    async def console_index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=_NO_CACHE)

    app.mount("/console", StaticFiles(directory=STATIC_DIR), name="console")
