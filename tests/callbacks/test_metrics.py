"""The metrics callback logs collapse/plasticity columns and never changes training."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

from rlplast.agents import PlasticDQN
from rlplast.config import load_config
from rlplast.runlog import WALL_CLOCK_COLUMNS, read_metrics_csv
from rlplast.train import run_training

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import REPO, tiny_overrides  # noqa: E402


def _run(tmp_path, name, metrics: bool):
    cfg = load_config(
        REPO / "configs/permuted_cartpole.yaml",
        [*tiny_overrides(800, metrics=metrics), "env.kwargs.steps_per_task=400", "output.tensorboard=false"],
    )
    run_training(cfg, tmp_path / name, quiet=True)
    return tmp_path / name


def test_metrics_do_not_change_training_and_are_logged(tmp_path):
    with_metrics = _run(tmp_path, "on", metrics=True)
    without = _run(tmp_path, "off", metrics=False)
    a = PlasticDQN.load(with_metrics / "model.zip")
    b = PlasticDQN.load(without / "model.zip")
    for p, q in zip(a.q_net.parameters(), b.q_net.parameters(), strict=True):
        assert torch.equal(p, q)

    rows_on = read_metrics_csv(with_metrics / "metrics.csv")
    rows_off = read_metrics_csv(without / "metrics.csv")
    for r_on, r_off in zip(rows_on, rows_off, strict=True):
        for key, value in r_off.items():
            if key not in WALL_CLOCK_COLUMNS:
                assert r_on[key] == value, key

    by_step = {int(r["step"]): r for r in rows_on}
    for key in ("collapse/nc1_taken", "collapse/nc1_greedy", "plasticity/srank"):
        assert key in by_step[200], key
        assert by_step[100][key] == ""  # metrics run every 200 steps, rows every 100
        assert by_step[200][key] != "" and by_step[400][key] != ""
    # probe plasticity runs on its own, slower clock (every 400 steps here)
    assert by_step[200]["plasticity/probe_ratio"] == "" and by_step[600]["plasticity/probe_ratio"] == ""
    assert by_step[400]["plasticity/probe_ratio"] != "" and by_step[800]["plasticity/probe_ratio"] != ""
    assert math.isfinite(float(by_step[400]["collapse/nc1_taken"]))
    assert math.isfinite(float(by_step[400]["plasticity/distance_from_init"]))
    assert not any(k.startswith("collapse/") for k in rows_off[0])


def test_probe_targets_are_not_the_agents_own_initialisation():
    """With the training seed reused, the probe's random targets equal the untrained agent's outputs."""
    from rlplast.callbacks import MetricsProbe
    from rlplast.config import config_from_dict

    model = PlasticDQN(
        "MlpPolicy", "CartPole-v1", seed=3, learning_starts=10_000, policy_kwargs=dict(net_arch=[16])
    )
    model.learn(300)  # fills the replay buffer; no update yet, so the weights are still θ₀
    probe = MetricsProbe(config_from_dict({"metrics": {"probe_steps": 5}}).metrics, seed=3)
    probe.snapshot_init(model)
    values = probe.compute(model, with_probe=True)
    assert values["plasticity/probe_loss"] > 1e-8
    assert values["plasticity/distance_from_init"] == 0.0


def test_nan_notes_are_printed_once_unless_quiet_and_kept_in_the_summary(tmp_path, capsys):
    import json

    overrides = [*tiny_overrides(400, metrics=True), "metrics.n_min=100000", "output.tensorboard=false"]
    cfg = load_config(REPO / "configs/cartpole.yaml", overrides)
    loud = run_training(cfg, tmp_path / "loud", quiet=False)
    err = capsys.readouterr().err
    quiet = run_training(cfg, tmp_path / "quiet", quiet=True)
    assert capsys.readouterr().err.count("(reported once)") == 0
    assert loud["notes"] and loud["notes"] == quiet["notes"]
    for note in loud["notes"]:
        assert note.startswith("metrics: ") and err.count(f"rlplast: {note} (reported once)") == 1
    assert json.loads((tmp_path / "quiet" / "summary.json").read_text())["notes"] == quiet["notes"]
