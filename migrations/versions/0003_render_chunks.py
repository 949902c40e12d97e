"""Render chunks: GOP-aligned slices of long renders, rendered in parallel (SPEC §7).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "render_chunks",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("render_id", sa.Uuid(), nullable=False),
        sa.Column("chunk_index", sa.Integer(), nullable=False),
        sa.Column("f_start", sa.Integer(), nullable=False),
        sa.Column("f_end", sa.Integer(), nullable=False),
        sa.Column("frames_total", sa.Integer(), nullable=False),
        sa.Column("frames_done", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(128), nullable=True),
        _ts("lease_expires_at", nullable=True),
        sa.Column("output_path", sa.String(512), nullable=True),
        sa.Column("encoder_used", sa.String(64), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        _ts("queued_at", nullable=True),
        _ts("started_at", nullable=True),
        _ts("completed_at", nullable=True),
        _ts("created_at"),
        sa.ForeignKeyConstraint(
            ["render_id"],
            ["renders.id"],
            name="fk_render_chunks_render_id_renders",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_render_chunks"),
        sa.UniqueConstraint("render_id", "chunk_index", name="uq_render_chunks_render_id"),
    )
    op.create_index(
        "ix_render_chunks_status_lease_expires_at", "render_chunks", ["status", "lease_expires_at"]
    )


def downgrade() -> None:
    op.drop_table("render_chunks")
