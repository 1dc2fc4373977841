"""Device discipline: no host-synchronising op in the update or step path; the same code on CUDA."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

#: aten ops that make the host wait for the device (a value read back or a data-dependent shape).
SYNC_OPS = {
    "aten._local_scalar_dense",  # .item(), float(), bool(), int() of a tensor
    "aten.is_nonzero",
    "aten.nonzero",
    "aten.masked_select",
    "aten.equal",
    "aten.allclose",
    "aten.unique",
    "aten._unique2",
    "aten.unique_consecutive",
    "aten.repeat_interleave",
    "aten.masked_scatter",
    "boolean mask index",
}


class _Spy(TorchDispatchMode):
    """Records the aten ops that run (and boolean-mask indexing, whose nonzero CPU kernels hide)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket)
        self.ops.append(name)
        if name in ("aten.index", "aten.index_put", "aten.index_put_") and any(
            isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in args[1]
        ):
            self.ops.append("boolean mask index")  # a data-dependent shape: nonzero inside
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("n_steps, fused", [(1, False), (3, False), (1, True)])
def test_update_path_has_no_host_synchronisation(make_population, n_steps, fused):
    """Sampling, the TD loss, backward, clipping, Adam (foreach arithmetic or torch's fused
    kernel) and the statistics run without one op that waits for the device (checked on the CPU
    by intercepting every aten op)."""
    policy_kwargs = {"net_arch": [32, 32], "optimizer_kwargs": {"fused": fused}}
    pop = make_population([0, 1, 2], learning_starts=40, n_steps=n_steps, policy_kwargs=policy_kwargs)
    pop.learn(60)
    spy = _Spy()
    with spy:
        pop.train(3)
    assert len(spy.ops) > 50
    adam_op = "aten._fused_adam_" if fused else "aten._foreach_lerp_"
    assert "aten.baddbmm" in spy.ops and adam_op in spy.ops  # the spy sees the whole update
    assert not SYNC_OPS & set(spy.ops), sorted(SYNC_OPS & set(spy.ops))


@pytest.mark.parametrize(
    "option", ["double_dqn", "layer_norm", "layer_norm_wd", "crelu", "trac", "trac_wd", "all"]
)
def test_update_path_with_agent_options_has_no_host_synchronisation(make_population, option, option_kwargs):
    """The method pack's agent options (Double DQN targets, LayerNorm, CReLU, AdamW, TRAC's
    per-member tuner) add no synchronising op to the update path, nor the statistics of a row."""
    pop = make_population([0, 1, 2], learning_starts=40, **option_kwargs(option))
    pop.learn(60)
    spy = _Spy()
    with spy:
        pop.train(3)
    assert "aten.baddbmm" in spy.ops
    if option.startswith("trac") or option == "all":
        assert "aten.cumprod" in spy.ops  # the spy saw TRAC's tuner
    if "layer_norm" in option or option == "all":
        assert "aten.native_layer_norm" in spy.ops
    assert not SYNC_OPS & set(spy.ops), sorted(SYNC_OPS & set(spy.ops))


@pytest.mark.parametrize("option", [None, "all"])
def test_step_path_has_no_host_synchronisation_besides_the_actions(make_population, option, option_kwargs):
    """Acting, storing and the target update: no synchronising op (the actions' copy to the host
    is the one transfer; on the CPU it is free); also with every agent option on."""
    kwargs = {} if option is None else option_kwargs(option)
    pop = make_population([0, 1], learning_starts=10, target_update_interval=2, **kwargs)
    pop.learn(20)
    spy = _Spy()
    with spy:
        pop.learn(8, reset_num_timesteps=False)  # includes episode ends, updates and target copies
    assert not SYNC_OPS & set(spy.ops), sorted(SYNC_OPS & set(spy.ops))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_population_on_cuda(make_population):
    """The same code trains on CUDA; an update from the same parameters and batch matches the CPU's
    to float32 round-off; the update path raises under CUDA's sync debug mode 'error' if it syncs."""
    cpu = make_population([0, 1], learning_starts=40)
    gpu = make_population([0, 1], learning_starts=40, device="cuda")
    assert gpu.replay.observations.is_cuda and gpu.net.params[0].is_cuda
    gpu.learn(200)
    assert gpu.n_updates > 0
    assert torch.isfinite(torch.as_tensor(gpu.pop_train_stats()["train/loss"])).all()
    for p_cpu, p_gpu in zip(cpu.net.params, gpu.net.params, strict=True):  # fresh CPU twin of the start
        assert p_cpu.shape == p_gpu.shape
    gpu2 = make_population([0, 1], learning_starts=40, device="cuda")
    cpu.learn(60)
    gpu2.learn(60)
    batch = cpu.replay.sample(cpu.replay.indices(torch.arange(64).view(2, 32)))
    moved = type(batch)(*[None if t is None else t.cuda() for t in vars(batch).values()])
    with torch.no_grad():
        for a, b in zip(gpu2.net.params, cpu.net.params, strict=True):
            a.copy_(b)
        for a, b in zip(gpu2.net.target_params, cpu.net.target_params, strict=True):
            a.copy_(b)
    gpu2.optimizer.load_state_dict(cpu.optimizer.state_dict())
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss_gpu = gpu2.update(moved)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    loss_cpu = cpu.update(batch)
    torch.testing.assert_close(loss_gpu.cpu(), loss_cpu, rtol=1e-5, atol=1e-7)
    for a, b in zip(gpu2.net.params, cpu.net.params, strict=True):
        torch.testing.assert_close(a.detach().cpu(), b.detach(), rtol=1e-4, atol=1e-6)
    gpu.close()
    gpu2.close()
    cpu.close()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_population_with_agent_options_on_cuda(make_population, option_kwargs):
    """Every agent option on (LayerNorm, CReLU, AdamW, TRAC, Double DQN): an update on CUDA matches
    the CPU's from the same state to float32 round-off, under CUDA's sync debug mode 'error'."""
    kwargs = option_kwargs("all")
    cpu = make_population([0, 1], learning_starts=40, **kwargs)
    gpu = make_population([0, 1], learning_starts=40, device="cuda", **kwargs)
    cpu.learn(100)
    with torch.no_grad():
        for dst, src in zip(gpu.net.params, cpu.net.params, strict=True):
            dst.copy_(src)
        for dst, src in zip(gpu.net.target_params, cpu.net.target_params, strict=True):
            dst.copy_(src)
    gpu.optimizer.load_state_dict(cpu.optimizer.state_dict())  # Adam's and TRAC's state
    gpu.replay.load_state_dict(cpu.replay.state_dict())
    batch = cpu.replay.sample(cpu.replay.indices(torch.arange(64).view(2, 32)))
    moved = type(batch)(*[None if t is None else t.cuda() for t in vars(batch).values()])
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss_gpu = gpu.update(moved)
        gpu.train(2)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    loss_cpu = cpu.update(batch)
    torch.testing.assert_close(loss_gpu.cpu(), loss_cpu, rtol=1e-5, atol=1e-7)
    trac_gpu, trac_cpu = gpu.optimizer.trac, cpu.optimizer.trac
    assert trac_gpu is not None and trac_cpu is not None
    assert bool((trac_gpu.scale > 0).all().cpu())
    for p in (cpu, gpu):
        p.close()


def test_metric_suite_on_member_views_has_no_host_synchronisation(make_population):
    """Every registered metric (probe plasticity included), run per member as a population run runs
    it — probe states drawn from the member's replay slice, the suite on its view — makes no
    synchronising op; the suite's values reach the host in its one final transfer, once per
    logging row."""
    from rlplast.callbacks import MetricsProbe
    from rlplast.config import MetricsConfig
    from rlplast.population.run import MemberModel

    pop = make_population([0, 1], learning_starts=50)
    pop.learn(300)
    cfg = MetricsConfig(names=["all"], probe_size=256, n_min=5, probe_steps=20)
    for i in range(2):
        probe = MetricsProbe(cfg, seed=i, echo=False)
        member = MemberModel(pop, i, 100)
        probe.snapshot_init(member)
        probe.compute(member, with_probe=True)  # warm-up: lazy initialisations outside the spy
        spy = _Spy()
        with spy:
            values = probe.compute(member, with_probe=True)
        assert len(values) > 20 and "aten.mm" in spy.ops or "aten.addmm" in spy.ops
        assert not SYNC_OPS & set(spy.ops), sorted(SYNC_OPS & set(spy.ops))


def test_update_with_the_demos_interventions_has_no_host_synchronisation(make_population):
    """The update path with per-member last-layer resets and the NC regularizer (the demo's methods)."""
    pytest.importorskip("rlplast.population.interventions")
    interventions = [
        {"name": "reset_last_layers", "every_steps": 20},
        {"name": "nc_regularizer", "coef": 0.05},
    ]
    pop = make_population([0, 1], learning_starts=40, interventions=interventions)
    pop.learn(60)
    spy = _Spy()
    with spy:
        pop.learn(40, reset_num_timesteps=False)  # updates, resets and the regularizer's term
    assert "aten.baddbmm" in spy.ops
    assert not SYNC_OPS & set(spy.ops), sorted(SYNC_OPS & set(spy.ops))
