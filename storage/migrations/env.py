"""Alembic environment: migrations run on the connection `storage.engine` hands over.

Run through `storage.migrate` (every `arena` command upgrades an older database in place);
there is no alembic.ini: the arena is the only client of its schema.
"""

from alembic import context
from sqlmodel import SQLModel

import storage.tables  # noqa: F401  (the tables register on SQLModel.metadata)

connection = context.config.attributes["connection"]
# Batch mode: SQLite has little ALTER TABLE, so column changes copy the table.
context.configure(connection=connection, target_metadata=SQLModel.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
