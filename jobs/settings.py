"""Typed service settings, read once by the composition root and passed down.

Every field maps to a ``VELOCITY_*`` environment variable (a ``.env`` file in the working
directory is honoured). Nothing in the code base reads the environment at import time: the
CLI or the app factory builds one ``Settings()`` and hands it to whoever needs it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from renderer.media.sandbox import SandboxLimits

GIB = 1024**3


class Settings(BaseSettings):
    """Service configuration (SPEC §2).

    ``broker_url`` absent selects the embedded mode: a dramatiq StubBroker served by worker
    threads inside ``velocity serve``.
    """

    model_config = SettingsConfigDict(
        env_prefix="VELOCITY_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    database_url: str = "sqlite+aiosqlite:///./var/velocity.db"
    broker_url: str | None = None
    storage_dir: Path = Path("./var/storage")
    admin_key: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    worker_threads: int = Field(default=2, ge=1, le=64)
    default_storage_quota_mb: int = Field(default=5000, ge=0)
    default_render_budget_ms: int = Field(default=3_600_000, ge=0)
    max_concurrent_renders: int = Field(default=10, ge=1)
    encoder: Literal["auto", "software", "nvenc"] = "auto"
    lease_seconds: int = Field(default=30, ge=2)
    max_upload_bytes: int = Field(default=2 * GIB, ge=1)
    webhook_timeout_s: float = Field(default=5.0, gt=0, le=60)
    # Let webhooks reach loopback, private and link-local addresses (receivers on a private
    # network, tests); off, a webhook URL must resolve to public addresses only.
    webhook_allow_private: bool = False
    # Renders longer than this many output frames are split into chunks rendered in
    # parallel and joined without re-encoding; 0 renders everything in one piece.
    chunk_frames: int = Field(default=900, ge=0)
    # The Lottie sandbox (renderer.media.sandbox): each animation draws in a child process with
    # these limits; a file that overruns them fails with lottie_timeout / lottie_crashed.
    lottie_frame_timeout_s: float = Field(default=5.0, gt=0, le=600)
    lottie_load_timeout_s: float = Field(default=20.0, gt=0, le=600)
    lottie_cpu_s: float = Field(default=10.0, ge=1, le=3600)
    lottie_memory_mb: int = Field(default=1024, ge=0, le=1024 * 1024)
    lottie_pool: int = Field(default=2, ge=0, le=64)
    # Encoded static spans (no customised layer on screen) kept for later renders of the
    # same template and encoder config; 0 turns span rendering off. The operator's storage,
    # not counted in any account's quota. Default: <storage_dir>/segment-cache.
    segment_cache_mb: int = Field(default=4096, ge=0)
    segment_cache_dir: Path | None = None
    # HMAC key of signed download links; unset: a random one kept in the storage dir.
    signing_secret: str | None = Field(default=None, min_length=16)
    # Comma-separated origins allowed by CORS ("*" for any); empty: CORS off.
    cors_origins: str = ""
    # JSON (non-multipart) request bodies larger than this answer 413.
    max_json_body_bytes: int = Field(default=1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    # Fault tolerance (see the README's "Production deployment"): a render pending longer
    # than this many seconds fails with ``pending_timeout`` and releases its reservations
    # (0: never); renders are refused (507) and /health is unhealthy while the storage
    # filesystem has less than ``min_free_mb`` free; worker processes lower their CPU
    # priority by ``worker_nice`` so renders never starve the API on a shared machine.
    max_pending_s: int = Field(default=86_400, ge=0)
    min_free_mb: int = Field(default=200, ge=0)
    worker_nice: int = Field(default=10, ge=0, le=19)
    # Run the renderer in a child process at worker_nice (crash isolation, and the API
    # keeps answering while renders run on the same cores); false: worker threads.
    render_subprocess: bool = True
    log_format: Literal["text", "json"] = "text"
    # `velocity worker` serves its Prometheus metrics on this port (on ``host``); None: off.
    metrics_port: int | None = Field(default=None, ge=1, le=65535)

    @field_validator("broker_url", "admin_key", "signing_secret", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        # An empty VELOCITY_BROKER_URL= line in .env means "not set", not "connect to ''".
        if isinstance(value, str) and not value.strip():
            return None
        return value

    def lottie_limits(self) -> SandboxLimits:
        """The Lottie sandbox's limits, for ``renderer.media.sandbox.configure``."""
        from renderer.media.sandbox import SandboxLimits

        return SandboxLimits(
            frame_timeout_s=self.lottie_frame_timeout_s,
            load_timeout_s=self.lottie_load_timeout_s,
            cpu_s=self.lottie_cpu_s,
            memory_mb=self.lottie_memory_mb,
            pool=self.lottie_pool,
        )

    @property
    def embedded(self) -> bool:
        """True when no external broker is configured (in-process worker threads)."""
        return self.broker_url is None

    @property
    def resend_after_s(self) -> float:
        """How long a pending job's message may be out before the sweeper re-sends it (two
        leases: a healthy queue moves well within that, and a duplicate is a no-op)."""
        return 2.0 * self.lease_seconds

    @property
    def is_sqlite(self) -> bool:
        """True when the database is a SQLite file (the embedded default)."""
        return self.database_url.startswith("sqlite")
