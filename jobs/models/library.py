"""A user's library: templates (and their processing jobs), audio groups, audio, assets.

Paths are relative to ``Settings.storage_dir`` and built only from ids by
``jobs.storage.Storage``; user-supplied file names are kept for display and downloads only.

``Template.manifest`` is the client-facing manifest from
``renderer.template.manifest.build_manifest``;
``Template.definition`` is the parsed ``data.json`` as
``Template.model_dump(mode="json", by_alias=True)`` so the API can rebuild the
``renderer.template.model.Template`` (``Template.model_validate(row.definition)``) to validate
customisations without touching the files.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from jobs.models.base import Base, CreatedMixin, EnqueuedMixin, IdMixin, JobStatus

TEMPLATE_STAGES = ("uploaded", "validating", "extracting", "analyzing", "done")


class Template(IdMixin, CreatedMixin, Base):
    """An uploaded template ZIP; usable for renders once ``status`` is completed."""

    __tablename__ = "templates"
    __table_args__ = (sa.Index("ix_templates_user_status", "user_id", "status"),)

    user_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(sa.String(255))
    original_filename: Mapped[str] = mapped_column(sa.String(255), default="template.zip")
    status: Mapped[JobStatus] = mapped_column(default=JobStatus.Pending)
    zip_path: Mapped[str] = mapped_column(sa.String(512))
    extracted_dir: Mapped[str | None] = mapped_column(sa.String(512), default=None)
    zip_bytes: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    # zip + extracted files once processed; what the account is charged.
    size_bytes: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    # Storage currently held as a reservation for this row (settled or released later).
    reserved_bytes: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    manifest: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    definition: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    deleted_at: Mapped[datetime | None] = mapped_column(default=None)

    jobs: Mapped[list[TemplateJob]] = relationship(
        back_populates="template", lazy="raise", passive_deletes=True
    )


class TemplateJob(IdMixin, CreatedMixin, EnqueuedMixin, Base):
    """One processing run of a template (stages uploaded → validating → extracting →
    analyzing → done)."""

    __tablename__ = "template_jobs"
    __table_args__ = (sa.Index("ix_template_jobs_user_status", "user_id", "status"),)

    template_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("templates.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"))
    stage: Mapped[str] = mapped_column(sa.String(16), default="uploaded")
    status: Mapped[JobStatus] = mapped_column(default=JobStatus.Pending)
    reason: Mapped[str | None] = mapped_column(sa.Text, default=None)
    code: Mapped[str | None] = mapped_column(sa.String(64), default=None)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    completed_at: Mapped[datetime | None] = mapped_column(default=None)

    template: Mapped[Template] = relationship(back_populates="jobs", lazy="raise")


class AudioGroup(IdMixin, CreatedMixin, Base):
    """A named collection of audio files (linked to campaigns by RENDERS)."""

    __tablename__ = "audio_groups"

    user_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(sa.String(255))

    audios: Mapped[list[Audio]] = relationship(
        back_populates="group", lazy="raise", passive_deletes=True
    )


class Audio(IdMixin, CreatedMixin, Base):
    """An uploaded audio file (MP3, WAV or AAC), usable once ``status`` is completed."""

    __tablename__ = "audios"
    __table_args__ = (sa.Index("ix_audios_user_status", "user_id", "status"),)

    user_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"))
    group_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("audio_groups.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(sa.String(255))
    format: Mapped[str] = mapped_column(sa.String(16))
    path: Mapped[str] = mapped_column(sa.String(512))
    size_bytes: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    reserved_bytes: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    duration_s: Mapped[float | None] = mapped_column(sa.Float, default=None)
    status: Mapped[JobStatus] = mapped_column(default=JobStatus.Pending)

    group: Mapped[AudioGroup] = relationship(back_populates="audios", lazy="raise")


class AudioJob(IdMixin, CreatedMixin, EnqueuedMixin, Base):
    """One processing (validation) run of an audio upload."""

    __tablename__ = "audio_jobs"
    __table_args__ = (sa.Index("ix_audio_jobs_user_status", "user_id", "status"),)

    audio_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("audios.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"))
    status: Mapped[JobStatus] = mapped_column(default=JobStatus.Pending)
    reason: Mapped[str | None] = mapped_column(sa.Text, default=None)
    code: Mapped[str | None] = mapped_column(sa.String(64), default=None)
    completed_at: Mapped[datetime | None] = mapped_column(default=None)


class Asset(IdMixin, CreatedMixin, EnqueuedMixin, Base):
    """An image or video uploaded for use in customisations (``assetId``)."""

    __tablename__ = "assets"
    __table_args__ = (sa.Index("ix_assets_user_status", "user_id", "status"),)

    user_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"))
    # 'image' | 'video'; None until probing decided.
    kind: Mapped[str | None] = mapped_column(sa.String(8), default=None)
    name: Mapped[str] = mapped_column(sa.String(255))
    format: Mapped[str] = mapped_column(sa.String(16), default="")
    path: Mapped[str] = mapped_column(sa.String(512))
    size_bytes: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    reserved_bytes: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    status: Mapped[JobStatus] = mapped_column(default=JobStatus.Pending)
    reason: Mapped[str | None] = mapped_column(sa.Text, default=None)
    code: Mapped[str | None] = mapped_column(sa.String(64), default=None)
    completed_at: Mapped[datetime | None] = mapped_column(default=None)
