"""Registry-driven checks: every registered intervention trains, round-trips its state and validates input.

New interventions are covered automatically; give them small firing intervals in ``FAST`` if their
defaults would not fire within a 600-step run.
"""

from __future__ import annotations

import io
import math
import re
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from rlplast.errors import UserError
from rlplast.fields import config_field
from rlplast.interventions import (
    INTERVENTIONS,
    Intervention,
    build_intervention,
    output_layer,
    parameter_reference,
    register,
    sync_parameter_tables,
)

# Parameters that make each intervention act within a 600-step CartPole run.
FAST: dict[str, dict[str, Any]] = {
    "reset_last_layers": {"every_steps": 200, "when": "both", "n_layers": 2},
    "full_reset": {"every_steps": 200, "when": "both"},
    "from_scratch": {"every_steps": 200, "when": "both"},
    "shrink_perturb": {"every_steps": 200, "when": "both"},
    "redo": {"every_updates": 20, "batch_size": 64},
    "l2_init": {"coef": 1e-2},
    "nc_regularizer": {"coef": 0.05},
    "weight_clipping": {"kappa": 1.0},
    "hare_tortoise": {"every_steps": 200, "when": "both", "alpha": 0.01},
    "plasticity_injection": {"every_steps": 200, "when": "both"},
    "continual_backprop": {"replacement_rate": 0.01, "maturity_threshold": 20},
    "cchain": {"warmup_updates": 20, "window": 50},
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
    with pytest.raises(UserError, match="parameter 'n_layers' must be an integer, got 1.5"):
        build_intervention({"name": "reset_last_layers", "n_layers": 1.5})
    with pytest.raises(UserError, match="parameter 'every_steps' must be int or None, got 'often'"):
        build_intervention({"name": "reset_last_layers", "every_steps": "often"})


def test_yaml_style_numbers_are_accepted():
    assert build_intervention({"name": "l2_init", "coef": "1e-4"}).coef == pytest.approx(1e-4)
    reset = build_intervention({"name": "reset_last_layers", "every_steps": "1e4"})  # YAML reads 1e4 as text
    assert reset.every_steps == 10_000 and isinstance(reset.every_steps, int)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"name": "nc_regularizer", "coef": -0.05}, "coef must be >= 0"),
        ({"name": "l2_init", "coef": -1.0}, "coef must be >= 0"),
        ({"name": "nc_regularizer", "cap": -1.0}, "cap must be > 0"),
        ({"name": "shrink_perturb", "shrink": 0.0}, r"shrink must be (in|> 0)"),
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

    # rlplast's own interventions: a test that loads a config with plugins may have registered others
    builtin = [name for name in INTERVENTIONS if INTERVENTIONS.get(name).__module__.startswith("rlplast.")]
    return [
        (name, f.name)
        for name in builtin
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


# ---------------------------------------------------------------------------------- field metadata
@dataclass
class _Declared(Intervention):
    """Parameters declared with config_field, plain defaults and an annotation the checker skips."""

    rate: float = config_field(0.5, "a rate", min=0.0, max=1.0, exclusive_min=True)
    mode: str = config_field("a", "a mode", choices=["a", "b"])
    steps: int = 3
    """Plain field: its attribute docstring is its help."""
    shape: tuple[int, int] = (2, 2)


@pytest.fixture
def declared():
    register("test_declared")(_Declared)
    yield "test_declared"
    INTERVENTIONS.unregister("test_declared")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"rate": 0.0}, "intervention 'test_declared': rate must be > 0.0, got 0.0"),
        ({"rate": 2}, "intervention 'test_declared': rate must be <= 1.0, got 2.0"),
        ({"mode": "c"}, "intervention 'test_declared': mode must be one of a, b, got 'c'"),
        ({"steps": "x"}, "intervention 'test_declared': parameter 'steps' must be an integer, got 'x'"),
        ({"rate": ".nan"}, "intervention 'test_declared': parameter 'rate' must be a number, got '.nan'"),
    ],
)
def test_field_metadata_is_checked_by_the_config_checker(declared, params, message):
    with pytest.raises(UserError) as err:
        build_intervention({"name": declared, **params})
    assert str(err.value) == message


def test_unknown_annotations_pass_through_and_good_values_are_coerced(declared):
    built = build_intervention({"name": declared, "rate": 1, "steps": 4.0, "shape": [3, 1]})
    assert built.rate == 1.0 and built.steps == 4 and isinstance(built.steps, int) and built.shape == [3, 1]


def test_parameter_tables_come_from_the_field_metadata(declared):
    assert parameter_reference(declared).splitlines() == [
        "| parameter | type | default | allowed | meaning |",
        "|---|---|---|---|---|",
        "| `rate` | float | `0.5` | > 0.0 and ≤ 1.0 | a rate |",
        "| `mode` | str | `a` | a, b | a mode |",
        "| `steps` | int | `3` |  | Plain field: its attribute docstring is its help. |",
        "| `shape` | tuple[int, int] | `[2, 2]` |  |  |",
    ]


DOC = Path(__file__).resolve().parents[2] / "docs" / "interventions.md"
REGENERATE = (
    'regenerate with: python -c "from pathlib import Path; from rlplast.interventions import '
    "sync_parameter_tables as s; p = Path('docs/interventions.md'); p.write_text(s(p.read_text()))\""
)


def test_the_parameter_tables_of_the_docs_are_current():
    doc = DOC.read_text()
    assert doc == sync_parameter_tables(doc), REGENERATE


@pytest.mark.parametrize("name", INTERVENTIONS.names())
def test_every_intervention_has_a_documented_parameter_table(name):
    assert f"<!-- parameters: {name} -->" in DOC.read_text(), f"add a section for {name}; {REGENERATE}"


# ---------------------------------------------------------------------------------- the helpers
def test_helpers_reach_the_networks_and_the_optimizer(make_dqn):
    intervention = Intervention()
    with pytest.raises(RuntimeError, match=r"call super\(\).setup\(model\) first"):
        _ = intervention.online_net
    model = make_dqn([intervention])
    assert intervention.model is model
    assert intervention.online_net is model.q_net and intervention.target_net is model.q_net_target
    assert intervention.last_layer is model.q_net.q_net[-1]
    assert intervention.target_last_layer is model.q_net_target.q_net[-1]
    assert intervention.last_layer.out_features == 2  # CartPole's actions
    assert intervention.optimizer is model.policy.optimizer
    assert (
        output_layer(
            torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        ).out_features
        == 2
    )


def test_the_documented_example_intervention_builds_and_acts(make_dqn, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    (code,) = [b for b in blocks if '"""mylab/interventions.py' in b]
    module = types.ModuleType("mylab_interventions_from_docs")  # dataclasses look their module up
    monkeypatch.setitem(sys.modules, module.__name__, module)
    try:
        exec(compile(code, str(DOC), "exec"), module.__dict__)  # noqa: S102 - our own docs
        noise = build_intervention({"name": "head_noise", "std": 0.1, "every_updates": 10})
        with pytest.raises(UserError, match="intervention 'head_noise': std must be >= 0.0, got -1.0"):
            build_intervention({"name": "head_noise", "std": -1})
        model = make_dqn([noise])
        model.learn(300)
        assert noise.log_values()["intervention/head_noise_injections"] > 0
        assert torch.equal(model.q_net.q_net[-1].weight, model.q_net_target.q_net[-1].weight)
        assert "| `std` | float | `0.001` | ≥ 0.0 | standard deviation of the noise |" in parameter_reference(
            "head_noise"
        )
    finally:
        INTERVENTIONS.unregister("head_noise")
