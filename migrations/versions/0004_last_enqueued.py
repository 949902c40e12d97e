"""When each render and library job was last sent to the broker (``last_enqueued_at``), so
the sweeper can re-send work whose message was lost (a broker restarted without
persistence, a message dead-lettered while the database was down).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("renders", "template_jobs", "audio_jobs", "assets")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("last_enqueued_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("last_enqueued_at")
