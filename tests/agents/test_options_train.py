"""`rlplast train` with each agent option's method overlay: the option reaches the saved agent, and the
new diagnostics (churn, active units, GraMa, curvature) land in metrics.csv."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from rlplast.agents import PlasticDQN
from rlplast.agents.layers import CReLU
from rlplast.agents.trac import TRACAdam
from rlplast.cli import main
from rlplast.runlog import read_metrics_csv

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import REPO, tiny_overrides  # noqa: E402


def _check_layer_norm(model: PlasticDQN) -> None:
    assert [type(m) for m in model.q_net.q_net][:3] == [nn.Linear, nn.LayerNorm, nn.ReLU]


def _check_layer_norm_wd(model: PlasticDQN) -> None:
    _check_layer_norm(model)
    assert type(model.policy.optimizer) is torch.optim.AdamW
    assert model.policy.optimizer.param_groups[0]["weight_decay"] == 0.01


def _check_crelu(model: PlasticDQN) -> None:
    assert isinstance(model.q_net.q_net[1], CReLU) and model.q_net.q_net[2].in_features == 64


def _check_trac(model: PlasticDQN) -> None:
    assert type(model.policy.optimizer) is TRACAdam and float(model.policy.optimizer.scale()) >= 0.0


def _check_double_dqn(model: PlasticDQN) -> None:
    assert model.double_dqn is True


CHECKS = {
    "layer_norm": _check_layer_norm,
    "layer_norm_wd": _check_layer_norm_wd,
    "crelu": _check_crelu,
    "trac": _check_trac,
    "double_dqn": _check_double_dqn,
}


@pytest.mark.parametrize("method", sorted(CHECKS))
def test_option_overlay_trains_with_the_new_metrics(tmp_path, method):
    out = tmp_path / method
    config = str(REPO / "configs/permuted_cartpole.yaml")
    args = ["train", config, "--method", method, "--out", str(out), "--quiet"]
    overrides = [
        *tiny_overrides(600, metrics=True),
        "env.kwargs.steps_per_task=300",
        "metrics.names=[active, churn, dormant, grama, curvature]",
    ]
    for o in overrides:
        args += ["--set", o]
    assert main(args) == 0
    CHECKS[method](PlasticDQN.load(out / "model.zip"))
    rows = [r for r in read_metrics_csv(out / "metrics.csv") if r.get("plasticity/hessian_max_eig")]
    assert len(rows) >= 2
    for key in ("plasticity/active_fraction", "plasticity/grama_fraction", "plasticity/churn_action"):
        assert rows[-1][key] not in ("", "nan"), key
    if method == "trac":
        assert any(r.get("train/trac_scale") for r in read_metrics_csv(out / "metrics.csv"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("agent.weight_decay=-0.1", "agent.weight_decay: must be >= 0.0"),
        ("agent.optimizer=sgd", "agent.optimizer: 'sgd' is not allowed; valid: adam, trac"),
        ("agent.activation=gelu", "valid: relu, tanh, elu, leaky_relu, crelu"),
        ("agent.layer_norm=3", "agent.layer_norm: expected true or false"),
        ("agent.double_dqn=maybe", "agent.double_dqn: expected true or false"),
        ("agent.net_arch=[]", "agent.layer_norm acts on the hidden layers of agent.net_arch, which is []"),
    ],
)
def test_bad_option_values_are_one_line_errors_with_exit_2(tmp_path, capsys, override, message):
    out = tmp_path / "run"
    args = ["train", str(REPO / "configs/quickstart.yaml"), "--out", str(out), "--set", override]
    if "net_arch" in override:
        args += ["--set", "agent.layer_norm=true"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()
