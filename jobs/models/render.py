"""Renders, campaigns, template instances and campaign audio-group links (RENDERS).

A render copies the names it shows (``template_name``, ``template_instance_name``) so it stays
readable after the template or instance is deleted; those foreign keys are ``SET NULL``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from jobs.models.base import Base, CreatedMixin, EnqueuedMixin, IdMixin, JobStatus


class Campaign(IdMixin, CreatedMixin, Base):
    """A named group of template instances and linked audio groups (campaign mode)."""

    __tablename__ = "campaigns"

    user_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(sa.String(255))


class TemplateInstance(IdMixin, CreatedMixin, Base):
    """A template inside a campaign with default customisations merged under a render's own."""

    __tablename__ = "template_instances"

    user_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    campaign_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("campaigns.id", ondelete="CASCADE"), index=True
    )
    template_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("templates.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(sa.String(255))
    customization_map: Mapped[list[dict[str, Any]]] = mapped_column(sa.JSON(), default=list)


class CampaignAudioGroup(CreatedMixin, Base):
    """Links an audio group to a campaign: a campaign render's audio must come from one."""

    __tablename__ = "campaign_audio_groups"

    campaign_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True
    )
    group_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("audio_groups.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class Render(IdMixin, CreatedMixin, EnqueuedMixin, Base):
    """One render job and, once completed, its output video.

    ``request`` holds what the worker needs, resolved at submission: ``customizationMap``
    (campaign defaults merged), ``encoderConfig`` (camelCase, validated) and ``jobInfo``
    (``fStart``/``fEnd`` resolved). ``reserved_*`` are what this render still holds of the
    account's budget and storage reservations; ``render_time_ms`` is what it has been charged.
    """

    __tablename__ = "renders"
    __table_args__ = (
        sa.Index("ix_renders_user_id_status", "user_id", "status"),
        sa.Index("ix_renders_status_lease_expires_at", "status", "lease_expires_at"),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"))
    template_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("templates.id", ondelete="SET NULL"), index=True
    )
    template_name: Mapped[str] = mapped_column(sa.String(255), default="")
    campaign_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("campaigns.id", ondelete="SET NULL")
    )
    template_instance_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("template_instances.id", ondelete="SET NULL")
    )
    template_instance_name: Mapped[str | None] = mapped_column(sa.String(255))
    audio_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("audios.id", ondelete="SET NULL"), index=True
    )
    name: Mapped[str] = mapped_column(sa.String(255))
    status: Mapped[JobStatus] = mapped_column(default=JobStatus.Pending)
    request: Mapped[dict[str, Any]] = mapped_column(default=dict)
    progress: Mapped[int] = mapped_column(default=0)
    frames_done: Mapped[int] = mapped_column(default=0)
    frames_total: Mapped[int] = mapped_column(default=0)
    output_path: Mapped[str | None] = mapped_column(sa.String(512))
    size_bytes: Mapped[int | None] = mapped_column(sa.BigInteger())
    encoder_used: Mapped[str | None] = mapped_column(sa.String(64))
    # Output frames taken from the span cache (renderer.segments) rather than rendered.
    cached_frames: Mapped[int] = mapped_column(default=0, server_default="0")
    reason: Mapped[str | None] = mapped_column(sa.Text())
    failure_code: Mapped[str | None] = mapped_column(sa.String(64))
    reserved_storage_bytes: Mapped[int] = mapped_column(sa.BigInteger(), default=0)
    reserved_render_ms: Mapped[int] = mapped_column(sa.BigInteger(), default=0)
    render_time_ms: Mapped[int] = mapped_column(sa.BigInteger(), default=0)
    attempts: Mapped[int] = mapped_column(default=0)
    lease_owner: Mapped[str | None] = mapped_column(sa.String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column()
    webhook_url: Mapped[str | None] = mapped_column(sa.String(2048))
    webhook_delivered_at: Mapped[datetime | None] = mapped_column()
    started_at: Mapped[datetime | None] = mapped_column()
    completed_at: Mapped[datetime | None] = mapped_column()


class RenderChunk(IdMixin, CreatedMixin, Base):
    """One GOP-aligned slice of a long render (SPEC §7), rendered video-only by any worker.

    ``f_start``/``f_end`` are template frames (half-open); ``frames_total`` counts output
    frames. ``output_path`` (relative to the storage root, under ``tmp/``) is set when the
    chunk completes; the files are joined by the finalize step and then removed. Chunks have
    their own lease, renewed by the worker rendering them; a completed chunk keeps
    ``lease_owner`` as the record of which worker rendered it.
    """

    __tablename__ = "render_chunks"
    __table_args__ = (
        sa.UniqueConstraint("render_id", "chunk_index", name="uq_render_chunks_render_id"),
        sa.Index("ix_render_chunks_status_lease_expires_at", "status", "lease_expires_at"),
    )

    render_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("renders.id", ondelete="CASCADE"))
    index: Mapped[int] = mapped_column("chunk_index")
    f_start: Mapped[int] = mapped_column()
    f_end: Mapped[int] = mapped_column()
    frames_total: Mapped[int] = mapped_column(default=0)
    frames_done: Mapped[int] = mapped_column(default=0)
    status: Mapped[JobStatus] = mapped_column(default=JobStatus.Pending)
    attempts: Mapped[int] = mapped_column(default=0)
    lease_owner: Mapped[str | None] = mapped_column(sa.String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column()
    output_path: Mapped[str | None] = mapped_column(sa.String(512))
    encoder_used: Mapped[str | None] = mapped_column(sa.String(64))
    cached_frames: Mapped[int] = mapped_column(default=0, server_default="0")
    reason: Mapped[str | None] = mapped_column(sa.Text())
    queued_at: Mapped[datetime | None] = mapped_column()
    started_at: Mapped[datetime | None] = mapped_column()
    completed_at: Mapped[datetime | None] = mapped_column()
