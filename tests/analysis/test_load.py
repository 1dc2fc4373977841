"""Loading run directories: names, seeds, folder layouts and the metric-column rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlplast.analysis import is_metric_column, load_run, load_sweep, method_order
from rlplast.errors import UserError
from rlplast.runlog import BASE_COLUMNS, WALL_CLOCK_COLUMNS


def test_metric_column_rule():
    assert not any(is_metric_column(c) for c in BASE_COLUMNS)
    assert not any(is_metric_column(c) for c in WALL_CLOCK_COLUMNS)
    for col in (
        "collapse/nc1_greedy",
        "plasticity/srank",
        "intervention/resets",
        "train/nc_reg_loss",
        "custom/score",
    ):
        assert is_metric_column(col)


def test_run_metric_columns_and_tasks(tmp_path: Path, write_run, episodes):
    cols = {"custom/score": [1.0, 2.0], "plasticity/srank": [""] * 11, "train/l2_init_loss": ["", 3.0]}
    run = load_run(write_run(tmp_path / "m-s4", episodes(0.0), cols))
    assert (run.name, run.method, run.seed) == ("m-s4", "m", 4)
    assert run.metric_columns() == ["custom/score", "train/l2_init_loss"]  # never computed: left out
    assert run.tasks() == [0, 1]
    assert run.metrics["custom/score"][:3].tolist()[:2] == [1.0, 2.0]


def test_run_names_without_a_seed(tmp_path: Path, write_run, episodes):
    named = load_run(write_run(tmp_path / "my_run", episodes(0.0), summary={"seed": 7}))
    assert (named.method, named.seed) == ("my_run", 7)
    bare = load_run(write_run(tmp_path / "other", episodes(0.0), summary={"seed": None}))
    assert (bare.method, bare.seed) == ("other", 0)
    given = load_run(tmp_path / "my_run", method="x", seed=3)
    assert (given.method, given.seed) == ("x", 3)


def test_load_sweep_with_a_manifest_reads_done_runs_only(two_runs: Path):
    manifest = {
        "runs": {
            "m-s0": {"method": "m", "seed": 0, "state": "done", "run_dir": "runs/m-s0"},
            "m-s1": {"method": "m", "seed": 1, "state": "failed", "run_dir": "runs/m-s1"},
        }
    }
    (two_runs / "manifest.json").write_text(json.dumps(manifest))
    runs, entries = load_sweep(two_runs)
    assert [r.name for r in runs] == ["m-s0"] and set(entries) == {"m-s0", "m-s1"}


def test_load_sweep_layouts(tmp_path: Path, two_runs: Path, write_run, episodes):
    runs, entries = load_sweep(two_runs)  # runs/ folder, no manifest
    assert [(r.method, r.seed) for r in runs] == [("m", 0), ("m", 1)] and entries == {}
    write_run(tmp_path / "train" / "cfg-reset-s2", episodes(0.0))  # a folder of train run dirs
    (tmp_path / "train" / "notarun").mkdir()
    runs, _ = load_sweep(tmp_path / "train")
    assert [(r.method, r.seed) for r in runs] == [("cfg-reset", 2)]
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no finished runs"):
        load_sweep(tmp_path / "empty")
    with pytest.raises(UserError, match="sweep directory not found"):
        load_sweep(tmp_path / "missing")


def _manifest_sweep(root: Path, write_run, episodes, manifest: dict | None) -> Path:
    for method in ("zeta", "alpha", "mid"):
        for seed in (1, 0):
            write_run(root / "runs" / f"{method}-s{seed}", episodes(float(seed)))
    if manifest is not None:
        (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def _entries(order: list[str]) -> dict:
    return {
        f"{m}-s{s}": {"method": m, "seed": s, "state": "done", "run_dir": f"runs/{m}-s{s}"}
        for m in order
        for s in (0, 1)
    }


def test_method_order_follows_the_given_order(tmp_path: Path, write_run, episodes):
    # 1. the manifest's `methods` list (--methods order)
    given = {"methods": ["zeta", "alpha", "mid"], "runs": _entries(["mid", "alpha", "zeta"])}
    runs, _ = load_sweep(_manifest_sweep(tmp_path / "a", write_run, episodes, given))
    assert [(r.method, r.seed) for r in runs] == [(m, s) for m in ("zeta", "alpha", "mid") for s in (0, 1)]
    # 2. without it: the order in which the manifest first names each method
    runs, _ = load_sweep(
        _manifest_sweep(tmp_path / "b", write_run, episodes, {"runs": _entries(["mid", "zeta", "alpha"])})
    )
    assert list(dict.fromkeys(r.method for r in runs)) == ["mid", "zeta", "alpha"]
    # 3. without a manifest: alphabetical
    runs, _ = load_sweep(_manifest_sweep(tmp_path / "c", write_run, episodes, None))
    assert list(dict.fromkeys(r.method for r in runs)) == ["alpha", "mid", "zeta"]
    # a methods list naming only some methods: the rest follow in manifest order
    assert method_order(["a", "b", "c"], {"methods": ["c"], "runs": {"x": {"method": "b"}}}) == [
        "c",
        "b",
        "a",
    ]


def test_a_methods_key_that_is_not_a_list_of_names_is_refused(tmp_path: Path, write_run, episodes):
    root = _manifest_sweep(
        tmp_path, write_run, episodes, {"methods": "zeta,alpha", "runs": _entries(["zeta"])}
    )
    with pytest.raises(UserError, match="'methods' must be an array of strings, got a string"):
        load_sweep(root)
