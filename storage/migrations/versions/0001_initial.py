"""The schema before migrations existed (schema_info version 1).

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "schema_info",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("version", sa.Integer(), nullable=False),
    )
    op.create_table(
        "matches",
        sa.Column("id", sa.Integer(), primary_key=True),
        *(sa.Column(name, sa.String(), nullable=False) for name in (
            "batch_id", "status", "defender", "attacker", "dataset", "pool", "label_mode")),
        sa.Column("query_budget", sa.Integer(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("device", sa.String(), nullable=False),
        *(sa.Column(name, sa.String(), nullable=False) for name in ("config_json", "provenance_json", "details_json")),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("phase", sa.String(), nullable=False),
        sa.Column("progress_done", sa.Integer(), nullable=False),
        sa.Column("progress_total", sa.Integer(), nullable=False),
        *(sa.Column(name, sa.Float(), nullable=True) for name in (
            "victim_accuracy", "defender_accuracy", "clone_accuracy", "best_clone_accuracy", "fidelity_served",
            "fidelity_victim")),
        sa.Column("queries_used", sa.Integer(), nullable=False),
        *(sa.Column(name, sa.Float(), nullable=True) for name in (
            "serving_seconds_per_query", "queries_per_second", "wall_seconds")),
        sa.Column("error", sa.String(), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("host", sa.String(), nullable=True),
    )  # fmt: skip
    for column in ("attacker", "label_mode", "dataset", "status", "defender", "batch_id"):
        op.create_index(f"ix_matches_{column}", "matches", [column])
    op.create_table(
        "checkpoints",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("match_id", sa.Integer(), sa.ForeignKey("matches.id", ondelete="CASCADE"), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("queries_used", sa.Integer(), nullable=False),
        *(sa.Column(name, sa.Float(), nullable=False) for name in (
            "clone_accuracy", "best_clone_accuracy", "fidelity_served", "fidelity_victim", "wall_seconds",
            "serving_seconds")),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )  # fmt: skip
    op.create_index("ix_checkpoints_match_id", "checkpoints", ["match_id"])
    op.create_table(
        "match_events",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("match_id", sa.Integer(), sa.ForeignKey("matches.id", ondelete="CASCADE"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("message", sa.String(), nullable=False),
    )
    op.create_index("ix_match_events_match_id", "match_events", ["match_id"])


def downgrade() -> None:
    for table in ("match_events", "checkpoints", "matches", "schema_info"):
        op.drop_table(table)
