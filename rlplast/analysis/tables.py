"""Number formatting, CSV text and Markdown tables, shared by every report (RL and supervised).

**The number format** (:func:`format_number`, the one function every table uses): ``digits``
significant digits (3 by default; correlation coefficients use 2, with at most 2 decimals), trailing
zeros kept (``2.00``,
``10.0``), integer digits never rounded away (``1235``, not ``1.24e3``), ``0`` for zero and ``n/a``
for NaN. Scientific notation (``4.43e5``, ``3.20e-5``) is used only for a column that needs it
(:func:`needs_scientific`): one whose nonzero magnitudes span 4 decades or more, or reach 10⁶, or
stay below 10⁻³. A table decides once per column (:func:`column_format`), so one column never mixes
``14459`` with ``1.37e6``.

**Estimates** (:func:`format_estimate`): ``IQM [low, high]`` is a 95 % bootstrap CI (3 or more
seeds); ``IQM (low to high)`` is the min–max range of 2 seeds; a bare ``IQM`` has no interval
(1 seed, or a pooled ``all`` row below 3 seeds). :data:`INTERVAL_LEGEND` says so in words.

Example:
    >>> format_number(0.012345), format_number(123.456), format_number(2.0), format_number(float("nan"))
    ('0.0123', '123', '2.00', 'n/a')
    >>> fmt = column_format([14459.4, 1.37e6, 3.1e10])
    >>> fmt(14459.4), fmt(3.1e10)
    ('1.45e4', '3.10e10')
    >>> format_estimate(17.1, 13.5, 20.7, "range", column_format([13.5, 20.7]))
    '17.1 (13.5 to 20.7)'
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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "INTERVAL_LEGEND",
    "NumberFormat",
    "column_format",
    "csv_text",
    "format_estimate",
    "format_number",
    "markdown_table",
    "needs_scientific",
]

#: One line for a table's caption: what the brackets and parentheses of :func:`format_estimate` mean.
INTERVAL_LEGEND = (
    "`IQM [a, b]` = 95% percentile-bootstrap CI of the IQM (3 or more seeds); `IQM (a to b)` = min to "
    "max of 2 seeds (too few for a CI); a bare IQM has no interval (1 seed, or an `all` row with "
    "fewer than 3 seeds)."
)

#: A column switches to scientific notation when its nonzero magnitudes span this ratio or more.
SCIENTIFIC_SPAN = 1e4
#: ... or when its largest magnitude reaches this ...
SCIENTIFIC_LARGE = 1e6
#: ... or stays below this.
SCIENTIFIC_SMALL = 1e-3


def needs_scientific(values: Iterable[float]) -> bool:
    """Whether a column of numbers is written in scientific notation.

    True when the finite nonzero magnitudes span 4 decades or more (ratio ≥ 10⁴), or the largest
    reaches 10⁶, or the largest stays below 10⁻³; False for an empty or all-zero column.

    Example:
        >>> needs_scientific([0.31, 0.55]), needs_scientific([12.5, 2471.7]), needs_scientific([1.2e4, 3e10])
        (False, False, True)
    """
    mags = [abs(v) for v in values if math.isfinite(v) and v != 0]
    if not mags:
        return False
    hi, lo = max(mags), min(mags)
    return hi >= SCIENTIFIC_LARGE or hi < SCIENTIFIC_SMALL or hi / lo >= SCIENTIFIC_SPAN


def format_number(
    x: float, digits: int = 3, scientific: bool | None = None, max_decimals: int | None = None
) -> str:
    """One number for a table: ``digits`` significant digits, trailing zeros kept.

    Args:
        x: the number.
        digits: significant digits (≥ 1).
        scientific: scientific notation (``1.45e4``) or fixed (``14459``); None decides from ``x``
            alone (:func:`needs_scientific` of ``[x]``). Tables pass their column's decision.
        max_decimals: at most this many decimals in fixed notation (correlation coefficients: 2,
            so that r = 0.00075 reads ``0.00``, not ``0.00075``).

    Returns:
        ``n/a`` when ``x`` is not finite, ``0`` for zero; in fixed notation integer digits are
        never rounded away (``1234.6`` → ``1235``).

    Example:
        >>> format_number(0.5), format_number(-0.03, 2), format_number(1234.56), format_number(3.2e-5)
        ('0.500', '-0.030', '1235', '3.20e-5')
    """
    if not math.isfinite(x):
        return "n/a"
    if x == 0:
        return "0"
    if scientific is None:
        scientific = needs_scientific([x])
    mantissa, exp = f"{x:.{digits - 1}e}".split("e")
    if scientific:
        return f"{mantissa}e{int(exp)}"
    decimals = max(digits - 1 - int(exp), 0)  # exponent of x rounded to `digits` digits
    if max_decimals is not None:
        decimals = min(decimals, max_decimals)
    return f"{x:.{decimals}f}"


@dataclass(frozen=True)
class NumberFormat:
    """A column's number format: significant digits and fixed or scientific notation.

    Calling it formats one number with :func:`format_number`.

    Attributes:
        digits: significant digits.
        scientific: scientific notation for the whole column.
        max_decimals: at most this many decimals in fixed notation (None: no limit).
    """

    digits: int = 3
    scientific: bool = False
    max_decimals: int | None = None

    def __call__(self, x: float) -> str:
        """``format_number(x, self.digits, self.scientific, self.max_decimals)``."""
        return format_number(x, self.digits, self.scientific, self.max_decimals)


def column_format(values: Iterable[float], digits: int = 3) -> NumberFormat:
    """The format of a table column holding ``values`` (every number it shows, bounds included)."""
    return NumberFormat(digits, needs_scientific(values))


def format_estimate(center: float, low: float, high: float, interval: str, fmt: NumberFormat) -> str:
    """An estimate with its interval, as :data:`INTERVAL_LEGEND` describes.

    Args:
        center: the estimate (an IQM); NaN gives ``–``.
        low: lower bound of the interval.
        high: upper bound.
        interval: ``ci`` (``c [low, high]``), ``range`` (``c (low to high)``) or ``none`` (``c``).
        fmt: the column's format.
    """
    if not math.isfinite(center):
        return "–"
    text = fmt(center)
    if interval == "ci" and math.isfinite(low) and math.isfinite(high):
        return f"{text} [{fmt(low)}, {fmt(high)}]"
    if interval == "range" and math.isfinite(low) and math.isfinite(high):
        return f"{text} ({fmt(low)} to {fmt(high)})"
    return text


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
