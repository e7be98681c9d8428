"""Liveness of running matches: a heartbeat, and retries after a lost worker.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Old rows: no heartbeat, one retry, no attempt yet (the reaper then judges a `running`
    # match of an old worker by its started_at).
    with op.batch_alter_table("matches") as batch:
        batch.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("retries", sa.Integer(), nullable=False, server_default="1"))
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("matches") as batch:
        for column in ("attempts", "retries", "heartbeat_at"):
            batch.drop_column(column)
