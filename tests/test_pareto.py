"""Tests for dashboard.pareto.pareto_front: exact masks on hand-checked tables, and a property
test against a brute-force reference over generated points."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dashboard.pareto import pareto_front


def mask(df: pd.DataFrame, minimize: list[str], maximize: list[str]) -> list[bool]:
    return pareto_front(df, minimize=minimize, maximize=maximize).tolist()


def test_two_objectives_min_memory_max_accuracy() -> None:
    df = pd.DataFrame(
        {
            "mem": [10.0, 6.0, 4.0, 7.0, 4.0],
            "acc": [0.90, 0.88, 0.70, 0.80, 0.60],
        }
    )
    # row 3 (7, .80) is beaten by row 1 (6, .88); row 4 (4, .60) by row 2 (4, .70).
    assert mask(df, ["mem"], ["acc"]) == [True, True, True, False, False]


def test_result_is_aligned_with_index() -> None:
    df = pd.DataFrame({"a": [1.0, 2.0]}, index=["x", "y"])
    front = pareto_front(df, minimize=["a"])
    assert front.index.tolist() == ["x", "y"]
    assert front.dtype == bool
    assert front.tolist() == [True, False]


def test_identical_points_are_all_on_front() -> None:
    df = pd.DataFrame({"lat": [1.0, 1.0, 2.0, 1.0], "mem": [5.0, 5.0, 1.0, 6.0]})
    assert mask(df, ["lat", "mem"], []) == [True, True, True, False]


def test_nan_rows_never_on_front_and_never_dominate() -> None:
    df = pd.DataFrame(
        {
            "lat": [math.nan, 2.0, 3.0, 1.0],
            "mem": [0.0, 2.0, 1.0, math.nan],
        }
    )
    # Rows 0 and 3 would dominate everything if NaN were ignored; they must not.
    assert mask(df, ["lat", "mem"], []) == [False, True, True, False]


def test_all_nan_gives_empty_front() -> None:
    df = pd.DataFrame({"a": [math.nan, math.nan], "b": [1.0, 2.0]})
    assert mask(df, ["a"], ["b"]) == [False, False]


def test_single_point_is_on_front() -> None:
    df = pd.DataFrame({"a": [3.0], "b": [4.0]})
    assert mask(df, ["a"], ["b"]) == [True]


def test_empty_frame() -> None:
    df = pd.DataFrame({"a": pd.Series([], dtype=float)})
    assert mask(df, ["a"], []) == []


def test_three_objectives() -> None:
    df = pd.DataFrame(
        {
            "mem": [1.0, 2.0, 3.0, 2.0, 1.0],
            "lat": [3.0, 2.0, 1.0, 2.0, 3.0],
            "acc": [0.5, 0.5, 0.5, 0.4, 0.6],
        }
    )
    # Row 3 is beaten by row 1 (same mem and lat, higher acc); row 0 by row 4.
    assert mask(df, ["mem", "lat"], ["acc"]) == [False, True, True, False, True]


def test_all_dominated_but_one() -> None:
    df = pd.DataFrame({"x": [1.0, 2.0, 5.0, 3.0, 4.0], "y": [9.0, 8.0, 10.0, 7.0, 6.0]})
    # Maximise both: row 2 (5, 10) is at least as good as every other row in both.
    assert mask(df, [], ["x", "y"]) == [False, False, True, False, False]


def test_direction_matters() -> None:
    df = pd.DataFrame({"x": [1.0, 2.0]})
    assert mask(df, ["x"], []) == [True, False]
    assert mask(df, [], ["x"]) == [False, True]


def test_integer_and_object_columns_are_coerced() -> None:
    df = pd.DataFrame({"x": [1, 2, 3], "y": pd.Series([3, None, 1], dtype=object)})
    assert mask(df, ["x", "y"], []) == [True, False, True]


@pytest.mark.parametrize(
    ("minimize", "maximize", "message"),
    [
        ([], [], "at least one column"),
        (["a"], ["a"], "named twice"),
        (["zzz"], [], "not in"),
    ],
)
def test_bad_arguments(minimize: list[str], maximize: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pareto_front(pd.DataFrame({"a": [1.0]}), minimize=minimize, maximize=maximize)


# --- property: pareto_front equals a brute-force reference -----------------------------------

# Values with ties, duplicates, NaN and infinities drawn often.
COORDINATES = st.sampled_from([0.0, 1.0, 2.0, math.nan, math.inf, -math.inf]) | st.floats(
    allow_nan=True, allow_infinity=True, width=32
)


def brute_force_front(rows: list[list[float]], senses: list[str]) -> list[bool]:
    """On the front: no NaN objective, and no other NaN-free row is no worse in every
    objective and strictly better in one (lower for 'min', higher for 'max')."""

    def cost(row: list[float]) -> list[float]:
        return [v if s == "min" else -v for v, s in zip(row, senses, strict=True)]

    valid = [not any(math.isnan(v) for v in row) for row in rows]
    front = []
    for i, row in enumerate(rows):
        if not valid[i]:
            front.append(False)
            continue
        mine = cost(row)
        dominated = False
        for j, other in enumerate(rows):
            if j == i or not valid[j]:
                continue
            theirs = cost(other)
            no_worse = all(t <= m for t, m in zip(theirs, mine, strict=True))
            better = any(t < m for t, m in zip(theirs, mine, strict=True))
            dominated = dominated or (no_worse and better)
        front.append(not dominated)
    return front


@st.composite
def tables(draw: st.DrawFn) -> tuple[list[list[float]], list[str]]:
    k = draw(st.integers(1, 3))
    senses = draw(st.lists(st.sampled_from(["min", "max"]), min_size=k, max_size=k))
    base = draw(st.lists(st.lists(COORDINATES, min_size=k, max_size=k), min_size=1, max_size=8))
    # Duplicate some rows exactly, and sometimes make every row equal.
    rows = base + draw(st.lists(st.sampled_from(base), max_size=4))
    if draw(st.booleans()) and draw(st.booleans()):
        rows = [rows[0]] * len(rows)
    return rows, senses


@settings(max_examples=300, deadline=None, derandomize=True)
@given(table=tables())
def test_pareto_front_matches_brute_force(table: tuple[list[list[float]], list[str]]) -> None:
    rows, senses = table
    columns = [f"c{i}" for i in range(len(senses))]
    df = pd.DataFrame(rows, columns=columns)
    minimize = [c for c, s in zip(columns, senses, strict=True) if s == "min"]
    maximize = [c for c, s in zip(columns, senses, strict=True) if s == "max"]
    assert mask(df, minimize, maximize) == brute_force_front(rows, senses)


@given(point=st.lists(COORDINATES, min_size=1, max_size=3))
@settings(max_examples=50, deadline=None, derandomize=True)
def test_one_point_is_on_the_front_unless_it_has_nan(point: list[float]) -> None:
    df = pd.DataFrame([point], columns=[f"c{i}" for i in range(len(point))])
    assert mask(df, list(df.columns), []) == [not any(math.isnan(v) for v in point)]
