"""Number formatting, CSV text and Markdown tables, shared by every report (RL and supervised).

Example:
    >>> format_number(0.012345), format_number(123.456), format_number(float("nan"))
    ('0.0123', '123.5', 'n/a')
    >>> print(csv_text(["a", "b"], [[1, float("nan")]]), end="")
    a,b
    1,
    >>> markdown_table(["a", "b"], [["1", "2"]])
    ['| a | b |', '|---|---|', '| 1 | 2 |']
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from typing import Any

__all__ = ["csv_text", "format_number", "markdown_table"]


def format_number(x: float, digits: int = 3) -> str:
    """A number for a table: ``digits`` significant digits below 1, ``digits - 2`` decimals from 1
    on, scientific notation from 1e5 or below ``10**-digits``; ``n/a`` when not finite.
    """
    if not math.isfinite(x):
        return "n/a"
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 10 ** (-digits)):
        return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}g}" if abs(x) < 1 else f"{x:.{max(digits - 2, 1)}f}"


def csv_text(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """CSV text (``\\n`` line ends) of a header and rows; non-finite floats become empty cells."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for row in rows:
        w.writerow(["" if isinstance(v, float) and not math.isfinite(v) else v for v in row])
    return buf.getvalue()


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """The lines of a Markdown table (cells converted with ``str``)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines
