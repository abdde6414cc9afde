"""Streamlit helpers shared by the pages: loading with a cache, pickers, table styling."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import pandas as pd
import streamlit as st

from dashboard.charts import display_unit
from dashboard.data import Snapshot, load_snapshot
from dashboard.queries import DELTA_SUFFIX, EMPTY_DB_HINT, delta_is_better
from harness.results import MetricDef
from harness.store.connect import DEFAULT_URL, ENV_VAR

T = TypeVar("T")
CACHE_TTL_S = 15  # results of a running suite show up within this many seconds
BETTER_STYLE = "color: #1a7f37"
WORSE_STYLE = "color: #cf222e"


def database_url() -> str:
    """The database the dashboard shows: ``$BENCH_DB`` (set by ``bench dashboard``)."""
    return os.environ.get(ENV_VAR) or DEFAULT_URL


@st.cache_data(ttl=CACHE_TTL_S, show_spinner="Reading results…")
def cached_snapshot(url: str, run_id: int | None, suite: str | None) -> Snapshot:
    """:func:`dashboard.data.load_snapshot`, cached for a few seconds per argument set."""
    return load_snapshot(url, run_id=run_id, suite=suite)


def empty_message(url: str) -> None:
    """Says that the database holds no results yet and which command fills it."""
    st.info(
        f"No results in `{url}` yet. Fill it with `{EMPTY_DB_HINT}` "
        "(add `--db URL` to use another database), then reload this page."
    )


#: Characters that make Streamlit's markdown more than text inside a line: emphasis, code,
#: links and images (``[``), HTML (``<``), math (``$``), ``:colour[...]`` directives
#: (``[`` again), tables, strikethrough, headings; a backslash before each makes it literal.
MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>$~|#])")


def plain(text: object) -> str:
    """``text`` (a suite, model, stack name or reason, all user-supplied) escaped for
    Streamlit's markdown, so it shows as written: no link, image, HTML or formatting."""
    return MARKDOWN_SPECIAL.sub(r"\\\1", str(text))


def pick(
    label: str,
    options: Sequence[T],
    default: T | None = None,
    key: str | None = None,
    container: Any = st,
    format_func: Any = str,
) -> T:
    """A selectbox whose initial choice is ``default`` when it is one of ``options``.

    The choice is kept in session state under ``key`` while it stays valid; a stale choice
    (the data changed) falls back to the default.
    """
    options = list(options)
    if key is not None and key in st.session_state and st.session_state[key] not in options:
        del st.session_state[key]
    index = options.index(default) if default is not None and default in options else 0
    choice = container.selectbox(label, options, index=index, key=key, format_func=format_func)
    return choice if choice is not None else options[0]


def pick_many(
    label: str,
    options: Sequence[T],
    default: Sequence[T],
    key: str,
    container: Any = st,
    format_func: Any = str,
) -> list[T]:
    """A multiselect starting at ``default``; a stale choice (the data changed) falls back
    to it, like :func:`pick`."""
    options = list(options)
    if key in st.session_state and not set(st.session_state[key]) <= set(options):
        del st.session_state[key]
    initial = [d for d in default if d in options]
    chosen = container.multiselect(
        label, options, default=initial, key=key, format_func=format_func
    )
    return list(chosen)


def display_frame(
    frame: pd.DataFrame, defs: Mapping[str, MetricDef], metrics: Sequence[str]
) -> pd.DataFrame:
    """Metric columns converted to display units (MiB, ms) with the unit in the header."""
    out = frame.copy()
    renames = {}
    for metric in metrics:
        if metric not in out.columns or metric not in defs:
            continue
        shown, factor = display_unit(defs[metric].unit)
        if factor != 1.0:
            out[metric] = out[metric] * factor
            renames[metric] = f"{metric} ({shown})"
    return out.rename(columns=renames)


def style_deltas(frame: pd.DataFrame, defs: Mapping[str, MetricDef]) -> Any:
    """A Styler: delta columns green when better and red when worse, by metric direction."""

    def colour(metric: str) -> Any:
        def inner(value: Any) -> str:
            try:
                verdict = delta_is_better(float(value), metric, defs)
            except (TypeError, ValueError):
                return ""
            return {True: BETTER_STYLE, False: WORSE_STYLE}.get(verdict, "")  # type: ignore[arg-type]

        return inner

    styler = frame.style
    for column in frame.columns:
        if column.endswith(DELTA_SUFFIX):
            styler = styler.map(colour(column[: -len(DELTA_SUFFIX)]), subset=[column])
    return styler


def number_columns(frame: pd.DataFrame) -> dict[str, Any]:
    """Streamlit column formats: deltas as ``+12.3%``, other numbers with 4 significant digits."""
    config: dict[str, Any] = {}
    for column in frame.columns:
        if column.endswith(DELTA_SUFFIX) or column == "change_%":
            config[column] = st.column_config.NumberColumn(column, format="%+.1f%%")
        elif column not in ("run_id", "n") and pd.api.types.is_float_dtype(frame[column]):
            config[column] = st.column_config.NumberColumn(column, format="%.4g")
    return config


def verdict_style(value: Any) -> str:
    """Colour for a ``better`` column: True green, False red."""
    if value is True:
        return BETTER_STYLE
    if value is False:
        return WORSE_STYLE
    return ""
