"""Number formatting, CSV text and Markdown tables: known answers."""

from __future__ import annotations

import math

from rlplast.analysis import Cell, csv_text, format_number, markdown_table


def test_format_number():
    assert format_number(0.012345) == "0.0123"
    assert format_number(123.456) == "123.5"
    assert format_number(2.0) == "2.0"
    assert format_number(0.0) == "0"
    assert format_number(123456.0) == "1.23e+05"
    assert format_number(0.0001234) == "1.23e-04"
    assert format_number(1234.5678, 4) == "1234.57"
    assert format_number(math.nan) == format_number(math.inf) == "n/a"


def test_csv_text_blanks_non_finite_floats():
    assert (
        csv_text(["a", "b", "c"], [[1, math.nan, "x,y"], [0.5, math.inf, ""]]) == 'a,b,c\n1,,"x,y"\n0.5,,\n'
    )


def test_markdown_table_and_cell_format():
    assert markdown_table(["a", "b"], [["1", 2]]) == ["| a | b |", "|---|---|", "| 1 | 2 |"]
    assert Cell("m", "0", "q", 2, 1.0, 1.5, 1.0, 2.0).fmt() == "1.5 [1.0, 2.0]"
    assert Cell("m", "0", "q", 1, 1.5, 1.5, math.nan, math.nan).fmt() == "1.5"
    assert Cell("m", "0", "q", 0, math.nan, math.nan, math.nan, math.nan).fmt() == "–"
    assert Cell("m", "all", "q", 2, 1.0, 1.5, 1.0, 2.0).as_csv() == ["m", "all", "q", 2, 1.0, 1.5, 1.0, 2.0]
