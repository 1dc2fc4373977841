"""The report's figures: files, method order and colours, band labels, task labels, no interpolation."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rlplast.analysis import Report, build_report, load_run, method_styles, metric_title, write_report
from rlplast.analysis import plots as plots_module
from rlplast.analysis.labels import axis_label, metric_unit
from rlplast.analysis.plots import metric_points, task_return_curve, task_spans, use_log
from rlplast.analysis.style import PALETTE, PNG_DPI

METHODS = ["zeta", "alpha"]  # the --methods order: not alphabetical
SEEDS = {"zeta": 5, "alpha": 2}


@dataclass
class Written:
    """A report written once for the module: the sweep, the output folder, the figures, the report."""

    sweep: Path
    out: Path
    figures: dict[str, Any]
    rep: Report


@pytest.fixture(scope="module")
def written(tmp_path_factory, write_run, episodes) -> Written:
    """zeta (5 seeds) and alpha (2 seeds), NC1 every 3rd logging row, probe ratio twice; a manifest
    whose `methods` list gives the order. The report is written once; every figure it saves is kept."""
    root = tmp_path_factory.mktemp("sweep")
    entries = {}
    for mi, method in enumerate(METHODS):
        for seed in range(SEEDS[method]):
            # 11 logging rows at steps 10..110: rows 0..8 in task 0, rows 9 and 10 in task 1
            nc1: list[Any] = ["" if i % 3 else 0.5 * (seed + 1) * (mi + 1) ** 3 for i in range(11)]
            nc1[10] = 2.0 * (seed + 1) * 10**mi
            probe: list[Any] = [""] * 11
            probe[8], probe[10] = 1.0 + seed, 1e3 * (seed + 1)
            cols = {
                "collapse/nc1_greedy": nc1,
                "plasticity/probe_ratio": probe,
                "plasticity/srank": [5.0] * 11,
            }
            name = f"{method}-s{seed}"
            write_run(root / "runs" / name, episodes(float(seed + 3 * mi)), cols)
            entries[name] = {"method": method, "seed": seed, "state": "done", "run_dir": f"runs/{name}"}
    # manifest entries in alphabetical order: only `methods` knows the given order
    manifest = {"methods": METHODS, "runs": dict(sorted(entries.items()))}
    (root / "manifest.json").write_text(json.dumps(manifest))
    saved: dict[str, Any] = {}
    real = plots_module.save_figure

    def keep(fig: Any, path: Path) -> list[Path]:
        saved[Path(path).stem] = fig
        return real(fig, path)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plots_module, "save_figure", keep)
        out = write_report(root, root / "out")
    return Written(root, out, saved, build_report(root))


def test_every_figure_is_a_png_and_a_pdf(written: Written):
    from PIL import Image

    out = written.out
    for stem in ("returns", "collapse", "nc1_vs_plasticity"):
        assert (out / f"{stem}.pdf").read_bytes().startswith(b"%PDF"), stem
        with Image.open(out / f"{stem}.png") as im:
            assert im.format == "PNG"
            dpi = im.info["dpi"]
            assert min(dpi) >= 200 and round(dpi[0]) == PNG_DPI, (stem, dpi)
    md = (out / "report.md").read_text()
    assert "`returns.pdf`" in md and "`collapse.pdf`" in md and "`nc1_vs_plasticity.pdf`" in md


def _legend_styles(legend: Any) -> list[tuple[str, str, str]]:
    from matplotlib.colors import to_hex

    return [
        (t.get_text().split(" ")[0].rstrip(":"), to_hex(h.get_color()), h.get_marker())
        for t, h in zip(legend.get_texts(), legend.legend_handles, strict=True)
    ]


def test_methods_sharing_a_colour_differ_in_marker_and_line_style():
    names = [f"m{i}" for i in range(16)]
    styles = method_styles(names)
    for i in range(8):
        first, second = styles[names[i]], styles[names[i + 8]]
        assert first.color == second.color
        assert first.marker != second.marker and first.linestyle != second.linestyle
    assert len({(s.color, s.marker, s.linestyle) for s in styles.values()}) == 16


def test_method_order_and_colours_are_the_same_in_every_figure(written: Written):
    out, figures = written.out, written.figures
    styles = method_styles(METHODS)
    assert [styles[m].color for m in METHODS] == list(PALETTE[:2])
    for stem in ("returns", "collapse"):
        legend = figures[stem].legends[0]
        got = _legend_styles(legend)
        assert [g[0] for g in got] == METHODS, stem
        assert [g[1] for g in got] == [styles[m].color.lower() for m in METHODS], stem
        assert [t.get_text() for t in legend.get_texts()] == ["zeta (n=5)", "alpha (n=2)"]
    for ax in figures["nc1_vs_plasticity"].axes:
        got = [g for g in _legend_styles(ax.get_legend()) if g[0] in METHODS]
        assert [g[0] for g in got] == METHODS
        assert [(g[1], g[2]) for g in got] == [(styles[m].color.lower(), styles[m].marker) for m in METHODS]
    # tables follow the same order
    md = (out / "report.md").read_text()
    assert md.index("| zeta | 0 |") < md.index("| alpha | 0 |")
    assert "the order given to `rlplast compare --methods`" in md


def test_band_and_task_labels_are_on_the_figures(written: Written):
    figures = written.figures
    mixed = "band: 95% bootstrap CI of the IQM (methods with ≥ 3 seeds), min–max (2 seeds)"
    for stem in ("returns", "collapse"):
        assert mixed in figures[stem].legends[0].get_title().get_text(), stem
    texts = [t.get_text() for t in figures["returns"].axes[0].texts]
    assert texts == ["task 0", "task 1"]
    collapse = figures["collapse"]
    first = collapse.axes[0]
    assert {t.get_text() for t in first.texts} <= {"task 0", "task 1", "T0", "T1"} and first.texts


def test_metric_panels_have_readable_titles_shared_x_and_no_interpolation(written: Written):
    rep = written.rep
    fig = written.figures["collapse"]
    axes = [ax for ax in fig.axes if ax.get_visible() and ax.axison]
    titles = [ax.get_title() for ax in axes]
    assert titles == ["NC1 (greedy actions)", "srank", "probe ratio"]
    assert all("/" not in t for t in titles)
    assert {ax.get_xlim() for ax in axes} == {axes[0].get_xlim()}  # one x-range
    nc1_steps = set(metric_points(rep.runs, "collapse/nc1_greedy")[0].tolist())
    assert nc1_steps == {10.0, 40.0, 70.0, 100.0, 110.0}
    for line in axes[0].get_lines():
        if line.get_marker() not in (None, "None", ""):
            assert (
                set(np.asarray(line.get_xdata(), dtype=float).tolist()) <= nc1_steps
            )  # markers only where measured
    probe = axes[2]
    assert probe.get_yscale() == "log" and probe.get_ylabel() == "trained / fresh loss, log scale"
    for line in probe.get_lines():
        if line.get_marker() not in (None, "None", ""):
            assert set(np.asarray(line.get_xdata(), dtype=float).tolist()) <= {90.0, 110.0}


def test_nc1_figure_prints_the_correlation_table_rows(written: Written):
    rep = written.rep
    fig = written.figures["nc1_vs_plasticity"]
    assert len(fig.axes) == 2  # return and probe ratio
    texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    row = next(
        c
        for c in rep.correlations
        if (c.scope, c.x, c.y) == ("zeta", "collapse/nc1_greedy", "return")
        and c.phase.startswith("tasks >= 1")
    )
    assert row.pearson.n == 5 and row.shown()
    assert f"zeta: r = {row.pearson.format()}, n = 5" in texts
    # alpha has 2 points in tasks >= 1: no r on the figure or in report.md, only in the CSV
    assert any(t.startswith("alpha: n = 2 < 5") or t.startswith("alpha: r n/a") for t in texts)
    assert fig.axes[0].get_xscale() == "log"  # NC1 spans decades
    md = (written.out / "report.md").read_text()
    assert f"| zeta | tasks >= 1 (seed × task) | nc1_greedy | return | 5 | {row.pearson.format()} |" in md
    assert "| alpha | tasks >= 1" not in md
    csv_text = (written.out / "correlations.csv").read_text()
    assert "alpha,tasks >= 1 (seed × task),collapse/nc1_greedy,return,2," in csv_text


def test_returns_window_restarts_at_each_task_switch(tmp_path: Path, write_run):
    # task 0: returns 100 at steps 10..40; task 1: returns 0, 2 at steps 50, 60
    eps = [(10, 100.0, 0), (20, 100.0, 0), (30, 100.0, 0), (40, 100.0, 0), (50, 0.0, 1), (60, 2.0, 1)]
    run = load_run(write_run(tmp_path / "m-s0", eps))
    spans = task_spans([run])
    assert [t for _, _, t in spans] == [0, 1]
    (x0, y0), (x1, y1) = task_return_curve(run, spans, window=3, points=7)
    assert y0[-1] == 100.0
    # in task 1 no task-0 episode is averaged in: NaN before its first episode, then 0, then mean(0, 2)
    at = dict(zip(x1.tolist(), y1.tolist(), strict=True))
    assert all(np.isnan(v) for s, v in at.items() if s < 50)
    assert at[50.0] == 0.0 and at[60.0] == 1.0


def test_labels_and_log_rule():
    assert metric_title("collapse/nc1_taken") == "NC1 (taken actions)"
    assert metric_title("plasticity/probe_ratio") == "probe ratio"
    assert metric_unit("plasticity/probe_ratio") == "trained / fresh loss"
    assert metric_title("collapse/count_1_greedy") == "samples of class 1 (greedy actions)"
    assert metric_title("nc1") == "NC1" and metric_unit("online_acc") == "fraction correct"
    assert (
        metric_title("custom/my_metric") == "custom/my_metric"
        and axis_label("custom/my_metric") == "custom/my_metric"
    )
    assert axis_label("plasticity/srank", log=True) == "singular values, log scale"
    assert use_log([1.0, 30.0]) and not use_log([1.0, 29.0]) and not use_log([0.0, 100.0])
