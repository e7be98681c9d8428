"""SQLModel tables, the engine factory and the queries behind the leaderboard."""

from storage.engine import DEFAULT_DB_URL, open_database, resolve_db_url
from storage.tables import Checkpoint, Match, MatchEvent, SchemaInfo

__all__ = [
    "DEFAULT_DB_URL",
    "open_database",
    "resolve_db_url",
    "Checkpoint",
    "Match",
    "MatchEvent",
    "SchemaInfo",
]
