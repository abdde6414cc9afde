"""Alembic environment of the results database.

``harness.store.connect.prepare_schema`` runs migrations programmatically: it passes an
open connection, already inside its ``BEGIN IMMEDIATE`` (SQLite) or advisory-locked
(PostgreSQL) transaction, as ``config.attributes["connection"]``, so the version check and
every migration commit together or not at all.

Without that attribute (the ``alembic`` command line, e.g. ``alembic revision
--autogenerate`` while writing a new migration) the database comes from the
``sqlalchemy.url`` option, else ``$BENCH_DB``, else ``sqlite:///results/bench.db``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection
from sqlalchemy.engine import make_url

from harness.store.connect import make_engine, resolve_url
from harness.store.schema import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    configured = None
    if config.file_config.has_section(config.config_ini_section):  # no section: pyproject only
        configured = config.get_main_option("sqlalchemy.url")
    return resolve_url(configured or None)


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things: batch mode recreates the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


def run_migrations_offline() -> None:
    """Emit the migration SQL to stdout (``alembic upgrade head --sql``)."""
    url = make_url(_url())
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=url.get_backend_name() == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Migrate through the connection given by the store, or one opened here."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(make_url(_url()), read_only=False)
    try:
        with engine.begin() as own_connection:
            _configure(own_connection)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
