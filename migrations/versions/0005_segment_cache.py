"""Segment cache: how many output frames of a render (or chunk) came from the span cache.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for table in ("renders", "render_chunks"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(
                sa.Column("cached_frames", sa.Integer(), nullable=False, server_default="0")
            )


def downgrade() -> None:
    for table in ("renders", "render_chunks"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("cached_frames")
