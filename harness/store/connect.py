"""Opening the results database: URL resolution, engines, schema checks and migrations.

SQLite gets WAL journaling, a 30 s busy timeout and ``BEGIN IMMEDIATE`` for every write
transaction (pysqlite's own transaction handling is switched off and SQLAlchemy's ``begin``
event emits the BEGIN), so concurrent writers queue instead of failing with "database is
locked". Alembic migrations run inside one such transaction when a store opens for
writing; nothing is written when the database turns out to be foreign, newer or garbage.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Collection
from pathlib import Path
from typing import Any
from urllib.parse import quote

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from harness.errors import StoreError

DEFAULT_URL = "sqlite:///results/bench.db"
ENV_VAR = "BENCH_DB"
FILL_COMMAND = "bench run suites/smoke.yaml"
MIGRATIONS_DIR = Path(__file__).parent / "migrations"
BUSY_TIMEOUT_S = 30.0
SQLITE_MAGIC = b"SQLite format 3\x00"
VERSION_TABLE = "alembic_version"
# Execution option that marks a connection as reading only: its transactions start with
# a deferred BEGIN instead of BEGIN IMMEDIATE, so readers never queue behind writers.
READ_OPTION = "bench_read"
# Key of the PostgreSQL advisory lock that serializes concurrent migrations.
_PG_MIGRATION_LOCK = 0x62656E6368  # "bench"


def resolve_url(url: str | None) -> str:
    """Return the database URL to use.

    Args:
        url: A SQLAlchemy URL, a path to a SQLite file, or None for ``$BENCH_DB`` and
            then ``sqlite:///results/bench.db`` (relative to the working directory).

    Returns:
        A SQLAlchemy URL string; a bare path becomes ``sqlite:///<path>``.
    """
    if url is None:
        url = os.environ.get(ENV_VAR) or DEFAULT_URL
    if "://" not in url:
        return f"sqlite:///{url}"
    return url


def display_url(url: URL) -> str:
    """The URL as it may appear in messages: the password hidden."""
    return url.render_as_string(hide_password=True)


def sqlite_file(url: URL) -> Path | None:
    """The file of a SQLite URL, or None for other backends and in-memory databases."""
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return None
    return Path(database)


def alembic_config(connection: Connection | None = None) -> Config:
    """A programmatic Alembic configuration (there is no alembic.ini).

    Args:
        connection: The connection ``env.py`` migrates through, inside its transaction.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def make_engine(url: URL, *, read_only: bool) -> Engine:
    """Create the engine, with the SQLite settings described in the module docstring.

    Args:
        url: The parsed database URL.
        read_only: Open SQLite files with ``mode=ro`` and PostgreSQL sessions read-only.
    """
    path = sqlite_file(url)
    backend = url.get_backend_name()
    if backend != "sqlite":
        # Other backends enforce read-only in Store; PostgreSQL also in the session.
        options = {"postgresql_readonly": True} if read_only and backend == "postgresql" else {}
        return create_engine(url, pool_pre_ping=True, execution_options=options)
    if read_only and path is not None:
        uri = _read_only_uri(path)
        engine = create_engine(
            url,
            creator=lambda: sqlite3.connect(
                uri, uri=True, timeout=BUSY_TIMEOUT_S, check_same_thread=False
            ),
        )
    else:
        engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Switch off pysqlite's transaction handling: the "begin" listener emits BEGIN.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        cursor.execute("PRAGMA foreign_keys = ON")
        if not read_only and path is not None:
            cursor.execute("PRAGMA journal_mode = WAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        reading = read_only or connection.get_execution_options().get(READ_OPTION, False)
        connection.exec_driver_sql("BEGIN" if reading else "BEGIN IMMEDIATE")

    return engine


def known_revisions() -> tuple[set[str], str]:
    """All revisions this code ships and the head revision."""
    script = ScriptDirectory.from_config(alembic_config())
    head = script.get_current_head()
    assert head is not None, "harness/store/migrations/versions has no revision"
    return {rev.revision for rev in script.walk_revisions()}, head


def check_schema(
    where: str, revisions: Collection[str], tables: Collection[str], *, read_only: bool
) -> bool:
    """Refuse databases this code must not touch; say whether a migration is due.

    Args:
        where: The file or URL, for messages.
        revisions: The database's Alembic revisions (empty when it has none).
        tables: The database's table names.
        read_only: Whether the caller may migrate.

    Returns:
        True when the schema is behind this code's head (or absent) and must be migrated.

    Raises:
        StoreError: The database is newer, foreign, empty or outdated for a reader.
    """
    known, head = known_revisions()
    unknown = sorted(set(revisions) - known)
    if unknown:
        raise StoreError(
            f"{where}: this database was written by a newer bench (schema revision "
            f"{', '.join(unknown)}; this bench knows up to {head}). Upgrade bench with "
            "'pip install -U bench', or pass --db with another file."
        )
    user_tables = sorted(set(tables) - {VERSION_TABLE})
    if not revisions and user_tables:
        shown = ", ".join(user_tables[:5]) + (", ..." if len(user_tables) > 5 else "")
        raise StoreError(
            f"{where}: not a bench results database (it holds tables {shown} and no bench "
            "schema version). Pass --db with another file."
        )
    if read_only and not revisions:
        raise StoreError(
            f"{where}: no results yet. Run '{FILL_COMMAND}' to fill it, "
            "or pass --db with another file."
        )
    behind = set(revisions) != {head}
    if read_only and behind:
        raise StoreError(
            f"{where}: the database schema ({', '.join(sorted(revisions))}) is older than "
            f"this bench's ({head}). Open it once for writing (e.g. '{FILL_COMMAND}') to "
            "upgrade it, or pass --db with another file."
        )
    return behind


def probe_sqlite_file(path: Path, *, read_only: bool) -> None:
    """Check an existing SQLite file without writing to it (not even its journal mode).

    Raises:
        StoreError: The path is unreadable, not a SQLite database, or refused by
            :func:`check_schema`.
    """
    fix = "Pass --db with another file."
    if not path.is_file():
        raise StoreError(f"{path}: not a file. {fix}")
    try:
        with path.open("rb") as file:
            header = file.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise StoreError(
            f"{path}: cannot read the results database ({exc.strerror}). {fix}"
        ) from exc
    if not header:
        if read_only:
            raise StoreError(
                f"{path}: no results yet. Run '{FILL_COMMAND}' to fill it, "
                "or pass --db with another file."
            )
        return  # an empty file is an empty database
    if header != SQLITE_MAGIC:
        raise StoreError(f"{path}: not a SQLite database. {fix}")
    uri = _read_only_uri(path)
    try:
        connection = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S)
        try:
            tables = [
                row[0]
                for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
            ]
            revisions = []
            if VERSION_TABLE in tables:
                revisions = [
                    row[0] for row in connection.execute(f"SELECT version_num FROM {VERSION_TABLE}")
                ]
            # A writer would add rows to a damaged file before tripping over the damage:
            # check every page first (linear in the file's size, read-only).
            problems = [] if read_only else _quick_check(connection)
        finally:
            connection.close()
    except sqlite3.Error as exc:
        raise StoreError(
            f"{path}: not a readable SQLite database ({exc}). {fix_for(exc, str(path), fix)}"
        ) from exc
    if problems:
        raise StoreError(
            f"{path}: the results database is damaged ({problems[0]}); nothing was written. "
            f"Restore it from a copy (or salvage it with 'sqlite3 {path} .recover'), or pass "
            "--db with another file."
        )
    check_schema(str(path), revisions, tables, read_only=read_only)
    reason = None if read_only else read_only_reason(path)
    if reason is not None:
        raise StoreError(
            f"{path}: cannot write the results database: {reason}. Make it writable, or "
            "pass --db with another file ('bench results' and the dashboard can still read it)."
        )


def _quick_check(connection: sqlite3.Connection) -> list[str]:
    """SQLite's ``quick_check`` of every page: the problems found (none: empty list)."""
    rows = [str(row[0]) for row in connection.execute("PRAGMA quick_check(1)")]
    if rows == ["ok"]:
        return []
    lines = [line.strip() for row in rows for line in row.splitlines()]
    return [line for line in lines if line and not line.startswith("***")] or ["quick_check"]


def prepare_schema(engine: Engine, where: str, *, read_only: bool) -> None:
    """Check the schema and, when writing, migrate it to head in one transaction.

    On PostgreSQL an advisory lock serializes concurrent openers; on SQLite
    ``BEGIN IMMEDIATE`` does. The revision is read after the lock is held, so a second
    opener sees the first one's migration and does nothing.

    Raises:
        StoreError: See :func:`check_schema`.
    """
    with engine.connect() as connection:
        if read_only:
            connection.execution_options(**{READ_OPTION: True})
        with connection.begin():
            if not read_only and connection.dialect.name == "postgresql":
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK}
                )
            revisions = MigrationContext.configure(connection).get_current_heads()
            tables = inspect(connection).get_table_names()
            if check_schema(where, revisions, tables, read_only=read_only):
                command.upgrade(alembic_config(connection), "head")


def open_engine(url: str, *, read_only: bool) -> tuple[Engine, str]:
    """Resolve, check and connect; migrate unless ``read_only``.

    Returns:
        The ready engine, and the database as messages name it: the SQLite file, else
        the URL with its password hidden.

    Raises:
        StoreError: The URL is malformed or cannot connect, the file is missing (when
            reading), not a database, foreign or newer. The message names the path or URL
            and the fix.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StoreError(
            f"{url}: not a database URL ({exc}). Pass --db with a file path, "
            "sqlite:///path/to/file.db or postgresql://user@host/db."
        ) from exc
    where = display_url(parsed)
    path = sqlite_file(parsed)
    if path is not None:
        where = str(path)
        if path.exists():
            probe_sqlite_file(path, read_only=read_only)
        elif read_only:
            raise StoreError(
                f"{path}: no results database here. Run '{FILL_COMMAND}' to fill it, "
                "or pass --db with another file."
            )
        else:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(
                    f"{path}: cannot create {path.parent} ({exc.strerror}). "
                    "Pass --db with another path."
                ) from exc
            reason = read_only_reason(path)
            if reason is not None:
                raise StoreError(
                    f"{path}: cannot create the results database: {reason}. "
                    "Pass --db with a path in a writable folder."
                )
    try:
        engine = make_engine(parsed, read_only=read_only)
    except (ArgumentError, ImportError) as exc:
        raise StoreError(
            f"{where}: no database driver for this URL ({exc}). Install it (PostgreSQL: "
            "pip install 'bench[postgres]'), or pass --db with another URL."
        ) from exc
    try:
        prepare_schema(engine, where, read_only=read_only)
    except StoreError:
        engine.dispose()
        raise
    except SQLAlchemyError as exc:
        engine.dispose()
        default = "Check that it is reachable, or pass --db with another path or URL."
        raise StoreError(
            f"{where}: cannot open the results database ({first_line(exc)}). "
            f"{fix_for(exc, where, default)}"
        ) from exc
    return engine, where


def fix_for(exc: BaseException, path: str, default: str) -> str:
    """The fix to name for a database error: specific for a full disk, a read-only file and
    a damaged file (SQLite's messages), ``default`` otherwise."""
    message = str(getattr(exc, "orig", None) or exc).lower()
    if "disk is full" in message or "no space left" in message:
        return (
            f"The disk that holds {path} is full and nothing of this write was stored: free "
            "space there, or pass --db with a path on another disk, then run again."
        )
    if "readonly" in message or "read-only" in message:
        return f"Make {path} and its folder writable, or pass --db with another file."
    if "password authentication failed" in message or "no password supplied" in message:
        return (
            "Check the user name and password in the URL (or PGPASSWORD, ~/.pgpass), "
            "or pass --db with another URL."
        )
    if "malformed" in message or "not a database" in message:
        return (
            f"{path} is damaged: restore it from a copy (or salvage it with "
            f"'sqlite3 {path} .recover'), or pass --db with another file."
        )
    return default


def read_only_reason(path: Path) -> str | None:
    """Why this process cannot write the SQLite file ``path`` and the journal files SQLite
    keeps beside it (``-wal``, ``-shm``), or None when it can."""
    folder = path.parent if str(path.parent) else Path(".")
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return "it is on a read-only file system"
    except OSError:
        return None  # the connection reports what is wrong
    if path.exists() and not os.access(path, os.W_OK):
        return "the file is read-only"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"its folder {folder} is read-only, and SQLite writes its journal there"
    return None


def _read_only_uri(path: Path) -> str:
    """The ``mode=ro`` URI of ``path``; on a read-only file system also ``immutable=1``,
    since SQLite cannot create the shared-memory file a WAL database needs there (and
    nothing can change the file)."""
    uri = f"file:{quote(str(path.resolve()))}?mode=ro"
    try:
        if os.statvfs(path.parent if str(path.parent) else ".").f_flag & os.ST_RDONLY:
            uri += "&immutable=1"
    except OSError:
        pass
    return uri


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (driver errors span many lines)."""
    inner = getattr(exc, "orig", None) or exc
    lines = str(inner).strip().splitlines()
    return lines[0] if lines else type(inner).__name__
