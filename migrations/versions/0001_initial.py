"""Accounts and library: users, API keys, templates, audio, assets.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATUS = sa.String(16)


def _ts(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _user_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["user_id"], ["users.id"], name=f"fk_{table}_user_id_users", ondelete="CASCADE"
    )


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("storage_quota_bytes", sa.BigInteger(), nullable=False),
        sa.Column("storage_used_bytes", sa.BigInteger(), nullable=False),
        sa.Column("storage_reserved_bytes", sa.BigInteger(), nullable=False),
        sa.Column("render_budget_ms", sa.BigInteger(), nullable=False),
        sa.Column("render_used_ms", sa.BigInteger(), nullable=False),
        sa.Column("render_reserved_ms", sa.BigInteger(), nullable=False),
        sa.Column("max_concurrent_renders", sa.Integer(), nullable=True),
        sa.Column("webhook_secret", sa.String(128), nullable=False),
        _ts("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("name", name="uq_users_name"),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        _ts("revoked_at", nullable=True),
        _ts("created_at"),
        _user_fk("api_keys"),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("prefix", name="uq_api_keys_prefix"),
    )
    op.create_index("ix_api_keys_user_id", "api_keys", ["user_id"])

    op.create_table(
        "templates",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("original_filename", sa.String(255), nullable=False),
        sa.Column("status", STATUS, nullable=False),
        sa.Column("zip_path", sa.String(512), nullable=False),
        sa.Column("extracted_dir", sa.String(512), nullable=True),
        sa.Column("zip_bytes", sa.BigInteger(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("reserved_bytes", sa.BigInteger(), nullable=False),
        sa.Column("manifest", sa.JSON(), nullable=True),
        sa.Column("definition", sa.JSON(), nullable=True),
        _ts("deleted_at", nullable=True),
        _ts("created_at"),
        _user_fk("templates"),
        sa.PrimaryKeyConstraint("id", name="pk_templates"),
    )
    op.create_index("ix_templates_user_status", "templates", ["user_id", "status"])

    op.create_table(
        "template_jobs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("template_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("status", STATUS, nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("code", sa.String(64), nullable=True),
        _ts("started_at", nullable=True),
        _ts("completed_at", nullable=True),
        _ts("created_at"),
        sa.ForeignKeyConstraint(
            ["template_id"],
            ["templates.id"],
            name="fk_template_jobs_template_id_templates",
            ondelete="CASCADE",
        ),
        _user_fk("template_jobs"),
        sa.PrimaryKeyConstraint("id", name="pk_template_jobs"),
    )
    op.create_index("ix_template_jobs_template_id", "template_jobs", ["template_id"])
    op.create_index("ix_template_jobs_user_status", "template_jobs", ["user_id", "status"])

    op.create_table(
        "audio_groups",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        _ts("created_at"),
        _user_fk("audio_groups"),
        sa.PrimaryKeyConstraint("id", name="pk_audio_groups"),
    )
    op.create_index("ix_audio_groups_user_id", "audio_groups", ["user_id"])

    op.create_table(
        "audios",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("group_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("format", sa.String(16), nullable=False),
        sa.Column("path", sa.String(512), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("reserved_bytes", sa.BigInteger(), nullable=False),
        sa.Column("duration_s", sa.Float(), nullable=True),
        sa.Column("status", STATUS, nullable=False),
        _ts("created_at"),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["audio_groups.id"],
            name="fk_audios_group_id_audio_groups",
            ondelete="CASCADE",
        ),
        _user_fk("audios"),
        sa.PrimaryKeyConstraint("id", name="pk_audios"),
    )
    op.create_index("ix_audios_group_id", "audios", ["group_id"])
    op.create_index("ix_audios_user_status", "audios", ["user_id", "status"])

    op.create_table(
        "audio_jobs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("audio_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("status", STATUS, nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("code", sa.String(64), nullable=True),
        _ts("completed_at", nullable=True),
        _ts("created_at"),
        sa.ForeignKeyConstraint(
            ["audio_id"], ["audios.id"], name="fk_audio_jobs_audio_id_audios", ondelete="CASCADE"
        ),
        _user_fk("audio_jobs"),
        sa.PrimaryKeyConstraint("id", name="pk_audio_jobs"),
    )
    op.create_index("ix_audio_jobs_audio_id", "audio_jobs", ["audio_id"])
    op.create_index("ix_audio_jobs_user_status", "audio_jobs", ["user_id", "status"])

    op.create_table(
        "assets",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(8), nullable=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("format", sa.String(16), nullable=False),
        sa.Column("path", sa.String(512), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("reserved_bytes", sa.BigInteger(), nullable=False),
        sa.Column("status", STATUS, nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("code", sa.String(64), nullable=True),
        _ts("completed_at", nullable=True),
        _ts("created_at"),
        _user_fk("assets"),
        sa.PrimaryKeyConstraint("id", name="pk_assets"),
    )
    op.create_index("ix_assets_user_status", "assets", ["user_id", "status"])


def downgrade() -> None:
    for table in (
        "assets",
        "audio_jobs",
        "audios",
        "audio_groups",
        "template_jobs",
        "templates",
        "api_keys",
        "users",
    ):
        op.drop_table(table)
