"""The ``velocity`` command line: the composition root of every process.

``serve`` (API, plus worker threads in the embedded mode), ``worker`` (dramatiq worker
process for production), ``migrate``, ``user create``, ``key create``/``key revoke`` and
``render`` (offline rendering, from ``api.cli_render``). Each command builds ``Settings()``
once and passes it down; every command that touches the database migrates it first.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from jobs.settings import Settings

T = TypeVar("T")
log = logging.getLogger("velocity")
DEMO_USER = "demo"


def _setup_logging(command: str | None) -> None:
    from jobs.logs import setup_logging

    # `velocity render` is a terminal tool: its stderr is the progress bar and at most one
    # error line, so only warnings get through there; the services log at INFO.
    level = logging.WARNING if command == "render" else logging.INFO
    fmt = "text" if command == "render" else Settings().log_format
    setup_logging(level, fmt)
    # Migrations run on every start; their step-by-step chatter is noise there.
    logging.getLogger("alembic").setLevel(logging.WARNING)


def _with_db(settings: Settings, fn: Callable[[Any], Awaitable[T]]) -> T:
    from jobs.db import create_database

    async def run() -> T:
        db = create_database(settings)
        try:
            return await fn(db)
        finally:
            await db.dispose()

    return asyncio.run(run())


def _migrate(settings: Settings) -> None:
    from jobs.db import run_migrations

    run_migrations(settings.database_url)


async def _create_user(db: Any, name: str, storage_mb: int, budget_ms: int) -> tuple[Any, str]:
    from api.auth import issue_key
    from jobs.store import accounts

    async with db.session() as s:
        user = await accounts.create_user(
            s, name, storage_quota_mb=storage_mb, render_budget_ms=budget_ms
        )
        key = await issue_key(s, user.id)
    return user, key.key


DEMO_KEY_FILE = "demo-api-key"


def _remember_demo_key(settings: Settings, key: str) -> None:
    # The embedded demo keeps its key (mode 0600, beside the data it opens) so every later
    # `make run` can print it again; production users get keys from `velocity key create`.
    path = settings.storage_dir / DEMO_KEY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")


def _remembered_demo_key(settings: Settings) -> str | None:
    """The demo key kept by an earlier start, if it still authenticates."""
    from api.auth import authenticate

    path = settings.storage_dir / DEMO_KEY_FILE
    try:
        key = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None

    async def check(db: Any) -> bool:
        async with db.session() as s:
            return await authenticate(s, key) is not None

    return key if key and _with_db(settings, check) else None


def _velocity_command() -> str:
    """How to call this CLI from the current shell: ``velocity`` when it is on PATH, else the
    path of the script that is running (``.venv/bin/velocity``)."""
    import shutil

    if shutil.which("velocity"):
        return "velocity"
    here = Path(sys.argv[0])
    if here.name != "velocity":  # python -m api.cli, or a test runner
        return "velocity"
    try:
        return str(here.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(here)


def _start_banner(base: str, key: str | None, created: bool) -> str:
    """What `velocity serve` prints once it listens; the console URL and key come last."""
    lines = ["", "Velocity is ready."]
    if created:
        lines.append(f"Created user '{DEMO_USER}' with the API key below.")
    shown = key or "<your key>"
    demo_zip = Path("var/fixtures/demo.zip")
    archive = demo_zip if demo_zip.is_file() else Path("template.zip")
    lines += [
        "",
        "Try the API:",
        f"    curl {base}/health",
        f'    curl -H "X-API-Key: {shown}" -F "file=@{archive}" {base}/template/upload',
        f"API docs: {base}/docs",
        "",
        f"Console: {base}/",
    ]
    if key:
        lines.append(f"API key: {key}")
    else:
        lines.append(f"API key: make one with `{_velocity_command()} key create {DEMO_USER}`")
    return "\n".join(lines) + "\n"


def _public_base(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}"


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the API (and, embedded, the workers) with uvicorn; once it listens, print where
    the console is and the key to sign in with, last."""
    import uvicorn

    from api.app import create_app
    from jobs.store import accounts

    overrides: dict[str, Any] = {}
    if args.host:
        overrides["host"] = args.host
    if args.port is not None:
        overrides["port"] = args.port
    settings = Settings(**overrides)
    _migrate(settings)
    run_worker = not args.no_worker
    if settings.embedded and not run_worker:
        log.warning("no VELOCITY_BROKER_URL and --no-worker: jobs will wait for a worker")

    async def ensure_demo(db: Any) -> str | None:
        async with db.session() as s:
            if await accounts.count_users(s):
                return None
        _user, key = await _create_user(
            db, DEMO_USER, settings.default_storage_quota_mb, settings.default_render_budget_ms
        )
        return key

    key: str | None = None
    created = False
    if settings.embedded:
        key = _with_db(settings, ensure_demo)
        created = key is not None
        if key:
            _remember_demo_key(settings, key)
        else:
            key = _remembered_demo_key(settings)
    app = create_app(settings, run_worker=run_worker, recover=True)

    class Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                port = settings.port
                for server in self.servers:
                    for sock in server.sockets:
                        port = sock.getsockname()[1]
                banner = _start_banner(_public_base(settings.host, port), key, created)
                print(banner, flush=True)

    # log_config=None: uvicorn's records go through the handler set up above (JSON too).
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level="info", log_config=None
    )
    Server(config).run()
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """Run dramatiq worker threads against the configured Redis broker until signalled."""
    from api.app import build_service
    from jobs.queues import ALL_QUEUES
    from jobs.recovery import recover

    overrides: dict[str, Any] = {}
    if args.threads:
        overrides["worker_threads"] = args.threads
    settings = Settings(**overrides)
    if settings.embedded:
        print(
            "error: velocity worker needs VELOCITY_BROKER_URL (redis://...); in the embedded "
            "mode `velocity serve` runs the workers itself",
            file=sys.stderr,
        )
        return 2
    queues = args.queues or list(ALL_QUEUES)
    _migrate(settings)
    service = build_service(settings)

    async def recover_then_dispose() -> Any:
        # Dispose on the loop that opened the pooled connections: asyncpg cannot close
        # them from another (closed) loop and logs a traceback at every worker start.
        try:
            return await recover(
                service.db, service.broker, embedded=False, storage=service.storage
            )
        finally:
            await service.db.dispose()

    try:
        result = asyncio.run(recover_then_dispose())
        log.info("start-up recovery: %s", result)
    except Exception:
        log.exception("start-up recovery failed")

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    from jobs.broker import start_embedded_worker

    if settings.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.metrics_port, addr=settings.host)
    if settings.render_subprocess:
        from jobs.actors.child import warm

        warm()
    worker = start_embedded_worker(service.broker, settings.worker_threads, queues)
    log.info("worker started: %s threads on queues %s", settings.worker_threads, queues)
    print("velocity worker ready", flush=True)
    try:
        stop.wait()
    finally:
        log.info("stopping worker")
        worker.stop()
        service.broker.close()
    return 0


def cmd_migrate(_args: argparse.Namespace) -> int:
    """Apply database migrations."""
    settings = Settings()
    _migrate(settings)
    print("database is at the latest revision")
    return 0


def cmd_user_create(args: argparse.Namespace) -> int:
    """Create a user; its new API key is printed alone on the last line."""
    from jobs.store.accounts import UserExists

    settings = Settings()
    _migrate(settings)
    storage_mb = (
        args.storage_mb if args.storage_mb is not None else settings.default_storage_quota_mb
    )
    budget = (
        args.render_budget_ms
        if args.render_budget_ms is not None
        else settings.default_render_budget_ms
    )
    try:
        user, key = _with_db(settings, lambda db: _create_user(db, args.name, storage_mb, budget))
    except UserExists as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"created user {user.name} ({user.id}) with {storage_mb} MB and {budget} ms")
    print(key)
    return 0


def cmd_key_create(args: argparse.Namespace) -> int:
    """Issue a new API key for an existing user; the key is printed on the last line."""
    from api.auth import issue_key
    from jobs.store import accounts

    settings = Settings()
    _migrate(settings)

    async def run(db: Any) -> str | None:
        async with db.session() as s:
            user = await accounts.get_user_by_name(s, args.user)
            if user is None:
                return None
            return (await issue_key(s, user.id)).key

    key = _with_db(settings, run)
    if key is None:
        print(f"error: no user named {args.user!r}", file=sys.stderr)
        return 1
    print(key)
    return 0


def cmd_key_revoke(args: argparse.Namespace) -> int:
    """Revoke the API key with the given prefix."""
    from jobs.store import accounts

    settings = Settings()
    _migrate(settings)

    async def run(db: Any) -> bool:
        async with db.session() as s:
            return await accounts.revoke_api_key(s, args.prefix)

    if not _with_db(settings, run):
        print(f"error: no active API key with prefix {args.prefix!r}", file=sys.stderr)
        return 1
    print(f"revoked {args.prefix}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``velocity`` argument parser."""
    parser = argparse.ArgumentParser(prog="velocity", description="Velocity video rendering")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the API (and workers when embedded)")
    serve.add_argument("--no-worker", action="store_true", help="do not run worker threads")
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=None)
    serve.set_defaults(handler=cmd_serve)

    worker = sub.add_parser("worker", help="run a worker process (needs VELOCITY_BROKER_URL)")
    worker.add_argument("--threads", type=int, default=None)
    worker.add_argument("--queues", nargs="+", default=None, help="library and/or renders")
    worker.set_defaults(handler=cmd_worker)

    migrate = sub.add_parser("migrate", help="apply database migrations")
    migrate.set_defaults(handler=cmd_migrate)

    user = sub.add_parser("user", help="manage users")
    user_sub = user.add_subparsers(dest="user_command", required=True)
    create = user_sub.add_parser("create", help="create a user and print its API key")
    create.add_argument("name")
    create.add_argument("--storage-mb", type=int, default=None)
    create.add_argument("--render-budget-ms", type=int, default=None)
    create.set_defaults(handler=cmd_user_create)

    key = sub.add_parser("key", help="manage API keys")
    key_sub = key.add_subparsers(dest="key_command", required=True)
    key_create = key_sub.add_parser("create", help="issue a new key for USER")
    key_create.add_argument("user")
    key_create.set_defaults(handler=cmd_key_create)
    key_revoke = key_sub.add_parser("revoke", help="revoke the key with PREFIX")
    key_revoke.add_argument("prefix")
    key_revoke.set_defaults(handler=cmd_key_revoke)

    try:
        from api.cli_render import add_render_command
    except ImportError:
        pass
    else:
        add_render_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``velocity`` console script."""
    args = build_parser().parse_args(argv)
    _setup_logging(getattr(args, "command", None))
    handler: Callable[[argparse.Namespace], int] = args.handler
    return int(handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
