"""Every registered intervention acts on a population member as on a PlasticDQN, and only on it.

For each intervention (registry-driven: a built-in intervention without a case here fails
:func:`test_every_registered_intervention_has_a_case`), a PlasticDQN with the intervention and a
population whose member 1 has it are brought into the same state — parameters, target network,
Adam moments and steps, replay contents, the intervention's own state, the step and update
counters — and then:

1. **events** through the engine's seams (a task switch from ``task_switch_hooks``, an update's
   ``after_update`` from ``after_update_hooks`` at an interval boundary) with the same random
   state (the single run's global torch RNG, the member's own stream): the member's state equals
   the PlasticDQN's bitwise, the other members' state is untouched, and so is the global RNG;
2. **one update** on the same batch (``Population.update`` vs ``PlasticDQN.train``), where loss
   terms act: the member equals the PlasticDQN to float32 round-off (the stacked update differs
   from PlasticDQN's in the last bits, see ``test_population_fidelity.py``), and the other members
   are bitwise those of an equal population without the intervention.

The same two checks run on two user-style interventions written against the documented interface
only (public helpers): the ``head_noise`` example of ``docs/interventions.md`` (an event drawing
random numbers) and :class:`FeaturePull` below (a loss term through ``parameters_for_loss`` and a
feature gradient through ``add_feature_gradient``).

An intervention that acts after every update but has nothing left to do at the events once
training ran (weight clipping: the weights are within their bounds) is in :data:`UPDATES`: its
update check also asserts that it changed the member's weights.
"""

from __future__ import annotations

import re
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest
import torch
from stable_baselines3.common.type_aliases import ReplayBufferSamples

from rlplast.errors import UserError
from rlplast.interventions import INTERVENTIONS, Intervention, build_intervention
from rlplast.population import MemberView, ReplaySamples

#: Parameters that make each intervention act in the events and the update below (case id → spec).
CASES: dict[str, dict[str, Any]] = {
    "reset_last_layers": {"name": "reset_last_layers", "every_steps": 100, "when": "both", "n_layers": 2},
    "full_reset": {"name": "full_reset", "every_steps": 100, "when": "both"},
    "shrink_perturb": {
        "name": "shrink_perturb",
        "every_steps": 100,
        "when": "both",
        "shrink": 0.8,
        "perturb": 0.1,
    },
    "shrink_perturb-copy": {
        "name": "shrink_perturb",
        "every_steps": 100,
        "when": "both",
        "shrink": 0.8,
        "perturb": 0.1,
        "target": "copy",
    },
    "redo": {"name": "redo", "every_updates": 10, "tau": 0.5, "batch_size": 64, "seed": 3},
    "l2_init": {"name": "l2_init", "coef": 0.1},
    "nc_regularizer": {"name": "nc_regularizer", "coef": 0.5},
    "nc_regularizer-quotient": {"name": "nc_regularizer", "coef": 0.5, "variant": "quotient"},
    "weight_clipping": {"name": "weight_clipping", "kappa": 0.5},
    "hare_tortoise": {"name": "hare_tortoise", "every_steps": 70, "when": "both", "alpha": 0.1},
    "hare_tortoise-keep": {
        "name": "hare_tortoise",
        "every_steps": 70,
        "when": "both",
        "alpha": 0.1,
        "target": "keep",
        "reset_optimizer": False,
    },
    "continual_backprop": {
        "name": "continual_backprop",
        "replacement_rate": 0.05,
        "maturity_threshold": 5,
        "decay_rate": 0.9,
    },
    "cchain": {"name": "cchain", "coef": 1000.0, "auto": False, "seed": 2},
}


@dataclass
class FeaturePull(Intervention):
    """A user intervention on public helpers only: ``coef · Σ|θ|`` through ``parameters_for_loss()``
    and the gradient of ``coef/2 · ‖h‖²`` through ``add_feature_gradient()``."""

    coef: float = 0.05

    def loss(self, batch: Any, features: torch.Tensor, q_values: torch.Tensor) -> torch.Tensor | None:
        self.add_feature_gradient(features, self.coef * features.detach())
        self.last = torch.stack([p.abs().sum() for p in self.parameters_for_loss()]).sum().detach()
        return self.coef * torch.stack([p.abs().sum() for p in self.parameters_for_loss()]).sum()

    def log_values(self) -> dict[str, float]:
        last = self.__dict__.pop("last", None)
        return {} if last is None else {"train/feature_pull_l1": float(last)}


def _docs_head_noise() -> type[Intervention]:
    """The ``head_noise`` class of docs/interventions.md's example (registered only while it runs)."""
    doc = Path(__file__).resolve().parents[2] / "docs" / "interventions.md"
    (code,) = [
        b
        for b in re.findall(r"```python\n(.*?)```", doc.read_text(), re.S)
        if '"""mylab/interventions.py' in b
    ]
    module = types.ModuleType("mylab_interventions_for_population")  # dataclasses look their module up
    sys.modules[module.__name__] = module
    try:
        exec(compile(code, str(doc), "exec"), module.__dict__)  # noqa: S102 - our own docs
    finally:
        INTERVENTIONS.unregister("head_noise")
        del sys.modules[module.__name__]
    return module.HeadNoise


#: User-style interventions (instances, not registered): case id → factory.
USER_CASES: dict[str, Callable[[], Intervention]] = {
    "user-head_noise": lambda: _docs_head_noise()(std=0.1, every_updates=10),
    "user-feature_pull": FeaturePull,
}
#: Cases whose events change the network (the others act through the loss only).
EVENTS = {
    "reset_last_layers",
    "full_reset",
    "shrink_perturb",
    "shrink_perturb-copy",
    "redo",
    "user-head_noise",
    "hare_tortoise",
    "hare_tortoise-keep",
    "continual_backprop",
}
#: Cases whose loss term acts in an update.
LOSSES = {"l2_init", "nc_regularizer", "nc_regularizer-quotient", "user-feature_pull", "cchain"}
#: Cases that act after every update but find nothing to do at the events once training ran
#: (weight clipping: the weights are already within their bounds).
UPDATES = {"weight_clipping"}
#: C-CHAIN's automatic coefficient needs the agent's TD targets (``td_target``), which a member
#: view does not offer yet: until it does, a population refuses it (tested below).
MEMBER_TD_TARGETS = callable(getattr(MemberView, "td_target", None))  # (and in MEMBER_VIEW_METHODS)
if MEMBER_TD_TARGETS:
    CASES["cchain-auto"] = {"name": "cchain", "warmup_updates": 10, "window": 100, "seed": 2}
    LOSSES.add("cchain-auto")
SEEDS = [5, 6, 7]
MEMBER = 1


def _per_member_builtins() -> set[str]:
    """rlplast's own registered interventions that run per member (plugins' are not ours to test)."""
    return {
        name
        for name in INTERVENTIONS.names()
        if INTERVENTIONS.get(name).__module__.startswith("rlplast.interventions.")
        and INTERVENTIONS.get(name).per_member
    }


def test_every_registered_intervention_has_a_case():
    assert _per_member_builtins() <= {spec["name"] for spec in CASES.values()}, "add a case to CASES"
    assert set(CASES) | set(USER_CASES) == EVENTS | LOSSES | UPDATES


# ------------------------------------------------------------------------------ state helpers
def _batch(n_members: int, size: int, seed: int) -> ReplaySamples:
    g = torch.Generator().manual_seed(seed)
    return ReplaySamples(
        torch.randn(n_members, size, 4, generator=g),
        torch.randint(0, 2, (n_members, size, 1), generator=g),
        torch.randn(n_members, size, 4, generator=g),
        (torch.rand(n_members, size, 1, generator=g) < 0.2).float(),
        torch.randn(n_members, size, 1, generator=g),
    )


def _member_batch(batch: ReplaySamples, i: int) -> ReplayBufferSamples:
    return ReplayBufferSamples(
        batch.observations[i], batch.actions[i], batch.next_observations[i], batch.dones[i], batch.rewards[i]
    )


def _train_on(model, batch: ReplayBufferSamples, monkeypatch) -> None:
    """PlasticDQN.train for one gradient step on exactly ``batch``."""
    monkeypatch.setattr(model.replay_buffer, "sample", lambda *args, **kwargs: batch)
    model.train(gradient_steps=1, batch_size=batch.observations.shape[0])


@torch.no_grad()
def _copy_model_into_member(model, pop, i: int) -> None:
    """Member ``i`` takes the model's parameters, target, Adam state, replay, counters and the
    state of its interventions."""
    view = pop.member(i)
    for dst, src in zip(view.q_net.parameters(), model.q_net.parameters(), strict=True):
        dst.copy_(src)
    for dst, src in zip(view.q_net_target.parameters(), model.q_net_target.parameters(), strict=True):
        dst.copy_(src)
    opt_state = model.policy.optimizer.state
    for dst, src in zip(view.q_net.parameters(), model.q_net.parameters(), strict=True):
        if src in opt_state:
            view.optimizer.state[dst] = opt_state[src]
        else:
            view.optimizer.state.pop(dst, None)
    n = model.replay_size()
    rb = model.replay_buffer
    pop.replay.observations[i, :n] = torch.as_tensor(rb.observations[:n, 0])
    pop.replay.actions[i, :n] = torch.as_tensor(rb.actions[:n, 0].reshape(-1))
    pop.replay.pos, pop.replay.full = n, False
    pop.num_timesteps, pop.n_updates = model.num_timesteps, model.n_updates
    if pop.interventions.members[i]:  # (the twin population has none)
        for ours, theirs in zip(pop.interventions.members[i], model.interventions, strict=True):
            ours.load_state_dict(theirs.state_dict())


def _member_state(pop, i: int) -> dict[str, list[torch.Tensor]]:
    k = range(len(pop.net.params))
    return {
        "params": [p.detach()[i].clone() for p in pop.net.params],
        "target": [p[i].clone() for p in pop.net.target_params],
        "exp_avg": [pop.optimizer.exp_avg[j][i].clone() for j in k],
        "exp_avg_sq": [pop.optimizer.exp_avg_sq[j][i].clone() for j in k],
        "steps": [pop.optimizer.steps[:, i].clone()],
    }


def _model_state(model) -> dict[str, list[torch.Tensor]]:
    params = list(model.q_net.parameters())
    state = model.policy.optimizer.state
    zero = torch.zeros(())
    return {
        "params": [p.detach().clone() for p in params],
        "target": [p.detach().clone() for p in model.q_net_target.parameters()],
        "exp_avg": [state[p]["exp_avg"].clone() if p in state else torch.zeros_like(p) for p in params],
        "exp_avg_sq": [state[p]["exp_avg_sq"].clone() if p in state else torch.zeros_like(p) for p in params],
        "steps": [torch.stack([state[p]["step"].float() if p in state else zero for p in params])],
    }


def _assert_states(ours: dict, theirs: dict, what: str, exact: bool) -> None:
    for key in ours:
        for k, (a, b) in enumerate(zip(ours[key], theirs[key], strict=True)):
            if exact or key == "steps":
                assert torch.equal(a, b), f"{what}: {key}[{k}] differs"
            else:
                scale = float(b.abs().max()) if b.numel() else 0.0
                diff = float((a - b).abs().max()) if b.numel() else 0.0
                assert diff <= 1e-5 * scale or diff == 0.0, (
                    f"{what}: {key}[{k}] differs by {diff:.3g} at {scale:.3g}"
                )


def _same_logs(a: dict[str, float], b: dict[str, float], rel: float = 0.0) -> bool:
    if a.keys() != b.keys():
        return False
    return all(
        x == pytest.approx(y, rel=rel, nan_ok=True) for x, y in zip(a.values(), b.values(), strict=True)
    )


def _setup(case: str, make_population, make_dqn, monkeypatch):
    """A PlasticDQN with the case's intervention, a population whose member 1 has it, a twin
    population without interventions, all three in the same state."""
    if case in USER_CASES:
        make: Callable[[], Intervention] = USER_CASES[case]
    else:
        spec = CASES[case]
        make = lambda: build_intervention(spec)  # noqa: E731
    model = make_dqn(SEEDS[MEMBER], interventions=[make()])
    model.learn(300)  # replay contents, Adam state and intervention state of a real run
    pop = make_population(SEEDS, interventions=[[], [make()], []])
    twin = make_population(SEEDS)
    for p in (pop, twin):
        for step in range(3):  # the other members get an Adam state of their own
            p.update(_batch(len(SEEDS), 32, seed=100 + step))
        _copy_model_into_member(model, p, MEMBER)
    for intervention in (*model.interventions, *pop.interventions.members[MEMBER]):
        intervention.log_values()  # logged means start afresh (their histories differ)
    return model, pop, twin


# ------------------------------------------------------------------------------ the tests
@pytest.mark.parametrize("case", [*sorted(CASES), *sorted(USER_CASES)])
def test_events_act_on_the_member_as_on_plastic_dqn(case, make_population, make_dqn, monkeypatch):
    model, pop, _ = _setup(case, make_population, make_dqn, monkeypatch)
    (ours,) = pop.interventions.members[MEMBER]
    (theirs,) = model.interventions
    _assert_states(_member_state(pop, MEMBER), _model_state(model), "before the events", exact=True)
    others = {i: _member_state(pop, i) for i in range(len(SEEDS)) if i != MEMBER}
    before = _model_state(model)

    torch.manual_seed(1234)  # the single run draws from the global RNG...
    pop.interventions.streams[MEMBER].manual_seed(1234)  # ...the member from its own stream
    # A task switch, then an update's after_update at the next interval boundary (a ReDo check).
    step, n_updates = 400, 60
    model.notify_task_switch(1)
    model.num_timesteps = step
    for intervention in model.interventions:
        intervention.after_update(n_updates, step)
    global_rng = torch.get_rng_state()
    for hook in pop.task_switch_hooks:
        hook(MEMBER, 1)
    pop.num_timesteps = step
    for hook in pop.after_update_hooks:
        hook(n_updates)
    assert torch.equal(torch.get_rng_state(), global_rng), "the member's draws came from the global RNG"

    _assert_states(_member_state(pop, MEMBER), _model_state(model), f"{case} member", exact=True)
    for i, state in others.items():
        _assert_states(_member_state(pop, i), state, f"{case}: member {i}", exact=True)
    assert _same_logs(ours.log_values(), theirs.log_values())
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    changed = any(
        not torch.equal(a, b) for a, b in zip(_model_state(model)["params"], before["params"], strict=True)
    )
    assert changed is (case in EVENTS), (
        "the events should change exactly the event-style interventions' networks"
    )


@pytest.mark.parametrize("case", [*sorted(CASES), *sorted(USER_CASES)])
def test_an_update_acts_on_the_member_as_on_plastic_dqn(case, make_population, make_dqn, monkeypatch):
    model, pop, twin = _setup(case, make_population, make_dqn, monkeypatch)
    (ours,) = pop.interventions.members[MEMBER]
    (theirs,) = model.interventions
    batch = _batch(len(SEEDS), 32, seed=7)
    pop.interventions.streams[MEMBER].manual_seed(4321)  # an event in the update (continual_backprop)
    pop.update(batch)
    twin.update(batch)
    torch.manual_seed(4321)  # ...draws the same numbers in the single run
    _train_on(model, _member_batch(batch, MEMBER), monkeypatch)

    _assert_states(_member_state(pop, MEMBER), _model_state(model), f"{case} member", exact=False)
    for i in range(len(SEEDS)):
        if i != MEMBER:  # the member's terms reach no other member
            _assert_states(_member_state(pop, i), _member_state(twin, i), f"{case}: member {i}", exact=True)
    assert _same_logs(ours.log_values(), theirs.log_values(), rel=1e-5)
    if case in LOSSES:  # the term acted: the member differs from the twin's member without it
        ours_m, plain = _member_state(pop, MEMBER)["exp_avg"], _member_state(twin, MEMBER)["exp_avg"]
        assert max(float((a - b).abs().max()) for a, b in zip(ours_m, plain, strict=True)) > 1e-4
    if case in UPDATES:  # the after-update step acted: the member's weights differ from the twin's
        ours_p, plain = _member_state(pop, MEMBER)["params"], _member_state(twin, MEMBER)["params"]
        assert not all(torch.equal(a, b) for a, b in zip(ours_p, plain, strict=True))


# ------------------------------------------------------------------------------ refused up front
def test_plasticity_injection_is_refused_before_anything_is_built(make_population):
    made: list[int] = []

    def factory() -> gym.Env:
        made.append(1)
        return gym.make("CartPole-v1")

    injection = INTERVENTIONS.get("plasticity_injection")
    assert not injection.per_member
    with pytest.raises(UserError) as err:
        make_population([0, 1], env=factory, interventions=[{"name": "plasticity_injection"}])
    assert str(err.value) == (
        f"population: intervention 'plasticity_injection' cannot run per member: {injection.per_member_reason}"
    )
    assert err.value.exit_code == 2 and not made


@pytest.mark.skipif(MEMBER_TD_TARGETS, reason="member views offer td_target: the cchain-auto case runs")
def test_cchain_automatic_coefficient_is_refused_before_anything_is_built(make_population):
    made: list[int] = []

    def factory() -> gym.Env:
        made.append(1)
        return gym.make("CartPole-v1")

    with pytest.raises(UserError) as err:
        make_population(SEEDS, env=factory, interventions=[[], [{"name": "cchain"}], []])
    assert str(err.value) == (
        "population: intervention 'cchain' cannot run per member with these parameters: it needs the "
        "agent's td_target(), which a population member does not offer"
    )
    assert err.value.exit_code == 2 and not made
    make_population(SEEDS, interventions=[{"name": "cchain", "auto": False}])  # a fixed λ runs per member


def test_the_method_pack_adds_no_host_sync_to_updates(make_population):
    """Weight clipping, Hare & Tortoise between resets, continual backprop between replacements
    and C-CHAIN's term keep the update path free of host-synchronising ops."""
    from torch.utils._python_dispatch import TorchDispatchMode

    sync_ops = {
        "aten._local_scalar_dense",
        "aten.is_nonzero",
        "aten.nonzero",
        "aten.masked_select",
        "aten.equal",
    }

    class Spy(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.ops: set[str] = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.add(str(func.overloadpacket))
            return func(*args, **(kwargs or {}))

    specs = [
        [{"name": "weight_clipping"}, {"name": "cchain", "auto": False}],
        [{"name": "hare_tortoise", "every_steps": 10**6}, {"name": "continual_backprop"}],
        [{"name": "cchain", "auto": False, "coef": 1.0, "batch_size": 8}],
    ]
    pop = make_population([0, 1, 2], interventions=specs, learning_starts=50)
    pop.learn(100)
    with Spy() as spy:
        pop.train(2)
    assert not spy.ops & sync_ops
    assert not pop.failures


def test_a_population_with_the_method_pack_resumes_exactly(make_population):
    """Population.state_dict + interventions.state_dict + the runner's pickled intervention objects
    restore weight clipping, Hare & Tortoise, continual backprop and C-CHAIN exactly."""
    import pickle

    import cloudpickle

    from rlplast.population.run import intervention_objects, restore_intervention_objects

    specs = [
        [
            {"name": "weight_clipping", "kappa": 0.5},
            {"name": "hare_tortoise", "every_steps": 150, "alpha": 0.05},
        ],
        [
            {"name": "continual_backprop", "replacement_rate": 0.02, "maturity_threshold": 10},
            {"name": "cchain", "auto": False, "coef": 10.0},
        ],
    ]

    def tensors(pop, i: int) -> list[torch.Tensor]:
        adam = pop.optimizer
        return [
            *[p.detach()[i] for p in pop.net.params],
            *[p[i] for p in pop.net.target_params],
            *[m[i] for m in adam.exp_avg],
            *[m[i] for m in adam.exp_avg_sq],
            adam.steps[:, i],
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
    assert not first.failures and not second.failures
    assert first.interventions.members[1][0].units_replaced > 0
    for i in (0, 1):
        assert all(torch.equal(a, b) for a, b in zip(tensors(first, i), tensors(second, i), strict=True))
        assert first.interventions.log_values(i) == second.interventions.log_values(i)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"name": "plasticity_injection"}, "intervention 'plasticity_injection' cannot run per member"),
        pytest.param(
            {"name": "cchain"},
            "intervention 'cchain' cannot run per member with these parameters",
            marks=pytest.mark.skipif(MEMBER_TD_TARGETS, reason="member views offer td_target"),
        ),
    ],
)
def test_the_population_run_check_refuses_them_before_writing(spec, message):
    """What ``compare --engine population`` runs in the parent before anything is written."""
    from rlplast.config import config_from_dict
    from rlplast.population.run import check_population

    cfg = config_from_dict(
        {"env": {"id": "CartPole-v1"}, "interventions": [spec], "train": {"device": "cpu"}}
    )
    with pytest.raises(UserError, match=message) as err:
        check_population([cfg])
    assert "\n" not in str(err.value) and err.value.exit_code == 2
    fixed = {"env": {"id": "CartPole-v1"}, "interventions": [{"name": "cchain", "auto": False}]}
    check_population([config_from_dict({**fixed, "train": {"device": "cpu"}})])


def test_member_view_methods_are_those_of_member_view():
    """The list a population checks ``model_needs`` against is MemberView's own."""
    from rlplast.population.interventions import MEMBER_VIEW_METHODS

    assert all(callable(getattr(MemberView, m, None)) for m in MEMBER_VIEW_METHODS)
    for method in ("td_target", "replay_sample"):  # PlasticDQN's accessors a view may gain
        assert hasattr(MemberView, method) == (method in MEMBER_VIEW_METHODS), (
            f"MemberView.{method}: update MEMBER_VIEW_METHODS in rlplast/population/interventions.py"
        )
