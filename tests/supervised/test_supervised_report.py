"""The supervised report's tables and figures: intervals over seeds, bounds, number format, files."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from rlplast.supervised import load_supervised_config, run_supervised
from rlplast.supervised import report as report_module

torch.set_num_threads(1)

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "supervised"
TINY = ["n_tasks=3", "n_samples=240", "metrics.n_min=5"]


def _run(tmp_path: Path, monkeypatch, seeds: int, config: str = "continual_digits.yaml", sets=TINY) -> tuple:
    saved: dict[str, Any] = {}
    real = report_module.save_figure

    def keep(fig: Any, path: Path) -> list[Path]:
        saved[Path(path).stem] = fig
        return real(fig, path)

    monkeypatch.setattr(report_module, "save_figure", keep)
    out = tmp_path / f"s{seeds}"
    cfg = load_supervised_config(CONFIGS / config, list(sets))
    run_supervised(cfg, out, seeds=seeds, progress=None)
    return out, saved


def _fill_bounds(ax: Any) -> tuple[float, float]:
    ys = np.concatenate([p.vertices[:, 1] for c in ax.collections for p in c.get_paths()])
    return float(ys.min()), float(ys.max())


def test_three_seeds_have_bounded_cis_and_every_figure_as_png_and_pdf(tmp_path: Path, monkeypatch):
    out, figs = _run(tmp_path, monkeypatch, seeds=3)
    for stem in ("accuracy_nc1", "acc_vs_nc1", "metrics"):
        assert (out / f"{stem}.png").stat().st_size > 0
        assert (out / f"{stem}.pdf").read_bytes().startswith(b"%PDF")
    band = "band: 95% bootstrap CI of the IQM over 3 seeds"
    assert band in figs["accuracy_nc1"].legends[0].get_title().get_text()
    assert band in figs["metrics"].legends[0].get_title().get_text()
    acc_ax, nc1_ax = figs["accuracy_nc1"].axes[:2]
    rows = list(csv.DictReader((out / "tasks.csv").open()))
    acc = [float(r["online_acc"]) for r in rows]
    nc1 = [float(r["nc1"]) for r in rows]
    lo, hi = _fill_bounds(acc_ax)
    assert min(acc) <= lo and hi <= max(acc) <= 1.0  # the band stays within the data, so within [0, 1]
    lo, hi = _fill_bounds(nc1_ax)
    assert 0.0 <= min(nc1) <= lo and hi <= max(nc1)
    assert all(
        float(t.get_text().replace("−", "-")).is_integer() for t in nc1_ax.get_xticklabels() if t.get_text()
    )
    md = (out / "report.md").read_text()
    assert "| task | seeds | seed × task | online_acc |" in md
    assert "| all | 3 | 9 |" in md and "95% percentile-bootstrap CI of the IQM (3 or more seeds)" in md
    summary = {(r["task"], r["quantity"]): r for r in csv.DictReader((out / "summary.csv").open())}
    c = summary[("0", "online_acc")]
    assert c["n"] == "3" and float(c["ci_low"]) <= float(c["iqm"]) <= float(c["ci_high"]) <= 1.0
    # correlations: 3 points per seed -> only in the CSV, with the reason; pooled (n = 9) in report.md
    assert (
        "| seed 0 | all tasks |" not in md
        and "| pooled (seed × task) | all tasks | nc1 | online_acc | 9 |" in md
    )
    corr = list(csv.DictReader((out / "correlations.csv").open()))
    seed0 = next(r for r in corr if r["scope"] == "seed 0" and r["phase"] == "all tasks" and r["x"] == "nc1")
    assert seed0["n"] == "3" and "not shown in report.md" in seed0["note"]
    assert "have fewer than 5 points or could not be computed" in md
    # the scatter's r is the pooled row of the table
    pooled = next(
        r for r in corr if r["scope"].startswith("pooled") and r["phase"] == "all tasks" and r["x"] == "nc1"
    )
    title = figs["acc_vs_nc1"].axes[0].get_title()
    assert title.startswith("pooled (seed × task), all tasks: Pearson r = ") and f"n = {pooled['n']}" in title


def test_two_seeds_show_a_labelled_range_and_one_seed_no_interval(tmp_path: Path, monkeypatch):
    out, figs = _run(tmp_path, monkeypatch, seeds=2)
    assert "band: min–max of 2 seeds" in figs["accuracy_nc1"].legends[0].get_title().get_text()
    summary = list(csv.DictReader((out / "summary.csv").open()))
    assert all(r["ci_low"] == r["ci_high"] == "" for r in summary)  # no CI from 2 seeds
    md = (out / "report.md").read_text()
    row0 = next(line for line in md.splitlines() if line.startswith("| 0 | 2 | – |"))
    assert " to " in row0 and "[" not in row0  # (min to max), never [CI]
    row_all = next(line for line in md.splitlines() if line.startswith("| all | 2 | 6 |"))
    assert " to " not in row_all and "[" not in row_all

    out1, figs1 = _run(tmp_path, monkeypatch, seeds=1)
    assert "1 seed: no band" in figs1["accuracy_nc1"].legends[0].get_title().get_text()
    assert not figs1["accuracy_nc1"].axes[0].collections  # no band drawn


def test_warm_start_figures(tmp_path: Path, monkeypatch):
    sets = ["n_samples=300", "metrics.n_min=5", "warm_start.warmup_epochs=4", "warm_start.checkpoint_every=2"]
    sets += ["warm_start.finetune_epochs=1", "warm_start.early_epochs=2"]
    out, figs = _run(tmp_path, monkeypatch, seeds=3, config="warm_start_digits.yaml", sets=sets)
    for stem in ("final_acc_vs_epoch", "final_acc_vs_nc1"):
        assert (out / f"{stem}.pdf").read_bytes().startswith(b"%PDF") and (out / f"{stem}.png").is_file()
    fig = figs["final_acc_vs_epoch"]
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["final (after fine-tuning)", "at the checkpoint"]
    lo, hi = _fill_bounds(fig.axes[0])
    assert lo >= 0.0 and hi <= 1.0
    assert "| epoch | seeds | seed × epoch |" in (out / "report.md").read_text()


@pytest.mark.parametrize("name", report_module.FIGURES)
def test_every_figure_and_its_vector_file_is_cleared_on_overwrite(name: str):
    assert {f"{name}.png", f"{name}.pdf"} <= set(report_module.OUTPUT_FILES)
