"""The Streamlit app behind ``bench dashboard``.

Run it through ``bench dashboard [--db URL]`` (or ``streamlit run dashboard/app.py`` with
``BENCH_DB`` set). Pages are chosen in the sidebar and by the ``page`` query parameter, so
``http://127.0.0.1:8501/?page=frontier`` opens the Pareto frontier directly.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import streamlit as st
from sqlalchemy.engine import make_url

from dashboard.data import Snapshot, describe_run
from dashboard.queries import EMPTY_DB_HINT
from dashboard.views import common, compare, detail, estimate, frontier, leaderboard
from harness.errors import BenchError

PAGES: dict[str, ModuleType] = {
    "leaderboard": leaderboard,
    "frontier": frontier,
    "compare": compare,
    "estimate": estimate,
    "detail": detail,
}
LATEST = "latest"


def choose_page() -> Callable[[Snapshot], None]:
    """The sidebar page picker, kept in sync with the ``?page=`` query parameter."""
    names = list(PAGES)
    requested = st.query_params.get("page", names[0])
    if "page" not in st.session_state:
        st.session_state["page"] = requested if requested in PAGES else names[0]
    page = (
        st.sidebar.radio("Page", names, key="page", format_func=lambda n: PAGES[n].TITLE)
        or names[0]
    )
    if st.query_params.get("page") != page:
        st.query_params["page"] = page
    render: Callable[[Snapshot], None] = PAGES[page].render
    return render


def choose_source(url: str) -> Snapshot | None:
    """Sidebar filters over the whole database (run, suite); loads the matching cells."""
    everything = common.cached_snapshot(url, None, None)
    if everything.empty:
        return everything
    runs = everything.runs
    labels = {LATEST: "Latest result of every cell"}
    labels.update({str(r["id"]): describe_run(r) for _, r in runs.iloc[::-1].iterrows()})
    source = common.pick(
        "Results", list(labels), key="source", container=st.sidebar, format_func=labels.get
    )
    suites = ["all", *sorted(runs["suite_name"].unique())]
    suite = common.pick("Suite", suites, key="suite", container=st.sidebar)
    run_id = None if source == LATEST else int(source)
    chosen = None if suite == "all" else suite
    if run_id is None and chosen is None:
        return everything
    return common.cached_snapshot(url, run_id, chosen)


def main() -> None:
    """Entry point of the Streamlit script."""
    st.set_page_config(page_title="bench dashboard", page_icon="📊", layout="wide")
    url = common.database_url()
    shown_url = make_url(url).render_as_string(hide_password=True)
    render = choose_page()
    st.sidebar.caption(f"Database (read-only): `{shown_url}`")
    if st.sidebar.button("Reload data", key="reload"):
        st.cache_data.clear()
    try:
        snapshot = choose_source(url)
    except BenchError as exc:
        st.error(str(exc))
        st.info(f"To create and fill a results database, run `{EMPTY_DB_HINT}`.")
        return
    if snapshot is None or snapshot.empty:
        common.empty_message(shown_url)
        return
    render(snapshot)


# Streamlit runs this file as the module ``__main__`` (``streamlit run`` and AppTest alike);
# importing it (tests, tools) renders nothing.
if __name__ == "__main__":
    main()
