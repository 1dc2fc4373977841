"""Member views: ordinary QNetworks aliasing one member's slices; metrics run on them unchanged."""

from __future__ import annotations

import copy
import math

import torch

from rlplast.metrics import MetricSuite


def test_in_place_changes_through_a_view_change_exactly_that_member(make_population):
    pop = make_population([0, 1, 2])
    before = [p.detach().clone() for p in pop.net.params]
    targets_before = [p.clone() for p in pop.net.target_params]
    view = pop.member(1)
    assert view.q_net is pop.member(1).q_net  # made once
    with torch.no_grad():
        for p in view.q_net.parameters():
            p.mul_(2.0).add_(1.0)
        view.q_net_target.q_net[-1].weight.zero_()
    for stacked, old in zip(pop.net.params, before, strict=True):
        assert torch.equal(stacked.detach()[1], old[1] * 2.0 + 1.0)
        assert torch.equal(stacked.detach()[0], old[0]) and torch.equal(stacked.detach()[2], old[2])
    last_weight = pop.net.names.index("q_net.4.weight")
    for k, (stacked, old) in enumerate(zip(pop.net.target_params, targets_before, strict=True)):
        expected = torch.zeros_like(old[1]) if k == last_weight else old[1]
        assert torch.equal(stacked[1], expected) and torch.equal(stacked[0], old[0])
    # A layer's own initialiser (what reset interventions call) re-draws only member 1's slice.
    torch.manual_seed(0)
    view.q_net.q_net[0].reset_parameters()
    assert not torch.equal(pop.net.params[0].detach()[1], before[0][1] * 2.0 + 1.0)
    assert torch.equal(pop.net.params[0].detach()[0], before[0][0])


def test_view_structure_matches_plastic_dqn(make_population, make_dqn):
    """Same module tree and parameter names as PlasticDQN's q_net; the last module is the head."""
    pop = make_population([0])
    view, model = pop.member(0), make_dqn(0)
    assert [n for n, _ in view.q_net.named_parameters()] == [n for n, _ in model.q_net.named_parameters()]
    assert type(view.q_net) is type(model.q_net)
    assert isinstance(view.q_net.q_net[-1], torch.nn.Linear)
    assert view.policy.q_net is view.q_net and view.policy.optimizer is view.optimizer


def test_views_see_training_and_forward_like_the_stack(make_population):
    pop = make_population([0, 1], learning_starts=40)
    pop.learn(120)
    obs = pop.replay.observations[:, :64]
    stacked = pop.net.forward(obs, pop.net.online)
    target = pop.net.forward(obs, pop.net.target)
    for i in range(2):
        with torch.no_grad():
            assert torch.equal(pop.member(i).q_net(obs[i]), stacked[i])  # baddbmm == F.linear (CPU)
            assert torch.equal(pop.member(i).q_net_target(obs[i]), target[i])


def test_optimizer_state_view_clears_one_member(make_population):
    pop = make_population([0, 1], learning_starts=20)
    pop.learn(60)
    view = pop.member(0)
    head = list(view.q_net.q_net[-1].parameters())
    assert all(p in view.optimizer.state for p in head)
    for p in head:  # what rlplast's reset intervention does to the optimizer
        view.optimizer.state.pop(p, None)
    k = [pop.net.names.index("q_net.4.weight"), pop.net.names.index("q_net.4.bias")]
    assert pop.optimizer.steps[k, 0].tolist() == [0.0, 0.0]
    assert pop.optimizer.steps[k, 1].tolist() == [float(pop.n_updates)] * 2
    assert bool(pop.optimizer.exp_avg[k[0]][0].abs().sum() == 0)
    assert bool(pop.optimizer.exp_avg[k[0]][1].abs().sum() > 0)
    assert pop.optimizer.steps[0, 0] == pop.n_updates  # other layers keep their state
    assert view.optimizer.param_groups[0]["params"] == list(view.q_net.parameters())


def _same(a: dict[str, float], b: dict[str, float]) -> bool:
    return a.keys() == b.keys() and all((math.isnan(a[k]) and math.isnan(b[k])) or a[k] == b[k] for k in a)


def test_metric_suite_runs_on_a_member_view(make_population):
    """MetricSuite(...).compute on a member view equals the same call on an equal standalone
    network (with the member's initial parameters for the distance-from-init metrics)."""
    pop = make_population([0, 1], learning_starts=50)
    pop.learn(300)

    def suite() -> MetricSuite:  # one per call: a metric may keep state between calls (e.g. churn)
        return MetricSuite(names=["all"], n_min=5, probe_steps=20, probe_batch_size=64)

    obs = pop.replay.observations[1, :256]
    actions = pop.replay.actions[1, :256]
    view = pop.member(1)
    standalone = copy.deepcopy(view.q_net)
    assert all(
        a.data_ptr() != b.data_ptr()
        for a, b in zip(standalone.parameters(), view.q_net.parameters(), strict=True)
    )
    init = [t.clone() for t in view.init_params]
    on_view = suite().compute(view.q_net, obs, taken_actions=actions, init_params=view.init_params)
    on_copy = suite().compute(standalone, obs, taken_actions=actions, init_params=init)
    assert len(on_view) > 10 and _same(on_view, on_copy)
    assert any(k.startswith("collapse/") for k in on_view) and any(
        k.startswith("plasticity/") for k in on_view
    )
    # The view's values are member 1's, not member 0's.
    other = suite().compute(
        pop.member(0).q_net, obs, taken_actions=actions, init_params=pop.member(0).init_params
    )
    assert not _same(on_view, other)
