"""Churn (C-CHAIN's definitions) on a fixed reference set: known answers, state, checkpoints."""

from __future__ import annotations

import math
import pickle

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3.common.torch_layers import FlattenExtractor
from stable_baselines3.dqn.policies import QNetwork

from rlplast.metrics import MetricSuite
from rlplast.metrics.churn import churn_values

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")),
]
KEYS = ("plasticity/churn_action", "plasticity/churn_q_abs", "plasticity/churn_max_q")


def make_qnet(seed: int = 0, n_actions: int = 3) -> QNetwork:
    torch.manual_seed(seed)
    space = gym.spaces.Box(-np.inf, np.inf, (5,), np.float32)
    extractor = FlattenExtractor(space)
    return QNetwork(space, gym.spaces.Discrete(n_actions), extractor, extractor.features_dim, net_arch=[16])


def test_churn_values_known_answers():
    q_prev = torch.tensor([[1.0, 2.0], [3.0, 0.0], [0.5, 0.4]])
    same = churn_values(q_prev, q_prev)
    assert float(same["action"]) == 0.0 and float(same["q_abs"]) == 0.0 and float(same["max_q"]) == 0.0
    flipped = churn_values(q_prev, -q_prev)  # every greedy action flips
    assert float(flipped["action"]) == 1.0
    assert float(flipped["q_abs"]) == pytest.approx(float((2 * q_prev.abs()).mean()))
    half = churn_values(q_prev, torch.tensor([[1.0, 2.0], [0.0, 3.0], [0.5, 0.4]]))
    assert float(half["action"]) == pytest.approx(1 / 3)
    assert float(half["q_abs"]) == pytest.approx(6.0 / 6)
    assert float(half["max_q"]) == pytest.approx(0.0)


@pytest.mark.parametrize("device", DEVICES)
def test_churn_is_nan_first_then_zero_for_an_unchanged_network_and_one_for_a_flipped_policy(device):
    q = make_qnet().to(device)
    suite = MetricSuite(names=["churn"])
    ref_obs = torch.randn(64, 5, device=device)
    first = suite.compute(q, ref_obs)
    assert all(math.isnan(first[k]) for k in KEYS)
    # Later evaluations use other probe states; churn is measured on the first ones.
    unchanged = suite.compute(q, torch.randn(64, 5, device=device))
    assert unchanged["plasticity/churn_action"] == 0.0 and unchanged["plasticity/churn_q_abs"] == 0.0
    with torch.no_grad():
        before = q(ref_obs)
        q.q_net[-1].weight.neg_()  # a changed head: most greedy actions flip
        q.q_net[-1].bias.zero_()
        after = q(ref_obs)
    expected = churn_values(before, after)
    flipped = suite.compute(q, torch.randn(64, 5, device=device))
    assert flipped["plasticity/churn_action"] == pytest.approx(float(expected["action"]))
    assert flipped["plasticity/churn_q_abs"] == pytest.approx(float(expected["q_abs"]), rel=1e-6)
    assert torch.equal(suite.state["churn"]["obs"], ref_obs)  # the reference set is fixed


def test_fully_flipped_greedy_policy_gives_one():
    q = make_qnet(n_actions=2)
    with torch.no_grad():
        q.q_net[-1].bias.zero_()
    suite = MetricSuite(names=["churn"])
    obs = torch.randn(50, 5)
    suite.compute(q, obs)
    with torch.no_grad():
        q.q_net[-1].weight.neg_()  # Q(s, ·) → −Q(s, ·): with two actions every argmax flips
    values = suite.compute(q, obs)
    assert values["plasticity/churn_action"] == 1.0


def test_suites_share_state_and_the_state_pickles():
    state: dict = {}
    cheap, full = MetricSuite(names=["churn"], state=state), MetricSuite(names=["churn", "rank"], state=state)
    q = make_qnet()
    cheap.compute(q, torch.randn(32, 5))
    assert full.state is state and "churn" in state
    restored = pickle.loads(pickle.dumps(state))  # as a checkpoint stores it
    other = MetricSuite(names=["churn"], state=restored)
    with torch.no_grad():
        q.q_net[0].weight.mul_(1.5)
    a = full.compute(q, torch.randn(32, 5))
    b = other.compute(q, torch.randn(32, 5))
    for k in KEYS:
        assert a[k] == b[k]
