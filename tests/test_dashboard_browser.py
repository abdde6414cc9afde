"""End to end: ``dashboard.launch.run_dashboard`` serves every page to headless Chromium.

Starts the real Streamlit server on a free loopback port in its own process group, drives
Debian's ``chromium`` through ``chromium-driver`` (Selenium), waits for each page's content
instead of sleeping, and saves a screenshot per page. ``BENCH_UPDATE_SCREENSHOTS=1`` makes
the real-database test copy them to ``docs/img/`` (how the README's pictures are made).

The default database is filled through ``Store.record`` with realistic values (fast); the
test marked ``slow`` fills it by running ``bench run suites/smoke.yaml`` instead.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from dashboard_db import fill_demo_db
from headless_chromium import CHROMEDRIVER, CHROMIUM, headless_flags

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

ROOT = Path(__file__).resolve().parent.parent
DOCS_IMG = ROOT / "docs" / "img"
PLACEHOLDER_PNG_BYTES = 20_000  # an unrendered Streamlit page is a ~8 kB skeleton
WAIT_S = 45

pytestmark = [
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="/usr/bin/chromium is not installed (apt-get install chromium chromium-driver)",
    ),
    pytest.mark.skipif(
        not CHROMEDRIVER.exists(),
        reason="/usr/bin/chromedriver is not installed (apt-get install chromium-driver)",
    ),
]
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

# page -> (title, CSS selector that exists once its main content is drawn)
PAGES = {
    "leaderboard": ("Leaderboard", "[data-testid='stDataFrame']"),
    "frontier": (
        "Pareto frontier",
        "[data-testid='stVegaLiteChart'] canvas, [data-testid='stVegaLiteChart'] svg.marks",
    ),
    # One run has nothing to compare: the page then shows a message instead of a table.
    "compare": ("Compare", "[data-testid='stDataFrame'], [data-testid='stAlert']"),
    "detail": ("Run and cell detail", "[data-testid='stDataFrame']"),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve(db_url: str) -> Iterator[str]:
    """Runs ``run_dashboard(db_url, port)`` in a subprocess; yields the base URL; kills it."""
    port = free_port()
    code = (
        "import sys\nfrom dashboard.launch import run_dashboard\n"
        f"sys.exit(run_dashboard({db_url!r}, {port}))\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: streamlit's children die with it
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2) as reply:
                    if reply.read() == b"ok":
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                os.killpg(process.pid, signal.SIGKILL)
                output = process.stdout.read().decode() if process.stdout else ""
                pytest.fail(f"dashboard did not start on {base}: {output[-2000:]}")
            time.sleep(0.3)
        yield base
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if process.stdout:
            process.stdout.close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in [*headless_flags(tmp_path / "chromium-profile"), "--window-size=1400,1000"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def visit_every_page(base: str, driver: WebDriver, out: Path) -> dict[str, str]:
    """Opens each page, waits for its content, saves ``out/<page>.png``; returns the DOMs."""
    doms = {}
    for page, (title, content) in PAGES.items():
        driver.get(f"{base}/?page={page}")
        wait = WebDriverWait(driver, WAIT_S)
        wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, "h1"), title))
        wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, content)))
        # Streamlit shows a "Running…" status widget until the script run ends.
        wait.until(
            ec.invisibility_of_element_located((By.CSS_SELECTOR, "[data-testid='stStatusWidget']"))
        )
        time.sleep(1.0)  # let Vega finish its paint transition; not an assertion on time
        png = out / f"{page}.png"
        assert driver.save_screenshot(str(png)), page
        assert png.stat().st_size > PLACEHOLDER_PNG_BYTES, (page, png.stat().st_size)
        doms[page] = driver.page_source
    return doms


def test_every_page_renders_in_chromium(browser: WebDriver, tmp_path: Path) -> None:
    db_url = fill_demo_db(f"sqlite:///{tmp_path / 'bench.db'}").url
    with serve(db_url) as base:
        doms = visit_every_page(base, browser, tmp_path)
    frontier = doms["frontier"]
    assert frontier.count('data-testid="stVegaLiteChart"') == 2  # memory and TPOT vs accuracy
    assert "stacks on the front" in frontier
    assert "weight-quant(bits=4)+kv-quant(bits=2)" in doms["leaderboard"]
    assert "candidate / base" in doms["compare"]  # runs 2 and 3 share their cells
    assert "needs CUDA" in doms["detail"]


@pytest.mark.slow
def test_dashboard_on_a_real_database(tmp_path: Path, browser: WebDriver) -> None:
    """Renders a database of real measurements: the smoke suite's (minutes on 2 cores), or
    the one named by ``BENCH_SCREENSHOT_DB`` (e.g. the one ``make run`` filled).

    ``BENCH_UPDATE_SCREENSHOTS=1`` copies the screenshots to ``docs/img/``: the README's
    pictures show real results, never the demo database.
    """
    db_url = os.environ.get("BENCH_SCREENSHOT_DB") or f"sqlite:///{tmp_path / 'smoke.db'}"
    if "BENCH_SCREENSHOT_DB" not in os.environ:
        bench = shutil.which("bench", path=str(Path(sys.executable).parent)) or "bench"
        run = subprocess.run(
            [bench, "run", str(ROOT / "suites" / "smoke.yaml"), "--db", db_url],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    with serve(db_url) as base:
        doms = visit_every_page(base, browser, tmp_path)
    assert "baseline" in doms["leaderboard"] and "precision" in doms["leaderboard"]
    assert "Δ%" in doms["leaderboard"]
    assert 'data-testid="stVegaLiteChart"' in doms["frontier"]
    if os.environ.get("BENCH_UPDATE_SCREENSHOTS") == "1":
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        for page in PAGES:
            shutil.copyfile(tmp_path / f"{page}.png", DOCS_IMG / f"dashboard-{page}.png")
