"""Renders, campaigns, template instances and campaign audio-group links.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATUS = sa.String(16)


def _ts(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _fk(table: str, column: str, target: str, ondelete: str = "CASCADE") -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], [f"{target}.id"], name=f"fk_{table}_{column}_{target}", ondelete=ondelete
    )


def upgrade() -> None:
    op.create_table(
        "campaigns",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        _ts("created_at"),
        _fk("campaigns", "user_id", "users"),
        sa.PrimaryKeyConstraint("id", name="pk_campaigns"),
    )
    op.create_index("ix_campaigns_user_id", "campaigns", ["user_id"])

    op.create_table(
        "template_instances",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("campaign_id", sa.Uuid(), nullable=False),
        sa.Column("template_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("customization_map", sa.JSON(), nullable=False),
        _ts("created_at"),
        _fk("template_instances", "user_id", "users"),
        _fk("template_instances", "campaign_id", "campaigns"),
        _fk("template_instances", "template_id", "templates"),
        sa.PrimaryKeyConstraint("id", name="pk_template_instances"),
    )
    for column in ("user_id", "campaign_id", "template_id"):
        op.create_index(f"ix_template_instances_{column}", "template_instances", [column])

    op.create_table(
        "campaign_audio_groups",
        sa.Column("campaign_id", sa.Uuid(), nullable=False),
        sa.Column("group_id", sa.Uuid(), nullable=False),
        _ts("created_at"),
        _fk("campaign_audio_groups", "campaign_id", "campaigns"),
        _fk("campaign_audio_groups", "group_id", "audio_groups"),
        sa.PrimaryKeyConstraint("campaign_id", "group_id", name="pk_campaign_audio_groups"),
    )
    op.create_index("ix_campaign_audio_groups_group_id", "campaign_audio_groups", ["group_id"])

    op.create_table(
        "renders",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("template_id", sa.Uuid(), nullable=True),
        sa.Column("template_name", sa.String(255), nullable=False),
        sa.Column("campaign_id", sa.Uuid(), nullable=True),
        sa.Column("template_instance_id", sa.Uuid(), nullable=True),
        sa.Column("template_instance_name", sa.String(255), nullable=True),
        sa.Column("audio_id", sa.Uuid(), nullable=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("status", STATUS, nullable=False),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("progress", sa.Integer(), nullable=False),
        sa.Column("frames_done", sa.Integer(), nullable=False),
        sa.Column("frames_total", sa.Integer(), nullable=False),
        sa.Column("output_path", sa.String(512), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("encoder_used", sa.String(64), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("failure_code", sa.String(64), nullable=True),
        sa.Column("reserved_storage_bytes", sa.BigInteger(), nullable=False),
        sa.Column("reserved_render_ms", sa.BigInteger(), nullable=False),
        sa.Column("render_time_ms", sa.BigInteger(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(128), nullable=True),
        _ts("lease_expires_at", nullable=True),
        sa.Column("webhook_url", sa.String(2048), nullable=True),
        _ts("webhook_delivered_at", nullable=True),
        _ts("started_at", nullable=True),
        _ts("completed_at", nullable=True),
        _ts("created_at"),
        _fk("renders", "user_id", "users"),
        _fk("renders", "template_id", "templates", "SET NULL"),
        _fk("renders", "campaign_id", "campaigns", "SET NULL"),
        _fk("renders", "template_instance_id", "template_instances", "SET NULL"),
        _fk("renders", "audio_id", "audios", "SET NULL"),
        sa.PrimaryKeyConstraint("id", name="pk_renders"),
    )
    op.create_index("ix_renders_template_id", "renders", ["template_id"])
    op.create_index("ix_renders_audio_id", "renders", ["audio_id"])
    op.create_index("ix_renders_user_id_status", "renders", ["user_id", "status"])
    op.create_index("ix_renders_status_lease_expires_at", "renders", ["status", "lease_expires_at"])


def downgrade() -> None:
    op.drop_table("renders")
    op.drop_table("campaign_audio_groups")
    op.drop_table("template_instances")
    op.drop_table("campaigns")
