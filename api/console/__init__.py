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
# Revalidate on each load so an upgraded server never runs a stale script. The policy allows
# only this origin's scripts and API (previews and media arrive as blob: or same-origin URLs)
# and no framing, so injected markup could neither run nor be clickjacked.
_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; connect-src 'self' blob:; "
        "img-src 'self' blob: data:; media-src 'self' blob:; "
        "style-src 'self' 'unsafe-inline'; object-src 'none'; base-uri 'self'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def install_console(app: FastAPI) -> None:
    """Serve ``index.html`` at ``/`` and its assets under ``/console/``."""

    @app.get("/", include_in_schema=False)
    async def console_index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=_HEADERS)

    app.mount("/console", StaticFiles(directory=STATIC_DIR), name="console")
