"""The method pack's agent options in the population engine: Double DQN, AdamW, LayerNorm, CReLU, TRAC.

Each option, from the same parameters and batches, updates every member as PlasticDQN with that
option updates it (the first update's loss and gradient norm bitwise, the rest to float32
round-off, as ``test_population_fidelity.py`` explains); each runs from its method overlay with
run directories, a member trains bitwise as the one-member population of its seed, and TRAC's
state checkpoints and resumes exactly. Member views give PlasticDQN's ``td_target`` and
``replay_sample``, so the TD-loss metrics (``grama``, ``curvature``) compute per member.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from rlplast.agents import PlasticDQN
from rlplast.agents.layers import CReLU
from rlplast.errors import TrainingStopped, UserError
from rlplast.population import Population
from rlplast.population.run import MemberModel, resume_population, run_population
from rlplast.runlog import WALL_CLOCK_COLUMNS, read_metrics_csv

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import REPO, tiny_overrides  # noqa: E402

sys.path.append(str(Path(__file__).resolve().parent))
from test_population_fidelity import (  # noqa: E402
    _assert_members_equal,
    _batch,
    _close,
    _member_batch,
    _train_on,
)

#: The options of the population tests' conftest (``AGENT_OPTIONS``; checked below).
OPTIONS = ["all", "crelu", "double_dqn", "layer_norm", "layer_norm_wd", "trac", "trac_wd"]
#: The method overlays of the options (configs/methods/<name>.yaml).
OVERLAYS = ("double_dqn", "layer_norm", "layer_norm_wd", "crelu", "trac")


def _assert_trac_equal(pop: Population, models: list[PlasticDQN]) -> None:
    """Each member's TRAC scale, θ_ref and θ_base equal its model's TRACAdam state (round-off)."""
    trac = pop.optimizer.trac
    assert trac is not None
    for i, model in enumerate(models):
        state = model.policy.optimizer.state
        theirs = float(model.policy.optimizer.scale())
        # S is a float64 function of h = <g, Δ>, whose float32 gradients agree to round-off.
        assert float(trac.scale[i]) == pytest.approx(theirs, rel=1e-5, abs=1e-300), f"member {i} scale"
        for k, p in enumerate(model.q_net.parameters()):
            if p not in state:
                assert float(pop.optimizer.steps[k, i]) == 0.0
                continue
            _close(trac.refs[k][i], state[p]["trac_ref"], f"member {i} θ_ref {k}")
            _close(trac.bases[k][i], state[p]["trac_base"], f"member {i} θ_base {k}")


def _dqn_targets(pop: Population, batch) -> torch.Tensor:
    """DQN's (not Double DQN's) targets of the population's networks."""
    with torch.no_grad():
        next_q = pop.net.forward(batch.next_observations, pop.net.target).max(dim=2).values.unsqueeze(-1)
    return batch.rewards + (1 - batch.dones) * pop.settings.gamma * next_q


# ------------------------------------------------------------------------------ fidelity
def test_options_are_the_conftests(agent_options):
    assert agent_options == OPTIONS


@pytest.mark.parametrize("option", OPTIONS)
def test_updates_equal_plastic_dqn_with_the_option(
    option, make_population, make_dqn, monkeypatch, option_kwargs
):
    """From the same parameters and batches, each member's targets (bitwise), losses, gradient
    norms, parameters, Adam moments and steps (and TRAC's θ_ref, θ_base and scale) follow its
    PlasticDQN with the option; midway member 0's first layer is changed in place (an
    intervention), member 1's whole optimizer state and member 2's last-layer state are cleared."""
    seeds = [0, 1, 2]
    kwargs = option_kwargs(option)
    pop = make_population(seeds, **kwargs)
    models = [make_dqn(s, **kwargs) for s in seeds]
    for i, model in enumerate(models):  # the same policy classes, the same initial networks
        for a, b in zip(pop.member(i).q_net.parameters(), model.q_net.parameters(), strict=True):
            assert torch.equal(a, b)
    modules = {type(m) for m in pop.member(0).q_net.modules()}
    pk = kwargs["policy_kwargs"]
    assert (nn.LayerNorm in modules) == bool(pk.get("layer_norm"))
    assert (CReLU in modules) == (pk["activation_fn"] is CReLU)
    assert (pop.optimizer.trac is not None) == ("TRAC" in getattr(pk.get("optimizer_class"), "__name__", ""))
    assert pop.optimizer.weight_decay == pk["optimizer_kwargs"].get("weight_decay", 0.0)
    for step in range(6):
        batch = _batch(len(seeds), 32, seed=step)
        targets = pop.td_target(batch)
        for i, model in enumerate(models):
            expected = model.td_target(_member_batch(batch, i))
            assert torch.equal(targets[i], expected), f"member {i} targets at update {step}"
            assert torch.equal(pop.member(i).td_target(_member_batch(batch, i)), expected)
        losses = pop.update(batch)
        for i, model in enumerate(models):
            _train_on(model, _member_batch(batch, i), monkeypatch)
            stats = model.pop_train_stats()
            loss, norm = float(losses[i]), float(pop.last_grad_norms[i])
            if step == 0:  # same parameters, same batch: the same arithmetic
                assert (loss, norm) == (stats["train/loss"], stats["train/grad_norm"]), f"member {i}"
            assert loss == pytest.approx(stats["train/loss"], rel=1e-6), f"loss {i} at update {step}"
            assert norm == pytest.approx(stats["train/grad_norm"], rel=1e-6), f"norm {i} at update {step}"
        _assert_members_equal(pop, models)
        if pop.optimizer.trac is not None:
            _assert_trac_equal(pop, models)
        if step == 1:
            with torch.no_grad():
                pop.member(0).q_net.q_net[0].weight.mul_(0.9)
                models[0].q_net.q_net[0].weight.mul_(0.9)
        if step == 2:
            pop.member(1).optimizer.state.clear()
            models[1].policy.optimizer.state.clear()
            last = list(models[2].q_net.q_net[-1].parameters())
            last_view = list(pop.member(2).q_net.q_net[-1].parameters())
            for p, v in zip(last, last_view, strict=True):
                models[2].policy.optimizer.state.pop(p)
                pop.member(2).optimizer.state.pop(v)
    stats = pop.pop_train_stats()
    assert ("train/trac_scale" in stats) == (pop.optimizer.trac is not None)


def test_double_dqn_targets_select_with_the_online_network(make_population, option_kwargs):
    """Double DQN: the online network's argmax on s', evaluated by the target network; not DQN's max."""
    pop = make_population([0, 1], **option_kwargs("double_dqn"))
    with torch.no_grad():  # online and target networks that disagree
        for p in pop.net.target_params:
            p.add_(0.5 * torch.randn_like(p))
    batch = _batch(2, 64, seed=3)
    with torch.no_grad():
        q_online = pop.net.forward(batch.next_observations, pop.net.online)
        q_target = pop.net.forward(batch.next_observations, pop.net.target)
    chosen = torch.gather(q_target, 2, q_online.argmax(dim=2, keepdim=True))
    expected = batch.rewards + (1 - batch.dones) * pop.settings.gamma * chosen
    assert torch.equal(pop.td_target(batch), expected)
    assert not torch.equal(pop.td_target(batch), _dqn_targets(pop, batch))
    pop.close()


def test_layer_norm_forward_is_nn_layer_norms_bitwise(make_population, option_kwargs):
    """The stacked LayerNorm (with CReLU after it) gives each member's nn.LayerNorm network's Q-values."""
    pop = make_population([0, 1, 2], **option_kwargs("all"))
    with torch.no_grad():
        for p in pop.net.params:  # LayerNorm's γ, β away from their initial 1, 0
            p.add_(0.1 * torch.randn_like(p))
    obs = torch.randn(3, 64, 4)
    q = pop.net.forward(obs, pop.net.online)
    for i in range(3):
        with torch.no_grad():
            assert torch.equal(q[i], pop.member(i).q_net(obs[i]))


# ------------------------------------------------------------------------------ member independence
@pytest.mark.parametrize("option", OPTIONS)
def test_a_member_trains_as_a_population_of_one_with_the_option(option, make_population, option_kwargs):
    """Member 1 of [0, 1, 2] and the population [1] end bitwise equal: networks, Adam, TRAC."""
    kwargs = option_kwargs(option)
    pop = make_population([0, 1, 2], **kwargs)
    alone = make_population([1], **kwargs)
    pop.learn(400)
    alone.learn(400)

    def state(p: Population, i: int) -> list[torch.Tensor]:
        a = p.optimizer
        out = [*(t.detach()[i] for t in p.net.params), *(t[i] for t in p.net.target_params)]
        out += [*(m[i] for m in a.exp_avg), *(m[i] for m in a.exp_avg_sq), a.steps[:, i]]
        if a.trac is not None:
            t = a.trac
            out += [*(r[i] for r in t.refs), *(b[i] for b in t.bases), t.v[i], t.sigma[i], t.s[i], t.scale[i]]
        return out

    assert pop.n_updates == alone.n_updates > 50
    assert all(torch.equal(a, b) for a, b in zip(state(pop, 1), state(alone, 0), strict=True))
    if pop.optimizer.trac is not None:
        assert bool((pop.optimizer.trac.scale > 0).all())
    pop.close()
    alone.close()


# ------------------------------------------------------------------------------ runs from the overlays
def _configs(option_config, method: str, seeds, steps: int, extra=()) -> list:
    base = [*tiny_overrides(steps, metrics=True), "output.tensorboard=false", "checkpoint.every_steps=100"]
    overrides = [*base, "metrics.names=[all, grama, curvature]", *extra]
    path = REPO / "configs" / "permuted_cartpole.yaml"
    return [
        option_config(method, path, [*overrides, "env.kwargs.steps_per_task=300", f"train.seed={s}"])
        for s in seeds
    ]


def _rows(run: Path) -> list[dict[str, str]]:
    return [
        {k: v for k, v in r.items() if k not in WALL_CLOCK_COLUMNS}
        for r in read_metrics_csv(run / "metrics.csv")
    ]


@pytest.mark.parametrize("method", OVERLAYS)
def test_method_overlay_trains_as_a_population_and_writes_run_dirs(method, tmp_path, option_config):
    """``Population.from_config`` with the overlay trains; every member writes its run directory
    with a single run's columns (TRAC's ``train/trac_scale`` included), and the TD-loss metrics
    (grama, curvature) have values."""
    from rlplast.population.run import check_population

    cfgs = _configs(option_config, method, [0, 1], steps=400)
    check_population(cfgs)  # nothing refused any more
    pop = Population.from_config(cfgs[0], [0, 1])
    assert pop.settings.double_dqn == cfgs[0].agent.double_dqn
    pop.close()
    dirs = [tmp_path / f"m-s{s}" for s in (0, 1)]
    result = run_population(cfgs, dirs, tmp_path / "pop", quiet=True)
    assert [m.ok for m in result.members] == [True, True], [m.error for m in result.members]
    columns = set(read_metrics_csv(dirs[0] / "metrics.csv")[0])
    if method == "trac":
        from rlplast.train import run_training

        run_training(cfgs[1], tmp_path / "single", quiet=True)
        single = (tmp_path / "single" / "metrics.csv").read_text().splitlines()[0]
        assert (dirs[1] / "metrics.csv").read_text().splitlines()[0] == single
        assert "train/trac_scale" in columns
    for d in dirs:
        summary = json.loads((d / "summary.json").read_text())
        assert summary["engine"] == "population" and summary["steps"] == 400
        last = read_metrics_csv(d / "metrics.csv")[-1]
        assert math.isfinite(float(last["train/loss"]))
        for key in ("plasticity/grama_fraction", "plasticity/hessian_max_eig"):
            assert math.isfinite(float(last[key])), key
        assert not any("grama" in note or "curvature" in note for note in summary.get("notes", []))
        assert (d / "model.zip").is_file()


def test_td_loss_metrics_of_a_member_equal_a_single_runs(make_population, option_kwargs):
    """grama and curvature of a member (Double DQN targets, LayerNorm, CReLU) equal what the
    metric suite computes for a PlasticDQN with the same networks and replay contents: member views
    draw replay_sample's batch as PlasticDQN does and give its td_target."""
    from rlplast.callbacks import MetricsProbe
    from rlplast.config import MetricsConfig

    kwargs = option_kwargs("all")
    pop = make_population([4, 5], learning_starts=50, **kwargs)
    pop.learn(300)
    cfg = MetricsConfig(names=["grama", "curvature", "dormant"], probe_size=128)
    for i, seed in enumerate(pop.seeds):
        member = MemberModel(pop, i, 100)
        model = PlasticDQN("MlpPolicy", "CartPole-v1", seed=seed, buffer_size=400, device="cpu", **kwargs)
        view = pop.member(i)
        with torch.no_grad():
            for p, q in zip(model.q_net.parameters(), view.q_net.parameters(), strict=True):
                p.copy_(q)
            for p, q in zip(model.q_net_target.parameters(), view.q_net_target.parameters(), strict=True):
                p.copy_(q)
        buffer, replay, n = model.replay_buffer, pop.replay, pop.replay.size()
        buffer.observations[:n, 0] = replay.observations[i, :n].numpy()
        buffer.next_observations[:n, 0] = replay.next_observations[i, :n].numpy()
        buffer.actions[:n, 0, 0] = replay.actions[i, :n].numpy()
        for name in ("rewards", "dones", "timeouts"):
            getattr(buffer, name)[:n, 0] = getattr(replay, name)[i, :n].numpy()
        buffer.pos, buffer.full = n, False
        ours = view.replay_sample(64, seed=9)
        theirs = model.replay_sample(64, seed=9)
        for a, b in zip(ours, theirs, strict=True):
            assert (a is None and b is None) or torch.equal(a, b)
        assert torch.equal(view.td_target(ours), model.td_target(theirs))
        a = MetricsProbe(cfg, seed=seed, echo=False).compute(member, with_probe=False)
        b = MetricsProbe(cfg, seed=seed, echo=False).compute(model, with_probe=False)
        assert a.keys() == b.keys() and math.isfinite(a["plasticity/hessian_max_eig"])
        assert all(a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in a), a
    pop.close()


def test_replay_sample_draws_n_step_batches_like_plastic_dqn(make_population, make_dqn):
    """With n-step replay a member's replay_sample gives PlasticDQN's batch (returns, discounts)."""
    pop = make_population([3], n_steps=3, learning_starts=50)
    pop.learn(200)
    model = make_dqn(3, n_steps=3, buffer_size=pop.replay.buffer_size)
    buffer, replay, n = model.replay_buffer, pop.replay, pop.replay.size()
    buffer.observations[:n, 0] = replay.observations[0, :n].numpy()
    buffer.next_observations[:n, 0] = replay.next_observations[0, :n].numpy()
    buffer.actions[:n, 0, 0] = replay.actions[0, :n].numpy()
    for name in ("rewards", "dones", "timeouts"):
        getattr(buffer, name)[:n, 0] = getattr(replay, name)[0, :n].numpy()
    buffer.pos, buffer.full = replay.pos, replay.full
    ours, theirs = pop.member(0).replay_sample(64, seed=3), model.replay_sample(64, seed=3)
    assert ours.discounts is not None
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a, b)
    pop.close()


# ------------------------------------------------------------------------------ checkpoints
def test_trac_population_state_round_trip_resumes_bitwise(make_population, option_kwargs):
    """Population.state_dict (pickled, as a checkpoint keeps it) holds TRAC's state: a population
    loaded from it continues exactly as the original."""
    import pickle

    kwargs = option_kwargs("all")
    first = make_population([0, 1], **kwargs)
    first.learn(300)
    saved = pickle.loads(pickle.dumps(first.state_dict()))
    assert set(saved["optimizer"]["trac"]) >= {"refs", "bases", "v", "sigma", "s", "scale"}
    second = make_population([0, 1], **kwargs)
    second.load_state_dict(saved)
    for pop in (first, second):
        pop.learn(200, reset_num_timesteps=False)
    a, b = first.optimizer, second.optimizer
    assert a.trac is not None and b.trac is not None
    pairs = [
        *zip(first.net.params, second.net.params, strict=True),
        *zip(a.trac.refs, b.trac.refs, strict=True),
        *zip(a.trac.bases, b.trac.bases, strict=True),
        (a.trac.scale, b.trac.scale),
        (a.trac.v, b.trac.v),
        (a.steps, b.steps),
    ]
    assert all(torch.equal(x.detach(), y.detach()) for x, y in pairs)
    adamw = dict(kwargs, policy_kwargs={**kwargs["policy_kwargs"], "optimizer_class": torch.optim.AdamW})
    with pytest.raises(ValueError, match="TRAC"):
        make_population([0, 1], **adamw).load_state_dict(saved)  # the same networks without TRAC
    first.close()
    second.close()


def test_trac_population_checkpoints_and_resumes_exactly(tmp_path, monkeypatch, option_config):
    """A TRAC population stopped after a checkpoint and resumed writes every member's files as an
    uninterrupted one (train/trac_scale included); the checkpoint holds TRAC's state, and each
    member's model.zip holds its TRAC state."""
    from rlplast.checkpoint import load_latest
    from rlplast.population import run as run_module

    cfgs = _configs(option_config, "trac", [0, 1], steps=700, extra=["metrics.names=[dormant]"])
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    run_population(cfgs, [ref / "m-s0", ref / "m-s1"], ref / "pop", quiet=True)

    real = run_module._PopulationRun.on_iteration_end

    def stop_at_400(self, population):
        if population.num_timesteps >= 400:
            self.stop.request("test stop")
        return real(self, population)

    monkeypatch.setattr(run_module._PopulationRun, "on_iteration_end", stop_at_400)
    with pytest.raises(TrainingStopped):
        run_population(cfgs, [cut / "m-s0", cut / "m-s1"], cut / "pop", quiet=True)
    monkeypatch.undo()
    payload, _ = load_latest(cut / "pop" / "checkpoints")
    trac = payload["population"]["optimizer"]["trac"]
    assert int(payload["step"]) == 400 and bool((trac["scale"] > 0).all())
    resume_population(cfgs, [cut / "m-s0", cut / "m-s1"], cut / "pop", quiet=True)
    final, _ = load_latest(ref / "pop" / "checkpoints")  # the last iteration's state
    assert int(final["step"]) == 700
    for i, name in enumerate(("m-s0", "m-s1")):
        assert _rows(ref / name) == _rows(cut / name)
        assert (ref / name / "episodes.csv").read_text() == (cut / name / "episodes.csv").read_text()
        assert _rows(ref / name)[-1]["train/trac_scale"] not in ("", "0.0")
        model = PlasticDQN.load(ref / name / "model.zip", device="cpu")
        optimizer = model.policy.optimizer
        trac_state = final["population"]["optimizer"]["trac"]
        assert float(optimizer.scale()) == float(trac_state["scale"][i]) > 0.0
        first = next(iter(model.q_net.parameters()))
        assert {"trac_ref", "trac_base", "exp_avg"} <= set(optimizer.state[first])
        assert torch.equal(optimizer.state[first]["trac_ref"], trac_state["refs"][0][i])


# ------------------------------------------------------------------------------ bad input
def test_optimizers_the_stacked_optimizer_does_not_implement_are_refused(make_population):
    with pytest.raises(UserError, match="optimizer_class SGD is not supported"):
        make_population([0], policy_kwargs={"net_arch": [8], "optimizer_class": torch.optim.SGD})
    with pytest.raises(UserError, match=r"Adam's \(L2\) weight_decay is not supported"):
        make_population([0], policy_kwargs={"net_arch": [8], "optimizer_kwargs": {"weight_decay": 0.1}})
    with pytest.raises(UserError, match="optimizer option 'amsgrad' is not supported"):
        make_population([0], policy_kwargs={"net_arch": [8], "optimizer_kwargs": {"amsgrad": True}})
    adamw = make_population([0], policy_kwargs={"net_arch": [8], "optimizer_class": torch.optim.AdamW})
    assert adamw.optimizer.weight_decay == 0.01  # torch's AdamW default, as PlasticDQN would get
    adamw.close()
