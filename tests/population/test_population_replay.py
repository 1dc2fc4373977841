"""The stacked replay stores and samples what SB3's ReplayBuffer / NStepReplayBuffer do, per member."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3.common.buffers import NStepReplayBuffer, ReplayBuffer

from rlplast.errors import UserError
from rlplast.population import StackedReplayBuffer, check_replay_fits, replay_bytes

OBS = spaces.Box(-10, 10, (3,), np.float32)
ACTIONS = spaces.Discrete(4)


def _fill(n_members: int, size: int, n_steps: int, transitions: int, seed: int):
    """The same random transitions (episode ends, time limits) into SB3 buffers and a stacked one."""
    rng = np.random.default_rng(seed)
    kwargs = dict(device="cpu", n_envs=1, handle_timeout_termination=True)
    if n_steps > 1:
        refs = [
            NStepReplayBuffer(size, OBS, ACTIONS, n_steps=n_steps, gamma=0.9, **kwargs)
            for _ in range(n_members)
        ]
    else:
        refs = [ReplayBuffer(size, OBS, ACTIONS, **kwargs) for _ in range(n_members)]
    ours = StackedReplayBuffer(n_members, size, (3,), torch.float32, "cpu", n_steps=n_steps, gamma=0.9)
    for _ in range(transitions):
        obs = rng.normal(size=(n_members, 3)).astype(np.float32)
        nxt = rng.normal(size=(n_members, 3)).astype(np.float32)
        act = rng.integers(0, 4, size=n_members)
        rew = rng.normal(size=n_members)
        term = rng.random(n_members) < 0.1
        trunc = rng.random(n_members) < 0.08
        done = term | trunc
        for i, ref in enumerate(refs):
            info = [{"TimeLimit.truncated": bool(trunc[i] and not term[i])}]
            ref.add(obs[i : i + 1], nxt[i : i + 1], act[i : i + 1], rew[i : i + 1], done[i : i + 1], info)
        flags = np.stack((rew, done, trunc & ~term)).astype(np.float32)
        ours.add(torch.from_numpy(obs), torch.from_numpy(nxt), torch.from_numpy(act), torch.from_numpy(flags))
    return refs, ours


@pytest.mark.parametrize("n_steps", [1, 3, 5, 11, 20])
@pytest.mark.parametrize("transitions", [40, 137])  # not yet full; full, wrapped, write position mid-buffer
def test_samples_equal_sb3s(n_steps, transitions):
    """Observations, actions, next observations, dones (time limits bootstrap), n-step returns and
    discounts of the same stored transitions and indices equal SB3's, for every member."""
    n_members, size, batch = 3, 64, 256
    refs, ours = _fill(n_members, size, n_steps, transitions, seed=n_steps)
    assert ours.size() == refs[0].size() and ours.pos == refs[0].pos
    idx = np.zeros((n_members, batch), dtype=np.int64)
    expected = []
    for i, ref in enumerate(refs):
        np.random.seed(100 + i)  # sample() draws its indices first: reproduce them
        idx[i] = np.random.randint(0, ref.size(), size=batch)
        np.random.seed(100 + i)
        expected.append(ref.sample(batch))
    got = ours.sample(torch.from_numpy(idx))
    for i, exp in enumerate(expected):
        for name in ("observations", "actions", "next_observations", "dones", "rewards", "discounts"):
            want, have = getattr(exp, name), getattr(got, name)
            if want is None:
                assert have is None, name
                continue
            have = have[i]
            assert have.dtype == want.dtype and have.shape == want.shape, name
            assert torch.equal(have, want), name
    if n_steps > 1:  # some returns really are cut short by episode ends or the write position
        assert bool((got.discounts > 0.9**n_steps + 1e-6).any())


def test_indices_are_uniform_over_the_filled_part():
    ours = StackedReplayBuffer(2, 10, (1,), torch.float32, "cpu")
    for _ in range(4):
        ours.add(torch.zeros(2, 1), torch.zeros(2, 1), torch.zeros(2, dtype=torch.int64), torch.zeros(3, 2))
    raw = torch.randint(0, 2**62, (2, 4000))
    idx = ours.indices(raw)
    assert int(idx.max()) == 3 and int(idx.min()) == 0
    counts = torch.bincount(idx.view(-1), minlength=4).double()
    assert float(counts.std() / counts.mean()) < 0.1


def test_observation_dtype_is_kept():
    ours = StackedReplayBuffer(2, 5, (10, 10, 10), torch.uint8, "cpu")
    assert ours.observations.dtype == torch.uint8 and ours.next_observations.dtype == torch.uint8


def test_memory_estimate_and_refusal():
    """obs bytes x 2 + 20 bytes per transition, times buffer size and members; too much is a UserError."""
    assert replay_bytes((4,), np.float32, 1000, 8) == 8 * 1000 * (2 * 16 + 20)
    assert replay_bytes((10, 10, 10), np.uint8, 50_000, 8) == 8 * 50_000 * (2 * 1000 + 20)
    assert check_replay_fits((4,), np.float32, 1000, 8, "cpu", available=10**9) == 416_000
    with pytest.raises(UserError, match=r"need .* GiB .* more than the .* available") as info:
        check_replay_fits((10, 10, 10), np.uint8, 1_000_000, 64, "cpu", available=2**30)
    assert "\n" not in str(info.value)
