"""A private, throwaway PostgreSQL cluster for tests and benchmarks (not for results).

:func:`private_cluster` runs ``initdb`` and ``pg_ctl`` from the installed PostgreSQL server
(``initdb`` on PATH, else the newest ``/usr/lib/postgresql/*/bin``) in a temporary folder,
listening on a free loopback port, and removes it afterwards. Connections over TCP need the
password :data:`PASSWORD` (``scram-sha-256``, as a real server would ask), so a wrong one
is refused as it would be in production; the local socket trusts its user.
``initdb`` refuses to run as root, so as root (CI) the cluster runs as the ``postgres`` user
through ``runuser``. :func:`create_database` adds an empty database to it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: The ``postgres`` user's password on a private cluster.
PASSWORD = "bench"


class ClusterUnavailable(Exception):
    """No cluster can be started here; the message says why (tests skip with it)."""


def server_bindir() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl``, or None when no server is installed."""
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), reverse=True)
    return candidates[0].parent if candidates else None


def _as_user() -> tuple[list[str], tuple[int, int] | None]:
    """The command prefix that runs the server binaries, and the owner of its folder."""
    if os.geteuid() != 0:
        return [], None
    if shutil.which("runuser") is None:
        raise ClusterUnavailable("running as root without runuser: cannot start PostgreSQL")
    import pwd

    try:
        owner = pwd.getpwnam("postgres")
    except KeyError as exc:
        raise ClusterUnavailable("running as root and there is no 'postgres' user") from exc
    return ["runuser", "-u", "postgres", "--"], (owner.pw_uid, owner.pw_gid)


@contextmanager
def private_cluster() -> Iterator[str]:
    """Start a cluster; yield its URL without a database name.

    The URL is ``postgresql+psycopg2://postgres:bench@127.0.0.1:PORT/``; the cluster stops and
    its folder is removed when the context ends.

    Raises:
        ClusterUnavailable: The server binaries are missing or the cluster did not start.
    """
    bindir = server_bindir()
    if bindir is None:
        raise ClusterUnavailable("PostgreSQL server binaries (initdb, pg_ctl) not found")
    as_user, owner = _as_user()
    root = Path(tempfile.mkdtemp(prefix="bench-pg-"))  # not under pytest's 0700 tmp dirs
    if owner is not None:
        os.chown(root, *owner)
    data = root / "data"
    password = root / "password"
    password.write_text(PASSWORD + "\n")
    if owner is not None:
        os.chown(password, *owner)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    def pg(*args: str) -> None:
        subprocess.run([*as_user, *args], check=True, capture_output=True, timeout=120)

    try:
        pg(
            str(bindir / "initdb"),
            *("-D", str(data), "-U", "postgres", f"--pwfile={password}"),
            *("--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync"),
        )
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
        pg(
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            options,
            "-l",
            str(root / "log"),
            "-w",
            "start",
        )
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(root, ignore_errors=True)
        detail = exc.stderr.decode(errors="replace")[-300:]
        raise ClusterUnavailable(f"could not start a PostgreSQL cluster: {detail}") from exc
    try:
        yield f"postgresql+psycopg2://postgres:{PASSWORD}@127.0.0.1:{port}/"
    finally:
        pg(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


def create_database(server: str, name: str) -> str:
    """Create the empty database ``name`` on ``server`` (a URL ending in ``/``); its URL."""
    from sqlalchemy import create_engine, text

    engine = create_engine(f"{server}postgres", isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return f"{server}{name}"
