"""Bad parameters of plasticity_injection, weight_clipping, hare_tortoise, continual_backprop and cchain
through ``rlplast train --set``: one line on stderr, exit code 2, nothing written."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from rlplast.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import REPO, tiny_overrides  # noqa: E402


@pytest.mark.parametrize(
    ("spec", "expect"),
    [
        (
            "{name: weight_clipping, kappa: -1}",
            "intervention 'weight_clipping': kappa must be > 0.0, got -1.0",
        ),
        ("{name: weight_clipping, kappa: 0}", "intervention 'weight_clipping': kappa must be > 0.0, got 0.0"),
        (
            "{name: hare_tortoise, alpha: 1.5}",
            "intervention 'hare_tortoise': alpha must be in (0, 1), got 1.5",
        ),
        ("{name: hare_tortoise, alpha: 0}", "intervention 'hare_tortoise': alpha must be > 0.0, got 0.0"),
        (
            "{name: hare_tortoise, target: swap}",
            "intervention 'hare_tortoise': target must be one of copy, keep",
        ),
        (
            "{name: plasticity_injection, n_layers: 0}",
            "intervention 'plasticity_injection': n_layers must be >= 1",
        ),
        (
            "{name: continual_backprop, replacement_rate: 2}",
            "intervention 'continual_backprop': replacement_rate must be <= 1.0, got 2.0",
        ),
        (
            "{name: continual_backprop, decay_rate: 1}",
            "intervention 'continual_backprop': decay_rate must be in [0, 1), got 1.0",
        ),
        ("{name: cchain, target_ratio: -0.5}", "intervention 'cchain': target_ratio must be > 0.0, got -0.5"),
        ("{name: cchain, window: 0}", "intervention 'cchain': window must be >= 1, got 0"),
        ("{name: cchain, coef: .nan}", "intervention 'cchain': parameter 'coef' must be a finite number"),
        # Checked when the agent is built: the network does not fit the intervention.
        (
            "{name: plasticity_injection, n_layers: 5}",
            "intervention 'plasticity_injection': n_layers=5 but the Q-network's head (q_net.q_net, after "
            "the features extractor) has only 3 linear layers",
        ),
    ],
)
def test_bad_parameters_are_one_line_errors_with_exit_2(tmp_path, capsys, spec, expect):
    out = tmp_path / "run"
    argv = ["train", str(REPO / "configs/cartpole.yaml"), "--quiet", "--out", str(out)]
    for o in [*tiny_overrides(200), "output.tensorboard=false", f"interventions=[{spec}]"]:
        argv += ["--set", o]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("rlplast: error:"), err
    assert "Traceback" not in err and expect in err, err
    assert not out.exists()


@pytest.mark.parametrize("name", ["redo", "continual_backprop"])
def test_unit_recycling_on_a_crelu_network_is_refused_with_one_line(tmp_path, capsys, name):
    """CReLU feeds each unit to the next layer twice: no unit can be scored and replaced alone."""
    out = tmp_path / "run"
    argv = ["train", str(REPO / "configs/cartpole.yaml"), "--quiet", "--out", str(out)]
    overrides = [*tiny_overrides(200), "output.tensorboard=false", "agent.activation=crelu"]
    for o in [*overrides, f"interventions=[{{name: {name}}}]"]:
        argv += ["--set", o]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    assert f"intervention '{name}': the Q-network has no hidden linear layer" in err, err
    assert not out.exists()
