"""The FastAPI application factory (``create_app``) and the service it wires together.

The app owns one ``Service``: settings, database, storage and broker. In the embedded mode
(no ``VELOCITY_BROKER_URL``) the app's lifespan also runs dramatiq worker threads in this
process and re-enqueues stranded jobs at start-up.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import dramatiq
from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from api.errors import install_error_handlers
from api.http import install_http_middleware
from api.openapi import install_openapi, operation_id
from jobs.db import Database, create_database
from jobs.settings import Settings
from jobs.storage import Storage

log = logging.getLogger("velocity.api")


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass
class Service:
    """Everything a request or the embedded worker needs."""

    settings: Settings
    db: Database
    storage: Storage
    broker: dramatiq.Broker
    worker: dramatiq.Worker | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def start_worker(self, threads: int | None = None) -> dramatiq.Worker:
        """Start in-process worker threads (embedded mode and tests)."""
        from jobs.broker import start_embedded_worker

        if self.worker is None:
            if self.settings.render_subprocess:
                from jobs.actors.child import warm

                warm()
            self.worker = start_embedded_worker(
                self.broker, threads or self.settings.worker_threads
            )
        return self.worker

    def stop_worker(self) -> None:
        """Stop in-process worker threads, waiting for running jobs to finish."""
        if self.worker is not None:
            self.worker.stop()
            self.worker = None


def build_service(settings: Settings) -> Service:
    """Create storage, database and broker for ``settings`` and configure the actors."""
    import jobs.actors
    from jobs.broker import setup_broker

    storage = Storage(settings.storage_dir)
    storage.ensure()
    jobs.actors.configure(settings)
    broker = setup_broker(settings)
    return Service(settings, create_database(settings), storage, broker)


class CaseInsensitivePaths:
    """Lower-cases the static segments of a request path (``/Template/Upload`` →
    ``/template/upload``). Only segments that are static parts of some route are touched,
    so ids and key prefixes keep their case."""

    def __init__(self, app: ASGIApp, static_segments: Callable[[], frozenset[str]]) -> None:
        self.app = app
        self.static_segments = static_segments

    async def __call__(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if path != path.lower():
                known = self.static_segments()
                parts = [seg.lower() if seg.lower() in known else seg for seg in path.split("/")]
                new_path = "/".join(parts)
                if new_path != path:
                    scope = dict(scope)
                    scope["path"] = new_path
                    scope["raw_path"] = new_path.encode("utf-8")
        await self.app(scope, receive, send)


def _route_paths(routes: Any) -> list[str]:
    paths: list[str] = []
    for route in routes:
        path = getattr(route, "path", None)
        if isinstance(path, str):
            paths.append(path)
        inner = getattr(route, "original_router", None)
        if inner is not None:
            prefix = getattr(getattr(route, "include_context", None), "prefix", "") or ""
            paths += [prefix + p for p in _route_paths(inner.routes)]
    return paths


def _static_segments(app: FastAPI) -> frozenset[str]:
    paths = _route_paths(app.router.routes)
    try:
        paths += list(app.openapi().get("paths", {}))
    except Exception:
        log.exception("could not build the OpenAPI schema")
    segments: set[str] = set()
    for path in paths:
        for seg in path.split("/"):
            if seg and "{" not in seg:
                segments.add(seg.lower())
    return frozenset(segments)


def _lifespan(
    svc: Service, settings: Settings, run_worker: bool, recover: bool
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Start the embedded worker and recover stranded jobs at start-up; stop and close at
    shutdown."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if run_worker:
            svc.start_worker()
        if recover:
            from jobs.recovery import recover as recover_jobs

            try:
                await recover_jobs(
                    svc.db, svc.broker, embedded=settings.embedded, storage=svc.storage
                )
            except Exception:
                log.exception("start-up recovery failed")
        try:
            yield
        finally:
            if run_worker:
                await anyio.to_thread.run_sync(svc.stop_worker)
            await svc.db.dispose()

    return lifespan


def _include_routers(app: FastAPI) -> None:
    from api.routers import (
        account,
        admin,
        assets,
        audio,
        audio_groups,
        campaigns,
        health,
        renders,
        signed_urls,
        templates,
    )

    for module in (
        health,
        account,
        templates,
        audio,
        audio_groups,
        assets,
        admin,
        renders,
        campaigns,
        signed_urls,
    ):
        app.include_router(module.router)


def _install_middleware(app: FastAPI, settings: Settings) -> None:
    cache: dict[str, frozenset[str]] = {}

    def segments() -> frozenset[str]:
        if "v" not in cache:
            cache["v"] = _static_segments(app)
        return cache["v"]

    from api.routers.metrics import HttpMetrics
    from api.routers.metrics import router as metrics_router

    app.include_router(metrics_router)
    # Added first, so it runs inside CaseInsensitivePaths and sees the routed scope.
    app.add_middleware(HttpMetrics)
    app.add_middleware(CaseInsensitivePaths, static_segments=segments)
    install_http_middleware(app, settings)


def create_app(
    settings: Settings | None = None,
    *,
    service: Service | None = None,
    run_worker: bool | None = None,
    recover: bool | None = None,
) -> FastAPI:
    """Build the API.

    Args:
        settings: service settings (``Settings()`` when None).
        service: an already built service (tests); built from ``settings`` when None.
        run_worker: run worker threads in this process; default: the embedded mode.
        recover: re-enqueue stranded jobs at start-up; default: same as ``run_worker``.
    """
    settings = settings or (service.settings if service else Settings())
    svc = service or build_service(settings)
    run_worker = settings.embedded if run_worker is None else run_worker
    recover = run_worker if recover is None else recover

    # Swagger UI and ReDoc from assets in the fastapi-offline package: /docs works air-gapped.
    app = FastAPIOffline(
        title="Velocity",
        version="1.0",
        summary="Self-hostable video template rendering",
        description=(
            "Upload a template ZIP, upload audio, render personalised MP4s. Authenticate "
            "with the `X-API-Key` header. Errors are `{detail, code}`."
        ),
        lifespan=_lifespan(svc, settings, run_worker, recover),
        # Operation ids are the handlers' names (``create_render``), which generated
        # clients turn into their method names.
        generate_unique_id_function=operation_id,
    )
    app.state.service = svc
    app.state.settings = settings
    app.state.db = svc.db
    app.state.storage = svc.storage
    app.state.broker = svc.broker
    install_error_handlers(app)
    _include_routers(app)
    from api.console import install_console
    from api.signing import load_signing_secret

    app.state.signing_secret = load_signing_secret(settings)
    install_console(app)
    _install_middleware(app, settings)
    install_openapi(app)
    return app
