"""Interventions in a whole population: sweeps, per-member task switches, up-front errors, the API.

``test_interventions_events.py`` checks that each intervention's events and loss terms act on a
member as on a PlasticDQN; this file checks how a population runs them: members that differ in
intervention parameters train as their own runs would, each member hears of its own env's task
switches, an intervention that cannot run per member is refused before anything is built, and the
per-member logging and state API that run directories and checkpoints use.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3.common.type_aliases import ReplayBufferSamples

from rlplast.config import config_from_dict
from rlplast.envs import make_env
from rlplast.errors import UserError
from rlplast.interventions import INTERVENTIONS, Intervention, build_intervention
from rlplast.interventions.l2_init import L2Init
from rlplast.population import Population, ReplaySamples


def _member_tensors(pop: Population, i: int) -> list[torch.Tensor]:
    """Member ``i``'s parameters, target parameters, Adam moments and step counts."""
    adam = pop.optimizer
    return [
        *[p.detach()[i] for p in pop.net.params],
        *[p[i] for p in pop.net.target_params],
        *[m[i] for m in adam.exp_avg],
        *[m[i] for m in adam.exp_avg_sq],
        adam.steps[:, i],
    ]


def _roundtrip(state: Any) -> Any:
    """Through torch.save / torch.load(weights_only=True), as a checkpoint would."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


# ------------------------------------------------------------------------------ sweeps in one population
SWEEP = [
    [{"name": "reset_last_layers", "every_steps": 100}],
    [{"name": "reset_last_layers", "every_steps": 200}],
    [{"name": "l2_init", "coef": 1e-2}, {"name": "nc_regularizer", "coef": 0.1}],
    [{"name": "redo", "every_updates": 10, "tau": 0.3, "batch_size": 32}],
]


def test_members_with_different_parameters_train_as_their_own_runs(make_population, make_dqn):
    """A population whose members differ in intervention parameters: each member trains bitwise
    as the one-member population of its seed and interventions (its draws, re-initialisations
    included, depend on nothing else), and its events fire at the steps a PlasticDQN's would."""
    seeds = [0, 1, 2, 3]
    pop = make_population(seeds, interventions=SWEEP, learning_starts=50)
    pop.learn(400)
    for i, (seed, specs) in enumerate(zip(seeds, SWEEP, strict=True)):
        alone = make_population([seed], interventions=[specs], learning_starts=50)
        alone.learn(400)
        for k, (a, b) in enumerate(zip(_member_tensors(pop, i), _member_tensors(alone, 0), strict=True)):
            assert torch.equal(a, b), f"member {i} ({specs}): tensor {k} differs from its own run"
        assert pop.interventions.log_values(i) == alone.interventions.log_values(0)
        model = make_dqn(seed, interventions=[build_intervention(s) for s in specs], learning_starts=50)
        model.learn(400)
        for ours, theirs in zip(pop.interventions.members[i], model.interventions, strict=True):
            if hasattr(theirs, "fires"):
                assert (ours.fires, ours.last_fired_step) == (theirs.fires, theirs.last_fired_step)
            if hasattr(theirs, "checks"):
                assert ours.checks == theirs.checks
    assert [pop.interventions.members[i][0].fires for i in (0, 1)] == [4, 2]


def test_each_member_is_told_of_its_own_task_switches(make_population):
    """Members share the step clock, but a reset at task switches fires when the member's own env
    reports a new task (here the members' envs switch every 60 and every 100 steps)."""
    factories = [
        functools.partial(make_env, "rlplast/PermutedCartPole-v0", {"steps_per_task": n}) for n in (60, 100)
    ]
    spec = {"name": "reset_last_layers", "when": "task_switch"}
    pop = make_population([0, 1], env=factories, interventions=[spec], learning_starts=50)
    pop.learn(300)
    switches = pop.tracker.pop_switches()
    assert [(s.member, s.step) for s in switches if s.member == 0] == [(0, 61), (0, 121), (0, 181), (0, 241)]
    assert [(s.member, s.step) for s in switches if s.member == 1] == [(1, 101), (1, 201)]
    resets = [m[0] for m in pop.interventions.members]
    assert [(r.fires, r.last_fired_step) for r in resets] == [(4, 241), (2, 201)]
    assert [pop.interventions.log_values(i) for i in (0, 1)] == [
        {"intervention/resets": 4.0},
        {"intervention/resets": 2.0},
    ]


class PerMemberL2Init(L2Init):
    """L2-init without its stacked loss: the population calls ``loss`` per member."""

    stacked_loss = Intervention.stacked_loss  # type: ignore[assignment]


def test_l2_init_stacked_loss_equals_per_member_terms_and_plastic_dqn(make_population, make_dqn, monkeypatch):
    """L2-init's stacked loss (one pass over the stacked parameters, a coefficient per member)
    trains every member as the per-member ``loss`` calls do and as PlasticDQN does (to float32
    round-off), and logs the same values."""
    seeds, coefs = [0, 1, 2], [1e-2, 0.3, 1.0]
    stacked = make_population(seeds, interventions=[[{"name": "l2_init", "coef": c}] for c in coefs])
    per_member = make_population(seeds, interventions=[[PerMemberL2Init(coef=c)] for c in coefs])
    models = [
        make_dqn(s, interventions=[build_intervention({"name": "l2_init", "coef": c})])
        for s, c in zip(seeds, coefs, strict=True)
    ]
    for step in range(4):
        g = torch.Generator().manual_seed(step)
        batch = ReplaySamples(
            torch.randn(3, 32, 4, generator=g),
            torch.randint(0, 2, (3, 32, 1), generator=g),
            torch.randn(3, 32, 4, generator=g),
            torch.zeros(3, 32, 1),
            torch.randn(3, 32, 1, generator=g),
        )
        stacked.update(batch)
        per_member.update(batch)
        for i, model in enumerate(models):
            member = ReplayBufferSamples(
                *(t[i] for t in (batch.observations, batch.actions, batch.next_observations)),
                batch.dones[i],
                batch.rewards[i],
            )
            monkeypatch.setattr(model.replay_buffer, "sample", lambda *a, member=member, **k: member)
            model.train(gradient_steps=1, batch_size=32)
    for i, model in enumerate(models):
        reference = [p.detach() for p in model.q_net.parameters()]
        for pop in (stacked, per_member):
            for a, b in zip(pop.member(i).q_net.parameters(), reference, strict=True):
                assert float((a.detach() - b).abs().max()) <= 1e-5 * float(b.abs().max())
        logs = [pop.interventions.log_values(i) for pop in (stacked, per_member)] + [
            model.interventions[0].log_values()
        ]
        for key in ("train/l2_init_loss", "train/l2_init_distance"):
            assert logs[0][key] == pytest.approx(logs[2][key], rel=1e-5) == logs[1][key]
    moved = [
        float((a.detach() - b).abs().max())
        for a, b in zip(stacked.net.params, stacked.init_params, strict=True)
    ]
    assert max(moved) > 0


# ------------------------------------------------------------------------------ refused up front
@dataclass
class AverageMembers(Intervention):
    """A (user) intervention that would need all members at once."""

    name: ClassVar[str] = "test_average_members"
    per_member: ClassVar[bool] = False
    per_member_reason: ClassVar[str] = "it averages the weights of all members"


def test_an_intervention_that_cannot_run_per_member_is_refused_up_front(make_population):
    made: list[int] = []

    def factory() -> gym.Env:
        made.append(1)
        return gym.make("CartPole-v1")

    from_scratch = INTERVENTIONS.get("from_scratch")
    cases = [
        (
            {"name": "from_scratch"},
            f"intervention 'from_scratch' cannot run per member: {from_scratch.per_member_reason}",
        ),
        (
            AverageMembers(),
            "intervention 'test_average_members' cannot run per member: it averages the weights",
        ),
    ]
    for spec, message in cases:
        with pytest.raises(UserError) as err:
            make_population([0, 1], env=factory, interventions=[[], [spec]])
        assert str(err.value).startswith(f"population: {message}") and "\n" not in str(err.value)
        assert err.value.exit_code == 2
    assert not made, "the envs were made before the interventions were checked"
    cfg = config_from_dict({"interventions": [{"name": "from_scratch"}], "train": {"device": "cpu"}})
    with pytest.raises(UserError, match="intervention 'from_scratch' cannot run per member"):
        Population.from_config(cfg, seeds=[0, 1], env=factory)
    assert not made


@pytest.mark.parametrize(
    ("interventions", "message"),
    [
        ([[{"name": "redo"}]], "population: 1 intervention lists for 2 members"),
        ([[{"name": "redo"}], {"name": "redo"}], "not a mix of both"),
        ([{"name": "redo", "tau": -1.0}], "intervention 'redo': tau must be >= 0.0, got -1.0"),
        (["redo"], "an intervention is a config entry (a mapping with a 'name') or an Intervention"),
    ],
)
def test_bad_intervention_lists_are_one_line_errors(make_population, interventions, message):
    with pytest.raises(UserError) as err:
        make_population([0, 1], interventions=interventions)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_instances_are_not_shared_between_members(make_population, make_dqn):
    shared = build_intervention({"name": "l2_init"})
    with pytest.raises(UserError, match="'l2_init' is given twice .*every member needs its own instance"):
        make_population([0, 1], interventions=[[shared], [shared]])
    # Given once for all members, an instance is copied per member.
    pop = make_population([0, 1], interventions=[shared])
    first, second = (m[0] for m in pop.interventions.members)
    assert first is not shared and second is not shared and first is not second
    assert "model" not in shared.__dict__
    model = make_dqn(0, interventions=[shared])  # set up on a single run...
    assert shared.model is model
    with pytest.raises(UserError, match="'l2_init' is already set up on an agent"):
        make_population([0, 1], interventions=[shared])  # ...it cannot join a population


# ------------------------------------------------------------------------------ a member's failure
@dataclass
class Breaks(Intervention):
    """Raises in the hook named by ``where`` once ``after`` updates have passed."""

    where: str = "after_update"
    after: int = 20

    def loss(self, batch: Any, features: torch.Tensor, q_values: torch.Tensor) -> torch.Tensor | None:
        if self.where == "loss" and self.model.n_updates >= self.after:
            raise RuntimeError("broken loss")
        return None

    def after_update(self, n_updates: int, num_timesteps: int) -> None:
        if self.where == "after_update" and n_updates >= self.after:
            raise RuntimeError("broken after_update")


@pytest.mark.parametrize("where", ["loss", "after_update"])
def test_a_failing_intervention_fails_its_member_only(make_population, where):
    """An exception in member 1's intervention marks member 1 failed (``pop.failures``) and stops
    its interventions; member 0 trains on, bitwise as in a population without member 1's trouble."""
    interventions = [
        [{"name": "l2_init", "coef": 1e-2}],
        [Breaks(where=where), {"name": "l2_init", "coef": 1e-2}],
    ]
    pop = make_population([0, 1], interventions=interventions, learning_starts=50)
    pop.learn(300)
    assert set(pop.failures) == {1} and f"broken {where}" in pop.failures[1].error
    assert pop.interventions.failed == {1}
    calm = make_population([0, 1], interventions=[interventions[0], []], learning_starts=50)
    calm.learn(300)
    assert all(
        torch.equal(a, b) for a, b in zip(_member_tensors(pop, 0), _member_tensors(calm, 0), strict=True)
    )


# ------------------------------------------------------------------------------ the API
SPECS = [
    [
        {"name": "redo", "every_updates": 5, "tau": 0.3, "batch_size": 32},
        {"name": "reset_last_layers", "every_steps": 100},
    ],
    [{"name": "l2_init", "coef": 1e-3}],
]


def test_log_values_and_state_per_member(make_population):
    pop = make_population([0, 1], interventions=SPECS, learning_starts=50)
    pop.learn(300)
    assert set(pop.interventions.log_values(0)) == {
        "intervention/redo_dormant_fraction",
        "intervention/redo_units_reset",
        "intervention/redo_checks",
        "intervention/resets",
    }
    assert set(pop.interventions.log_values(1)) == {"train/l2_init_loss", "train/l2_init_distance"}
    assert pop.interventions.log_values(1) == {}  # the means restart after each logging row
    assert len(pop.interventions) == 3

    state = _roundtrip(pop.interventions.state_dict())
    assert [m["names"] for m in state["members"]] == [["redo", "reset_last_layers"], ["l2_init"]]
    fresh = make_population([0, 1], interventions=SPECS, learning_starts=50)
    assert fresh.interventions.members[0][0].checks == 0
    fresh.interventions.load_state_dict(state)
    again = fresh.interventions.state_dict()
    assert again.keys() == state.keys()
    for ours, theirs in zip(again["members"], state["members"], strict=True):
        assert ours["names"] == theirs["names"]
        assert all(
            torch.equal(a, b) for a, b in zip(ours["random_stream"], theirs["random_stream"], strict=True)
        )
    assert fresh.interventions.members[0][0].checks == pop.interventions.members[0][0].checks > 0
    theta0 = fresh.interventions.members[1][0].theta0
    assert all(torch.equal(a, b) for a, b in zip(theta0, pop.interventions.members[1][0].theta0, strict=True))
    # The restored member streams go on where the saved ones stood.
    for i in (0, 1):
        with pop.interventions.random_stream(i):
            expected = torch.rand(4)
        with fresh.interventions.random_stream(i):
            assert torch.equal(torch.rand(4), expected)
    with pytest.raises(ValueError, match="state of interventions"):
        fresh.interventions.load_member_state_dict(1, state["members"][0])


def test_a_population_with_interventions_resumes_exactly(make_population):
    """Population.state_dict + interventions.state_dict (+ the runner's pickled intervention
    objects, which carry the running log means) restore a population that then trains and logs
    bitwise as the uninterrupted one — L2-init's stacked group and the random streams included."""
    import pickle

    import cloudpickle

    from rlplast.population.run import intervention_objects, restore_intervention_objects

    specs = [
        [{"name": "l2_init", "coef": 0.1}, {"name": "reset_last_layers", "every_steps": 150}],
        [
            {"name": "l2_init", "coef": 0.3},
            {"name": "redo", "every_updates": 10, "tau": 0.3},
            {"name": "nc_regularizer"},
        ],
    ]
    first = make_population([0, 1], interventions=specs, learning_starts=50)
    first.learn(200)
    saved = pickle.loads(cloudpickle.dumps((first.state_dict(), first.interventions.state_dict())))
    objects = intervention_objects(first)
    second = make_population([0, 1], interventions=specs, learning_starts=50)
    second.load_state_dict(saved[0])
    second.interventions.load_state_dict(saved[1])
    restore_intervention_objects(second, objects)
    for pop in (first, second):
        pop.learn(200, reset_num_timesteps=False)
    for i in (0, 1):
        assert all(
            torch.equal(a, b)
            for a, b in zip(_member_tensors(first, i), _member_tensors(second, i), strict=True)
        )
        assert first.interventions.log_values(i) == second.interventions.log_values(i)


def test_only_overridden_hooks_are_registered(make_population):
    """An intervention costs nothing in the seams it does not use."""
    pop = make_population([0, 1], interventions=[{"name": "l2_init"}])
    assert len(pop.loss_terms) == 1 and not pop.after_update_hooks and not pop.task_switch_hooks
    pop = make_population([0, 1], interventions=[{"name": "redo"}])
    assert not pop.loss_terms and len(pop.after_update_hooks) == 1 and not pop.task_switch_hooks
    pop = make_population([0, 1], interventions=[[{"name": "reset_last_layers"}], []])
    assert not pop.loss_terms and len(pop.after_update_hooks) == 1 and len(pop.task_switch_hooks) == 1
    pop = make_population([0, 1])
    assert not pop.loss_terms and not pop.after_update_hooks and not pop.task_switch_hooks
    assert pop.interventions.log_values(0) == {} and len(pop.interventions) == 0


def test_from_config_gives_every_member_the_configs_interventions():
    cfg = config_from_dict(
        {
            "interventions": [{"name": "reset_last_layers", "every_steps": 500}, {"name": "l2_init"}],
            "agent": {"buffer_size": 1000},
            "train": {"device": "cpu"},
        }
    )
    pop = Population.from_config(cfg, seeds=[0, 1])
    assert [[iv.name for iv in m] for m in pop.interventions.members] == [
        ["reset_last_layers", "l2_init"]
    ] * 2
    sweep = [[{"name": "l2_init", "coef": c}] for c in (1e-3, 1e-2)]
    pop = Population.from_config(cfg, seeds=[0, 1], interventions=sweep)
    assert [m[0].coef for m in pop.interventions.members] == [1e-3, 1e-2]
    pop.close()


def test_member_view_offers_what_interventions_read(make_population):
    pop = make_population([0, 1], learning_starts=50)
    pop.learn(120)
    view = pop.member(1)
    assert (view.n_updates, view.num_timesteps) == (pop.n_updates, pop.num_timesteps) == (18, 120)
    assert view.n_envs == 1 and view.action_space == pop.action_space and view.device == pop.device
    assert view.replay_size() == 120
    idx = np.array([0, 5, 119])
    obs, actions = view.replay_states(idx, np.zeros(3, dtype=np.int64), normalize=True)
    assert torch.equal(obs, pop.replay.observations[1, idx]) and torch.equal(
        actions, pop.replay.actions[1, idx]
    )
    with pytest.raises(ValueError, match="one env"):
        view.replay_states(idx, 1)
    params = view.parameters_for_loss()
    assert all(p.requires_grad and p.grad_fn is not None for p in params)  # in the stack's graph
    assert all(torch.equal(p, q) for p, q in zip(params, view.q_net.parameters(), strict=True))


def test_member_random_streams(make_population):
    """A member's stream depends on its seed alone, leaves the global RNG alone, and nests."""
    pop = make_population([0, 1])
    alone = make_population([1])
    global_state = torch.get_rng_state()
    with pop.interventions.random_stream(1):
        a = torch.rand(3)
        with pop.interventions.random_stream(1):  # nested: one scope, the draws go on
            b = torch.rand(3)
    with alone.interventions.random_stream(0):
        assert torch.equal(torch.rand(3), a) and torch.equal(torch.rand(3), b)
    with pop.interventions.random_stream(0):
        assert not torch.equal(torch.rand(3), a)
    assert torch.equal(torch.get_rng_state(), global_state)


#: aten ops that make the host wait for the device (as in test_population_device.py).
SYNC_OPS = {"aten._local_scalar_dense", "aten.is_nonzero", "aten.nonzero", "aten.masked_select", "aten.equal"}


def test_interventions_add_no_host_sync_to_updates(make_population):
    """Loss terms and after-update checks between events keep the update path free of
    host-synchronising ops (the engine's discipline; on the CPU the NC regularizer computes in
    NumPy on the tensors' memory, on a GPU in torch on the device)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Spy(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.ops: set[str] = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.add(str(func.overloadpacket))
            return func(*args, **(kwargs or {}))

    specs = [
        [{"name": "l2_init"}, {"name": "reset_last_layers", "every_steps": 10**6}],
        [{"name": "nc_regularizer"}, {"name": "redo", "every_updates": 10**6}],
        [
            {"name": "nc_regularizer", "variant": "quotient"},
            {"name": "shrink_perturb", "when": "task_switch"},
        ],
    ]
    pop = make_population([0, 1, 2], interventions=specs, learning_starts=50)
    pop.learn(100)
    with Spy() as spy:
        pop.train(2)
    assert not spy.ops & SYNC_OPS


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_events_and_losses_on_cuda(make_population, make_dqn):
    """On CUDA a member's re-initialisation draws from its own stream of the device's generator:
    a reset equals PlasticDQN's from the same seed; the loss terms (NC regularizer on the device,
    L2-init) train without error and leave the global generators alone."""
    spec = {"name": "reset_last_layers", "every_steps": 100, "n_layers": 2}
    pop = make_population(
        [0, 1], device="cuda", interventions=[[spec], [{"name": "nc_regularizer"}, {"name": "l2_init"}]]
    )
    model = make_dqn(0, device="cuda", interventions=[build_intervention(spec)])
    torch.manual_seed(9)
    pop.interventions.streams[0].manual_seed(9)
    model.interventions[0].fire()  # the single run draws from the global generators
    cuda_state = torch.cuda.get_rng_state()
    with pop.interventions.random_stream(0):
        pop.interventions.members[0][0].fire()
    assert torch.equal(torch.cuda.get_rng_state(), cuda_state)
    for a, b in zip(pop.member(0).q_net.parameters(), model.q_net.parameters(), strict=True):
        assert a.is_cuda and torch.equal(a, b)
    before = torch.cuda.get_rng_state()
    pop.learn(300)
    assert torch.equal(torch.cuda.get_rng_state(), before)
    assert np.isfinite(pop.pop_train_stats()["train/loss"]).all()
    assert pop.interventions.log_values(1)["train/nc_reg_skipped"] >= 0
