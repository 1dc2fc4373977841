"""The look of every report figure (RL and supervised): paper sizes, fonts, palette, files.

* Sizes: :data:`ONE_COLUMN` (3.4 in) and :data:`TWO_COLUMN` (7.0 in) wide, the text widths of
  common one- and two-column paper layouts, so a figure is placed at 100 % and its 7–8 pt text
  stays 7–8 pt on the page.
* Palette: Okabe & Ito's colour-blind-safe colours (:data:`PALETTE`, yellow last: it is faint on
  white); each method also gets its own marker, so figures read in greyscale too.
* Method styles (:func:`method_styles`): by position in the method order, so a method has the same
  colour and marker in every figure of a report.
* Files (:func:`save_figure`): a PNG at :data:`PNG_DPI` dpi and a PDF (vector, TrueType fonts that
  stay editable) with the same stem, each written atomically.

matplotlib is imported only by the functions that need it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "ONE_COLUMN",
    "PALETTE",
    "PAPER_RC",
    "PNG_DPI",
    "TWO_COLUMN",
    "VECTOR_FORMAT",
    "MethodStyle",
    "figure_files",
    "method_styles",
    "paper_style",
    "save_figure",
]

#: Width of a one-column figure (inches).
ONE_COLUMN = 3.4
#: Width of a two-column (full text width) figure (inches).
TWO_COLUMN = 7.0
#: Resolution of the PNG files.
PNG_DPI = 300
#: The vector format written next to every PNG.
VECTOR_FORMAT = "pdf"
#: Okabe & Ito (2008): blue, vermillion, bluish green, reddish purple, orange, sky blue, black, yellow.
PALETTE = (
    "#0072B2",
    "#D55E00",
    "#009E73",
    "#CC79A7",
    "#E69F00",
    "#56B4E9",
    "#000000",
    "#F0E442",
)
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_LINESTYLES = ("-", "--", ":", "-.")

#: matplotlib rc settings of every report figure (:func:`paper_style` adds PALETTE as the colour cycle).
PAPER_RC: dict[str, Any] = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "legend.title_fontsize": 7,
    "figure.titlesize": 9,
    "lines.linewidth": 1.2,
    "lines.markersize": 3.5,
    "axes.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.linewidth": 0.4,
    "grid.alpha": 0.35,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "xtick.major.size": 2.5,
    "ytick.major.size": 2.5,
    "ytick.minor.size": 1.5,
    "legend.frameon": False,
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
    "svg.fonttype": "none",
    "savefig.dpi": PNG_DPI,
    "savefig.bbox": "tight",
    "savefig.pad_inches": 0.02,
}


@dataclass(frozen=True)
class MethodStyle:
    """How one method is drawn.

    Attributes:
        color: line and marker colour.
        marker: marker of measured points.
        linestyle: line style (solid for the first 8 methods).
    """

    color: str
    marker: str
    linestyle: str

    def line(self) -> dict[str, Any]:
        """Keyword arguments for ``Axes.plot``."""
        return {"color": self.color, "marker": self.marker, "linestyle": self.linestyle}


def method_styles(methods: Sequence[str]) -> dict[str, MethodStyle]:
    """A style per method, by position in ``methods`` (the report's method order).

    Colours cycle every 8 methods; with each cycle the line style changes and the markers shift by
    three, so two methods of the same colour differ in both (up to 32 methods are told apart).

    Example:
        >>> s = method_styles(["vanilla", "reset"])
        >>> s["vanilla"].color, s["reset"].color, s["reset"].marker
        ('#0072B2', '#D55E00', 's')
    """
    out = {}
    for i, m in enumerate(dict.fromkeys(methods)):
        out[m] = MethodStyle(
            PALETTE[i % len(PALETTE)],
            _MARKERS[(i + 3 * (i // len(PALETTE))) % len(_MARKERS)],
            _LINESTYLES[(i // len(PALETTE)) % len(_LINESTYLES)],
        )
    return out


@contextmanager
def paper_style() -> Iterator[None]:
    """Draw inside this context to get :data:`PAPER_RC` (and the palette as the colour cycle)."""
    import matplotlib as mpl
    from cycler import cycler

    rc: Any = dict(PAPER_RC, **{"axes.prop_cycle": cycler(color=list(PALETTE))})
    with mpl.rc_context(rc):
        yield


def figure_files(path: str | Path) -> list[Path]:
    """The files :func:`save_figure` writes for ``path``: the PNG and its vector twin."""
    png = Path(path).with_suffix(".png")
    return [png, png.with_suffix(f".{VECTOR_FORMAT}")]


def save_figure(fig: Any, path: str | Path) -> list[Path]:
    """Save a figure as ``<stem>.png`` (:data:`PNG_DPI` dpi) and ``<stem>.pdf``, each atomically.

    Args:
        fig: the matplotlib figure.
        path: the PNG's path (any suffix is replaced).

    Returns:
        The files written (PNG first).
    """
    files = figure_files(path)
    for target in files:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        os.close(fd)
        try:
            fmt = target.suffix[1:]
            # no creation date in the vector file: the same data give the same bytes
            meta = {"CreationDate": None} if fmt == "pdf" else {"Date": None} if fmt == "svg" else {}
            fig.savefig(tmp, format=fmt, dpi=PNG_DPI, metadata=meta)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return files
