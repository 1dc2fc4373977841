"""Registry-driven checks: every registered intervention trains, round-trips its state and validates input.

New interventions are covered automatically; give them small firing intervals in ``FAST`` if their
defaults would not fire within a 600-step run.
"""

from __future__ import annotations

import io
import math
from typing import Any

import pytest
import torch

from rlplast.errors import UserError
from rlplast.interventions import INTERVENTIONS, Intervention, build_intervention

# Parameters that make each intervention act within a 600-step CartPole run.
FAST: dict[str, dict[str, Any]] = {
    "reset_last_layers": {"every_steps": 200, "when": "both", "n_layers": 2},
    "full_reset": {"every_steps": 200, "when": "both"},
    "shrink_perturb": {"every_steps": 200, "when": "both"},
    "redo": {"every_updates": 20, "batch_size": 64},
    "l2_init": {"coef": 1e-2},
    "nc_regularizer": {"coef": 0.05},
}


def _build(name: str) -> Intervention:
    return build_intervention({"name": name, **FAST.get(name, {})})


def _roundtrip(state: Any) -> Any:
    """Through torch.save / torch.load(weights_only=True), as a checkpoint would."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def _assert_same(a: Any, b: Any) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _assert_same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_same(x, y)
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b)
    else:
        assert a == b


@pytest.mark.parametrize("name", INTERVENTIONS.names())
def test_every_intervention_survives_short_training(make_dqn, name):
    intervention = _build(name)
    model = make_dqn([intervention])
    model.learn(300)
    model.notify_task_switch(1)
    model.learn(300, reset_num_timesteps=False)
    for param in model.policy.parameters():
        assert torch.isfinite(param).all()
    stats = model.pop_train_stats()
    assert all(isinstance(v, float) for v in stats.values())
    if hasattr(intervention, "fires"):
        assert intervention.fires >= 2, "the scheduled intervention never fired; fix FAST"


@pytest.mark.parametrize("name", INTERVENTIONS.names())
def test_state_dict_round_trip(make_dqn, name):
    intervention = _build(name)
    model = make_dqn([intervention])
    model.learn(400)
    model.notify_task_switch(1)
    model.pop_train_stats()
    state = intervention.state_dict()
    restored = _build(name)
    make_dqn([restored], seed=1)
    restored.load_state_dict(_roundtrip(state))
    _assert_same(restored.state_dict(), state)


def test_every_intervention_builds_from_defaults():
    for name in INTERVENTIONS.names():
        assert build_intervention({"name": name}).name == name


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(UserError, match="unknown intervention 'redoo'") as info:
        build_intervention({"name": "redoo"})
    message = str(info.value)
    assert "did you mean 'redo'" in message
    for name in INTERVENTIONS.names():
        assert name in message


def test_unknown_parameter_lists_the_valid_ones():
    with pytest.raises(
        UserError, match="unknown parameter 'taus'.*valid: every_updates, tau, batch_size, seed"
    ):
        build_intervention({"name": "redo", "taus": 0.1})


def test_wrong_type_is_a_user_error():
    with pytest.raises(UserError, match="parameter 'n_layers' must be int"):
        build_intervention({"name": "reset_last_layers", "n_layers": 1.5})


def test_yaml_style_float_string_is_accepted():
    assert build_intervention({"name": "l2_init", "coef": "1e-4"}).coef == pytest.approx(1e-4)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"name": "nc_regularizer", "coef": -0.05}, "coef must be >= 0"),
        ({"name": "l2_init", "coef": -1.0}, "coef must be >= 0"),
        ({"name": "nc_regularizer", "cap": -1.0}, "cap must be > 0"),
        ({"name": "shrink_perturb", "shrink": 0.0}, "shrink must be in"),
        ({"name": "full_reset", "when": "daily"}, "when must be one of interval, task_switch, both"),
        ({"name": "reset_last_layers", "every_steps": -5}, "every_steps must be > 0"),
        ({"name": "reset_last_layers", "n_layers": 0}, "n_layers must be >= 1"),
    ],
)
def test_bad_values_are_user_errors(spec, match):
    with pytest.raises(UserError, match=match):
        build_intervention(spec)


def _float_parameters() -> list[tuple[str, str]]:
    import dataclasses

    return [
        (name, f.name)
        for name in INTERVENTIONS
        for f in dataclasses.fields(INTERVENTIONS.get(name))
        if "float" in str(f.type)
    ]


@pytest.mark.parametrize(("name", "key"), _float_parameters())
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf"), "nan", "1e999"])
def test_non_finite_numbers_are_rejected_for_every_intervention(name, key, bad):
    with pytest.raises(UserError, match=rf"intervention '{name}': parameter '{key}' must be a finite number"):
        build_intervention({"name": name, key: bad})


def test_float_parameters_are_covered():
    assert ("l2_init", "coef") in _float_parameters() and ("redo", "tau") in _float_parameters()


def test_redo_seed_must_be_non_negative():
    with pytest.raises(UserError, match="intervention 'redo': seed must be >= 0, got -1"):
        build_intervention({"name": "redo", "seed": -1})
    assert build_intervention({"name": "redo", "seed": 2**70}).seed == 2**70


def test_n_layers_too_large_names_the_layer_count(make_dqn):
    with pytest.raises(UserError, match="n_layers=7 but the Q-network has only 3 linear layers"):
        make_dqn([build_intervention({"name": "reset_last_layers", "n_layers": 7})])
