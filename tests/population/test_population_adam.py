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


@pytest.mark.parametrize(
    "impl, torch_kwargs",
    [("foreach", {"foreach": True}), ("foreach", {"foreach": False}), ("fused", {"fused": True})],
)
def test_decoupled_weight_decay_equals_torch_adamw_per_member(impl, torch_kwargs):
    """With weight_decay, every member's step is torch.optim.AdamW's, bitwise (θ·(1 − lr·λ), then Adam)."""
    n, lr, wd = 3, 1e-2, 0.1
    stacked = _stack(n, seed=4)
    adam = StackedAdam(stacked, lr=lr, impl=impl, weight_decay=wd)
    refs = [[torch.nn.Parameter(p.detach()[i].clone()) for p in stacked] for i in range(n)]
    opts = [torch.optim.AdamW(r, lr=lr, weight_decay=wd, **torch_kwargs) for r in refs]
    g = torch.Generator().manual_seed(5)
    for step in range(8):
        adam.zero_grad()
        for k, p in enumerate(stacked):
            p.grad.copy_(torch.randn(p.shape, generator=g))
            for i in range(n):
                refs[i][k].grad = p.grad[i].clone()
        adam.step()
        for opt in opts:
            opt.step()
        if step == 3:
            adam.reset_state(1)
            opts[1].state.clear()
    for i in range(n):
        for k, p in enumerate(stacked):
            assert torch.equal(p.detach()[i], refs[i][k].detach()), (i, k)
            assert torch.equal(adam.exp_avg_sq[k][i], opts[i].state[refs[i][k]]["exp_avg_sq"])


def _trac_close(a: torch.Tensor, b: torch.Tensor, what: str, rel: float) -> None:
    scale = float(b.abs().max())
    diff = float((a.double() - b.double()).abs().max())
    assert diff <= rel * scale or diff == 0.0, f"{what}: max difference {diff:.3g} at scale {scale:.3g}"


@pytest.mark.parametrize("weight_decay, impl", [(0.0, "foreach"), (0.05, "foreach"), (0.0, "fused")])
def test_trac_equals_trac_optimizer_per_member(weight_decay, impl):
    """Each member's parameters, θ_ref, θ_base, tuner and scale follow rlplast.agents.trac's TRACAdam
    (TRACAdamW with weight decay) on that member: parameters moved in place between steps keep their
    change, a cleared parameter restarts at its value, a cleared member restarts its tuner. To
    float32 round-off (h is a float64 sum in another order than torch.dot's)."""
    from rlplast.agents.trac import TRACAdam, TRACAdamW
    from rlplast.population.trac import StackedTRAC

    n, lr = 4, 2e-2
    stacked = _stack(n, seed=6)
    adam = StackedAdam(stacked, lr=lr, impl=impl, weight_decay=weight_decay, trac=StackedTRAC(stacked))
    cls = TRACAdamW if weight_decay else TRACAdam
    kwargs = {"fused": True} if impl == "fused" else {"foreach": True}
    refs = [[torch.nn.Parameter(p.detach()[i].clone()) for p in stacked] for i in range(n)]
    opts = [cls(r, lr=lr, weight_decay=weight_decay, **kwargs) for r in refs]
    g = torch.Generator().manual_seed(7)
    direction = [torch.randn(p.shape, generator=g) for p in stacked]
    for step in range(56):
        adam.zero_grad()
        for k, p in enumerate(stacked):  # a steady direction, so that S grows, plus noise
            p.grad.copy_(direction[k] + 0.3 * torch.randn(p.shape, generator=g))
            for i in range(n):
                refs[i][k].grad = p.grad[i].clone()
        adam.step()
        for opt in opts:
            opt.step()
        if step == 30:  # an intervention's in-place change of member 0's first parameter
            with torch.no_grad():
                stacked[0][0].mul_(0.5)
                refs[0][0].mul_(0.5)
        if step == 8:  # member 1: everything cleared; member 2: its last parameter's state
            adam.reset_state(1)
            opts[1].state.clear()
            adam.reset_state(2, [len(SHAPES) - 1])
            opts[2].state.pop(refs[2][-1])
    trac = adam.trac
    assert trac is not None
    for i in range(n):
        assert float(opts[i].scale()) > 0.1, "the tuner should have grown S"
        assert float(trac.scale[i]) == pytest.approx(float(opts[i].scale()), rel=1e-9)
        for name in ("v", "sigma", "s"):
            _trac_close(getattr(trac, name)[i], opts[i].state["trac"][name], f"{name} {i}", 1e-9)
        for k, p in enumerate(stacked):
            state = opts[i].state[refs[i][k]]
            _trac_close(p.detach()[i], refs[i][k].detach(), f"member {i} parameter {k}", 1e-6)
            _trac_close(trac.refs[k][i], state["trac_ref"], f"member {i} θ_ref {k}", 1e-6)
            _trac_close(trac.bases[k][i], state["trac_base"], f"member {i} θ_base {k}", 1e-6)
            _trac_close(adam.exp_avg[k][i], state["exp_avg"], f"member {i} exp_avg {k}", 1e-6)
            assert float(adam.steps[k, i]) == float(state["step"])


def test_erfi_rows_agrees_with_tracs_erfi_and_does_not_depend_on_the_rows():
    """The population's erfi is TRAC's series to float64 round-off; a row's values are the same
    whatever rows come with it (so a member's tuner does not depend on the population's size)."""
    from rlplast.agents.trac import erfi
    from rlplast.population.trac import erfi_rows

    x = torch.linspace(-12.0, 12.0, 600, dtype=torch.float64).view(-1, 6)
    ours, theirs = erfi_rows(x), erfi(x)
    assert torch.allclose(ours, theirs, rtol=1e-13, atol=0.0)
    assert all(torch.equal(erfi_rows(x[i : i + 1])[0], ours[i]) for i in range(0, x.shape[0], 7))
