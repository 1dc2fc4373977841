"""Weight clipping: every clipped parameter stays within κ/√fan_in after every update."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch

from rlplast.errors import UserError
from rlplast.interventions import Intervention, build_intervention
from rlplast.interventions.weight_clipping import init_bound


@dataclass
class _BoundProbe(Intervention):
    """Runs after the clipping (later in the list): records the largest |θ|/bound of each update."""

    def setup(self, model) -> None:
        super().setup(model)
        self.ratios: list[float] = []

    def after_update(self, n_updates: int, num_timesteps: int) -> None:
        clip = self.model.interventions[0]
        self.ratios.append(max(float(p.detach().abs().max()) / b for p, b in clip.clipped))


def test_bounds_are_kappa_over_sqrt_fan_in_for_weights_and_biases(make_dqn):
    clip = build_intervention({"name": "weight_clipping", "kappa": 2.0})
    model = make_dqn([clip])  # net_arch [32, 32] on CartPole: 4 -> 32 -> 32 -> 2
    expected = [2 / math.sqrt(4)] * 2 + [2 / math.sqrt(32)] * 4
    assert [b for _, b in clip.clipped] == pytest.approx(expected, rel=1e-12)
    assert [p for p, _ in clip.clipped] == list(model.q_net.parameters())


def test_init_bound_is_pytorchs_default_init_bound():
    for layer, fan_in in ((torch.nn.Linear(7, 3), 7), (torch.nn.Conv2d(4, 8, kernel_size=3), 36)):
        assert init_bound(layer) == pytest.approx(1 / math.sqrt(fan_in))
        for _ in range(20):  # the default initialisation draws inside the bound
            layer.reset_parameters()
            assert all(float(p.detach().abs().max()) <= init_bound(layer) for p in layer.parameters())


def test_bounds_hold_after_every_update(make_dqn):
    clip = build_intervention({"name": "weight_clipping", "kappa": 0.5})  # below the init: always active
    probe = _BoundProbe()
    model = make_dqn([clip, probe])
    model.learn(500)
    assert len(probe.ratios) == model.n_updates > 50
    assert max(probe.ratios) <= 1.0
    assert min(probe.ratios) == 1.0  # some parameter sits at its bound after every update
    fraction = model.pop_train_stats()["intervention/weight_clip_fraction"]
    assert 0.0 < fraction < 1.0


def test_clip_last_layer_false_leaves_the_output_layer_alone(make_dqn):
    clip = build_intervention({"name": "weight_clipping", "kappa": 0.1, "clip_last_layer": False})
    model = make_dqn([clip])
    last = model.q_net.q_net[-1]
    clipped = {id(p) for p, _ in clip.clipped}
    assert id(last.weight) not in clipped and id(last.bias) not in clipped and len(clipped) == 4
    with torch.no_grad():
        last.weight.fill_(5.0)
    clip.after_update(1, 1)
    assert float(last.weight.detach().min()) == 5.0


def test_layer_norm_parameters_are_not_clipped(make_dqn):
    clip = build_intervention({"name": "weight_clipping", "kappa": 0.1})
    model = make_dqn([clip], policy_kwargs={"net_arch": [32, 32], "layer_norm": True})
    norms = [m for m in model.q_net.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert norms
    clipped = {id(p) for p, _ in clip.clipped}
    assert not any(id(p) in clipped for m in norms for p in m.parameters())
    clip.after_update(1, 1)
    assert all(float(m.weight.detach().min()) == 1.0 for m in norms)  # LayerNorm gains keep their init


@pytest.mark.parametrize("kappa", [0.0, -1.0])
def test_non_positive_kappa_is_a_user_error(kappa):
    with pytest.raises(UserError, match=rf"intervention 'weight_clipping': kappa must be > 0.0, got {kappa}"):
        build_intervention({"name": "weight_clipping", "kappa": kappa})
