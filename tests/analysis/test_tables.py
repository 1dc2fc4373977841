"""The number format, estimates with their intervals, CSV text and Markdown tables: known answers."""

from __future__ import annotations

import math

import pytest

from rlplast.analysis import (
    Cell,
    NumberFormat,
    column_format,
    csv_text,
    format_cells,
    format_estimate,
    format_number,
    markdown_table,
    summary_cell,
)
from rlplast.analysis.tables import needs_scientific


@pytest.mark.parametrize(
    ("x", "digits", "text"),
    [
        (0.012345, 3, "0.0123"),
        (0.5, 3, "0.500"),  # trailing zeros are significant
        (2.0, 3, "2.00"),
        (10.0, 3, "10.0"),
        (123.456, 3, "123"),
        (1234.56, 3, "1235"),  # integer digits are never rounded away
        (14459.4, 3, "14459"),
        (999.6, 3, "1000"),  # rounds up across a power of ten
        (0.09996, 3, "0.100"),
        (-11.43, 3, "-11.4"),
        (-0.03, 2, "-0.030"),
        (0.0, 3, "0"),
        (1234.5678, 4, "1235"),
        (3.2e-5, 3, "3.20e-5"),  # decided from x alone: below 1e-3
        (4.43e6, 3, "4.43e6"),  # at least 1e6
    ],
)
def test_format_number_known_answers(x: float, digits: int, text: str):
    assert format_number(x, digits) == text


def test_format_number_not_finite_and_forced_notation():
    assert format_number(math.nan) == format_number(math.inf) == format_number(-math.inf) == "n/a"
    assert format_number(14459.4, scientific=True) == "1.45e4"
    assert format_number(3.2e-5, scientific=False) == "0.0000320"
    assert format_number(-0.000753, 2, scientific=False, max_decimals=2) == "-0.00"
    assert format_number(0.0861, 2, max_decimals=2) == "0.09"
    assert format_number(0.86, 2, max_decimals=2) == "0.86"


def test_scientific_only_where_a_column_spans_decades():
    assert not needs_scientific([0.31, 0.45, 0.55])
    assert not needs_scientific([12.5, 597.0, 2471.7])  # 2 decades: fixed
    assert not needs_scientific([0.307, 23.3])
    assert needs_scientific([12044.5, 1.37e6, 3.12e10])  # 6 decades
    assert needs_scientific([1.2, 12000.0])  # exactly 4 decades
    assert needs_scientific([2e6, 3e6])  # large
    assert needs_scientific([2e-5, 3e-5])  # small
    assert not needs_scientific([]) and not needs_scientific([0.0, math.nan])
    fmt = column_format([14459.4, 1.37e6, 3.12e10])
    assert fmt == NumberFormat(3, True)
    assert [fmt(v) for v in (14459.4, 1.37e6, 0.0)] == ["1.45e4", "1.37e6", "0"]


def test_estimate_text_says_which_interval():
    fmt = column_format([17.1, 13.5, 20.7])
    assert format_estimate(17.1, 13.5, 20.7, "ci", fmt) == "17.1 [13.5, 20.7]"
    assert format_estimate(17.1, 13.5, 20.7, "range", fmt) == "17.1 (13.5 to 20.7)"
    assert format_estimate(17.1, 13.5, 20.7, "none", fmt) == "17.1"
    assert format_estimate(-11.4, -20.4, -2.29, "range", fmt) == "-11.4 (-20.4 to -2.29)"
    assert format_estimate(math.nan, 1.0, 2.0, "ci", fmt) == "–"


def test_cells_below_three_seeds_have_no_ci():
    three = summary_cell("m", "0", "q", [1.0, 2.0, 4.0], None, seed=0, n_boot=500)
    assert three.interval == "ci" and three.ci_low <= three.iqm <= three.ci_high
    assert three.ci_low >= 1.0 and three.ci_high <= 4.0  # a percentile bootstrap stays in range
    two = summary_cell("m", "0", "q", [1.0, 2.0, math.nan], None, seed=0)
    assert (two.n, two.interval, two.bounds) == (2, "range", (1.0, 2.0))
    assert math.isnan(two.ci_low) and math.isnan(two.ci_high)
    assert two.fmt() == "1.50 (1.00 to 2.00)"
    assert two.as_csv() == ["m", "0", "q", 2, 1.5, 1.5, math.nan, math.nan]
    one = summary_cell("m", "0", "q", [3.0], None, seed=0)
    assert (one.interval, one.fmt()) == ("none", "3.00")
    empty = summary_cell("m", "0", "q", [math.nan], None, seed=0)
    assert (empty.n, empty.fmt()) == (0, "–")


def test_pooled_rows_count_seeds_per_task():
    # 2 tasks × 2 seeds: n = 4 pooled values but only 2 seeds -> no interval at all
    pooled = summary_cell("m", "all", "q", [1.0, 2.0, 3.0, 4.0], [0, 0, 1, 1], seed=0)
    assert (pooled.n, pooled.seeds, pooled.pooled, pooled.interval) == (4, 2, True, "none")
    assert math.isnan(pooled.ci_low) and pooled.fmt() == "2.50"
    # 3 seeds in every task: a stratified bootstrap CI
    pooled3 = summary_cell("m", "all", "q", [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [0, 0, 0, 1, 1, 1], seed=0)
    assert (pooled3.seeds, pooled3.interval) == (3, "ci") and pooled3.ci_low < pooled3.ci_high


def test_a_column_of_cells_shares_one_format():
    a = Cell("m", "0", "q", 3, 1.0, 14459.4, 12044.5, 16874.2)
    b = Cell("m", "1", "q", 3, 1.0, 1.37e6, 6.59e5, 2.08e6)
    assert format_cells([a, b, None]) == ["1.45e4 [1.20e4, 1.69e4]", "1.37e6 [6.59e5, 2.08e6]", "–"]
    c = Cell("m", "0", "q", 3, 1.0, 12.5, 10.9, 14.1)
    d = Cell("m", "1", "q", 3, 1.0, 2138.2, 1804.7, 2471.7)
    assert format_cells([c, d]) == ["12.5 [10.9, 14.1]", "2138 [1805, 2472]"]


def test_csv_text_blanks_non_finite_floats():
    assert (
        csv_text(["a", "b", "c"], [[1, math.nan, "x,y"], [0.5, math.inf, ""]]) == 'a,b,c\n1,,"x,y"\n0.5,,\n'
    )


def test_markdown_table():
    assert markdown_table(["a", "b"], [["1", 2]]) == ["| a | b |", "|---|---|", "| 1 | 2 |"]
    assert Cell("m", "all", "q", 2, 1.0, 1.5, 1.0, 2.0).as_csv() == ["m", "all", "q", 2, 1.0, 1.5, 1.0, 2.0]
