"""Alembic migrations of the leaderboard schema (see storage/migrate.py)."""
