"""``bench dashboard``: starts the Streamlit app on 127.0.0.1 and waits for it to stop."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy.engine import make_url

from harness.errors import BenchError
from harness.store.connect import ENV_VAR

APP = Path(__file__).with_name("app.py")
HOST = "127.0.0.1"


def streamlit_command(port: int) -> list[str]:
    """The ``streamlit run`` command line: loopback only, headless, no usage statistics.

    Args:
        port: TCP port to listen on.
    """
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP),
        "--server.address",
        HOST,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--server.fileWatcherType",
        "none",
        "--global.developmentMode",
        "false",
    ]


def dashboard_env(db_url: str) -> dict[str, str]:
    """The environment of the Streamlit process: ours plus the database URL in ``BENCH_DB``."""
    return {**os.environ, ENV_VAR: db_url}


def run_dashboard(db_url: str, port: int = 8501) -> int:
    """Runs the dashboard until it stops (Ctrl+C) and returns its exit code.

    Args:
        db_url: SQLAlchemy URL of the results database; the app opens it read-only.
        port: TCP port on 127.0.0.1.

    Returns:
        Streamlit's exit code; 0 after Ctrl+C.

    Raises:
        BenchError: Streamlit is not installed.
    """
    if importlib.util.find_spec("streamlit") is None:
        raise BenchError(
            "bench dashboard: streamlit is not installed. Run: pip install 'bench[dashboard]'"
        )
    shown = make_url(db_url).render_as_string(hide_password=True)
    print(f"bench dashboard: http://{HOST}:{port}  (database {shown}, read-only; Ctrl+C stops)")
    sys.stdout.flush()
    process = subprocess.Popen(streamlit_command(port), env=dashboard_env(db_url))
    try:
        return process.wait()
    except KeyboardInterrupt:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        return 0
