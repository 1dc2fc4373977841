"""TRAC: erfi, the tuner recurrence (known answers), reduction to the base optimizer, state, PlasticDQN."""

from __future__ import annotations

import copy
import math
import pickle

import numpy as np
import pytest
import torch
from scipy.special import erfi as scipy_erfi

from rlplast.agents import PlasticDQN
from rlplast.agents.trac import BETAS, ERFI_MAX_ARG, TRACAdam, TRACAdamW, TRACMixin, erfi
from rlplast.config import load_config
from rlplast.train import policy_kwargs


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Small networks train fastest on one thread (and the machine may be shared)."""
    torch.set_num_threads(1)


class TRACSGD(TRACMixin, torch.optim.SGD):
    """TRAC around plain SGD: the base update is known in closed form."""


def test_erfi_matches_scipy():
    x = torch.linspace(-ERFI_MAX_ARG, ERFI_MAX_ARG, 4001, dtype=torch.float64)
    ref = scipy_erfi(x.numpy())
    np.testing.assert_allclose(erfi(x).numpy(), ref, rtol=1e-13, atol=0.0)
    assert float(erfi(torch.tensor(0.0))) == 0.0
    assert float(erfi(torch.tensor(50.0))) == float(erfi(torch.tensor(ERFI_MAX_ARG)))  # clipped, finite


def _quadratic_steps(opt, w, n, target=3.0):
    for _ in range(n):
        opt.zero_grad()
        ((w - target) ** 2).sum().backward()
        opt.step()


def test_zero_gradients_keep_s_at_zero_and_the_parameters_at_the_reference():
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = TRACAdam([w], lr=0.1)
    for _ in range(20):
        opt.zero_grad()
        (w * 0.0).sum().backward()
        opt.step()
    assert torch.equal(opt.state["trac"]["s"], torch.zeros(len(BETAS), dtype=torch.float64))
    assert float(opt.scale()) == 0.0
    assert torch.equal(w.detach(), torch.tensor([1.0, -2.0]))


def test_known_answer_on_a_linear_loss_with_sgd():
    """L(w) = g·w with SGD(lr): θ_base,t = θ_ref − t·lr·g, so h_t = ⟨g, θ_base,t − θ_ref⟩ = −(t−1)·lr·|g|²
    is known in closed form; the tuner recurrence is then evaluated in NumPy with SciPy's erfi."""
    g = np.array([0.5, -1.0, 2.0])
    lr, steps = 0.1, 12
    w0 = torch.tensor([0.3, 0.2, -0.1], dtype=torch.float64)
    w = torch.nn.Parameter(w0.clone())
    opt = TRACSGD([w], lr=lr)
    betas = np.array(BETAS)
    v = np.zeros(len(betas))
    sigma = np.zeros(len(betas))
    for t in range(1, steps + 1):
        opt.zero_grad()
        (torch.as_tensor(g) * w).sum().backward()
        opt.step()
        h = -(t - 1) * lr * float(g @ g)
        v = betas**2 * v + h * h
        sigma = betas * sigma - h
        s = 1e-8 / scipy_erfi(1 / math.sqrt(2)) * scipy_erfi(sigma / (np.sqrt(2 * v) + 1e-8))
        scale = max(s.sum(), 0.0)
        np.testing.assert_allclose(opt.state["trac"]["s"].numpy(), s, rtol=1e-10)
        expected = w0.numpy() + scale * (-t * lr * g)  # θ_ref + S (θ_base − θ_ref)
        np.testing.assert_allclose(w.detach().numpy(), expected, rtol=1e-10, atol=1e-15)
    assert float(opt.scale()) > 0.0  # consistent descent directions grow S


class _FixedScale(TRACAdam):
    def _update_scale(self, h, tuner):
        return torch.ones((), dtype=torch.float64, device=h.device)


def test_with_the_scale_fixed_at_one_the_update_is_the_base_optimizers():
    torch.manual_seed(0)
    start = torch.randn(6)
    w_trac = torch.nn.Parameter(start.clone())
    w_adam = torch.nn.Parameter(start.clone())
    trac = _FixedScale([w_trac], lr=0.05)
    adam = torch.optim.Adam([w_adam], lr=0.05)
    for _ in range(30):
        _quadratic_steps(trac, w_trac, 1)
        _quadratic_steps(adam, w_adam, 1)
    torch.testing.assert_close(w_trac, w_adam, rtol=1e-6, atol=1e-6)


def test_state_dict_and_pickle_round_trip_continue_identically():
    torch.manual_seed(1)
    w = torch.nn.Parameter(torch.randn(5))
    opt = TRACAdamW([w], lr=0.1, weight_decay=0.01, foreach=True)
    _quadratic_steps(opt, w, 40)
    w2 = torch.nn.Parameter(w.detach().clone())
    opt2 = TRACAdamW([w2], lr=0.1, weight_decay=0.01, foreach=True)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))
    assert opt2.state["trac"]["s"] is not opt.state["trac"]["s"]
    w3, opt3 = pickle.loads(pickle.dumps((w, opt)))  # as a checkpoint pickles the agent
    assert opt3.trac_betas == BETAS
    for o, p in ((opt, w), (opt2, w2), (opt3, w3)):
        _quadratic_steps(o, p, 10)
    assert torch.equal(w, w2) and torch.equal(w, w3)


def test_parameters_changed_between_steps_keep_the_change():
    w = torch.nn.Parameter(torch.zeros(3))
    opt = TRACAdam([w], lr=0.1)
    _quadratic_steps(opt, w, 30)
    before = opt.state[w]["trac_base"] - opt.state[w]["trac_ref"]
    with torch.no_grad():
        w.add_(1.0)  # e.g. shrink-and-perturb or a reset in place
    scale = opt.scale().float()
    expected_ref = opt.state[w]["trac_ref"] + 1.0
    _quadratic_steps(opt, w, 1)
    torch.testing.assert_close(opt.state[w]["trac_ref"], expected_ref)  # the reference moved with it
    assert float(scale) >= 0.0 and before.abs().sum() > 0


def test_dropped_state_restarts_the_parameter_from_its_current_value():
    w = torch.nn.Parameter(torch.zeros(2))
    opt = TRACAdam([w], lr=0.1)
    _quadratic_steps(opt, w, 10)
    with torch.no_grad():
        w.fill_(5.0)
    opt.state.pop(w)  # rlplast.nets.drop_optimizer_state
    _quadratic_steps(opt, w, 1)
    assert torch.equal(opt.state[w]["trac_ref"], torch.full((2,), 5.0))


def test_bad_settings_are_refused():
    w = torch.nn.Parameter(torch.zeros(1))
    with pytest.raises(ValueError, match="discount"):
        TRACAdam([w], trac_betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="> 0"):
        TRACAdam([w], trac_s_init=0.0)


def test_plastic_dqn_with_trac_from_the_config(tmp_path):
    cfg = load_config(None, ["agent.optimizer=trac", "agent.net_arch=[16]"])
    kwargs = policy_kwargs(cfg)
    assert kwargs["optimizer_class"] is TRACAdam
    assert (
        policy_kwargs(load_config(None, ["agent.optimizer=trac", "agent.weight_decay=0.01"]))[
            "optimizer_class"
        ]
        is TRACAdamW
    )
    model = PlasticDQN(
        "MlpPolicy",
        "CartPole-v1",
        seed=0,
        learning_starts=50,
        buffer_size=1000,
        policy_kwargs=kwargs,
        target_update_interval=50,
    ).learn(300)
    stats = model.pop_train_stats()
    assert stats["train/trac_scale"] >= 0.0
    model.save(tmp_path / "m.zip")
    loaded = PlasticDQN.load(tmp_path / "m.zip")
    assert type(loaded.policy.optimizer) is TRACAdam
    assert torch.equal(loaded.policy.optimizer.state["trac"]["s"], model.policy.optimizer.state["trac"]["s"])
