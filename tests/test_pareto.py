"""Tests for dashboard.pareto.pareto_front: exact masks on hand-checked tables."""

from __future__ import annotations

import math

import pandas as pd
import pytest

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
