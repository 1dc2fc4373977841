"""StackedAdam and per-member clipping: bitwise torch's Adam and clip_grad_norm_ per member (CPU)."""

from __future__ import annotations

import pytest
import torch

from rlplast.population import StackedAdam

SHAPES = [(16, 4), (16,), (16, 16), (16,), (3, 16), (3,)]


def _stack(n_members: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n_members, *s, generator=g).requires_grad_(True) for s in SHAPES]


@pytest.mark.parametrize(
    "impl, torch_kwargs",
    [("foreach", {"foreach": True}), ("foreach", {"foreach": False}), ("fused", {"fused": True})],
)
def test_adam_steps_equal_torch_adam_per_member(impl, torch_kwargs):
    """Moments, steps and parameters equal torch.optim.Adam's (foreach: PlasticDQN's default;
    single-tensor: SB3's default on the CPU; fused: agent.optimizer_impl fused), over gradients of
    very different scales, with one member's state cleared midway (its bias corrections restart)."""
    n, lr = 4, 3e-4
    stacked = _stack(n)
    adam = StackedAdam(stacked, lr=lr, betas=(0.9, 0.99), eps=1e-6, impl=impl)
    refs = [[torch.nn.Parameter(p.detach()[i].clone()) for p in stacked] for i in range(n)]
    opts = [torch.optim.Adam(r, lr=lr, betas=(0.9, 0.99), eps=1e-6, **torch_kwargs) for r in refs]
    g = torch.Generator().manual_seed(1)
    for step in range(12):
        adam.zero_grad()
        for k, p in enumerate(stacked):
            scale = 10.0 ** (step % 7 - 5)
            p.grad.copy_(torch.randn(p.shape, generator=g) * scale)
            for i in range(n):
                refs[i][k].grad = p.grad[i].clone()
        adam.step()
        for opt in opts:
            opt.step()
        if step == 5:
            adam.reset_state(2)
            opts[2].state.clear()
    for i in range(n):
        for k, p in enumerate(stacked):
            assert torch.equal(p.detach()[i], refs[i][k].detach()), (i, k)
            state = opts[i].state[refs[i][k]]
            assert torch.equal(adam.exp_avg[k][i], state["exp_avg"])
            assert torch.equal(adam.exp_avg_sq[k][i], state["exp_avg_sq"])
            assert float(adam.steps[k, i]) == float(state["step"])
    assert adam.steps[:, 2].tolist() == [6.0] * len(SHAPES)


@pytest.mark.parametrize("max_norm", [0.5, 1e6])
def test_clipping_equals_clip_grad_norm_per_member(max_norm):
    """Each member's norm and clipped gradients are clip_grad_norm_'s on that member, bitwise."""
    n = 5
    stacked = _stack(n, seed=2)
    adam = StackedAdam(stacked, lr=1e-3)
    adam.zero_grad()
    g = torch.Generator().manual_seed(3)
    for p in stacked:
        p.grad.copy_(torch.randn(p.shape, generator=g))
    p0 = stacked[0]
    p0.grad[1] *= 1e-3  # one member far below the limit, the others above it
    expected = []
    for i in range(n):
        params = [torch.nn.Parameter(torch.zeros(s)) for s in SHAPES]
        for q, p in zip(params, stacked, strict=True):
            q.grad = p.grad[i].clone()
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        expected.append((norm, [q.grad for q in params]))
    norms = adam.clip_grad_norms(max_norm)
    for i, (norm, grads) in enumerate(expected):
        assert torch.equal(norms[i], norm)
        for p, grad in zip(stacked, grads, strict=True):
            assert torch.equal(p.grad[i], grad)


def test_gradients_accumulate_into_the_optimizer_buffers():
    """Backward writes into the buffers Adam owns; a gradient a caller set is taken over."""
    stacked = _stack(2)
    adam = StackedAdam(stacked, lr=1e-3)
    buffers = [g.data_ptr() for g in adam.grads]
    adam.zero_grad()
    sum(p.sum() for p in stacked).backward()
    assert [p.grad.data_ptr() for p in stacked] == buffers
    assert all(bool((p.grad == 1).all()) for p in stacked)
    stacked[0].grad = torch.full_like(stacked[0], 2.0)
    adam.step()  # re-attaches the buffer, with the caller's values
    assert stacked[0].grad.data_ptr() == buffers[0] and bool((adam.grads[0] == 2).all())


def test_member_state_behaves_like_torch_adam_state():
    """state[p], `in`, len, pop, del and clear act on exactly one member's slices."""
    stacked = _stack(3)
    adam = StackedAdam(stacked, lr=1e-3)
    views = [torch.nn.Parameter(p.detach()[1]) for p in stacked]
    state = adam.member_state(1, views)
    assert len(state) == 0 and views[0] not in state
    empty = state.pop(views[0], None)  # no host read of the step: the empty state, not None
    assert float(empty["step"]) == 0.0 and not bool(empty["exp_avg"].any())
    assert state.pop(torch.nn.Parameter(torch.zeros(1)), None) is None  # not the member's
    with pytest.raises(KeyError):
        state[views[0]]
    adam.zero_grad()
    sum((p**2).sum() for p in stacked).backward()
    adam.step()
    assert len(state) == len(SHAPES) and views[-1] in state and list(state) == views
    entry = state[views[-1]]
    assert entry["exp_avg"].data_ptr() == adam.exp_avg[-1][1].data_ptr()  # a view, not a copy
    old = state.pop(views[-1])
    assert float(old["step"]) == 1.0 and bool(old["exp_avg"].abs().sum() > 0)
    assert views[-1] not in state and float(adam.steps[-1, 1]) == 0.0
    assert bool(adam.exp_avg[-1][1].abs().sum() == 0) and bool(adam.exp_avg[-1][0].abs().sum() > 0)
    del state[views[0]]
    assert float(adam.steps[0, 1]) == 0.0 and float(adam.steps[0, 0]) == 1.0
    state.clear()
    assert len(state) == 0 and adam.steps[:, 0].tolist() == [1.0] * len(SHAPES)
