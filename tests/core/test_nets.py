"""rlplast.nets: finding layers, the one re-initialisation contract, fresh draws, shrink-and-perturb."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from rlplast.nets import (
    FreshInit,
    copy_parameters,
    covered_parameter_names,
    drop_optimizer_state,
    last_linear,
    linear_layers,
    reinitialise,
    resettable_modules,
    shrink_perturb_,
)


class WithBareParameter(nn.Module):
    """A network with a parameter no initialiser covers (``scale``) and a buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 5), nn.ReLU())
        self.q_net = nn.Sequential(nn.Linear(5, 2))
        self.scale = nn.Parameter(torch.full((2,), 3.0))
        self.register_buffer("count", torch.zeros(1))


def test_finding_layers():
    net = WithBareParameter()
    assert [n for n, _ in linear_layers(net)] == ["body.0", "body.2", "q_net.0"]
    assert last_linear(net) is net.q_net[0]
    plain = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1))
    assert last_linear(plain) is plain[2]
    with pytest.raises(TypeError):
        last_linear(nn.ReLU())
    assert [n for n, _ in resettable_modules(net)] == ["body.0", "body.2", "q_net.0"]
    assert covered_parameter_names(net) == {
        f"{m}.{p}" for m in ("body.0", "body.2", "q_net.0") for p in ("weight", "bias")
    }


def test_reinitialise_is_reset_parameters_in_module_order_in_place():
    net = WithBareParameter()
    tensors = [p for p in net.parameters()]
    reference = copy.deepcopy(net)
    torch.manual_seed(5)
    assert reinitialise(net) is net
    torch.manual_seed(5)
    for module in reference.modules():  # the contract, written out
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    for (name, a), b in zip(net.named_parameters(), reference.parameters(), strict=True):
        assert torch.equal(a, b), name
    assert all(a is b for a, b in zip(tensors, net.parameters(), strict=True))  # same tensors
    assert torch.equal(net.scale, torch.full((2,), 3.0))  # no initialiser covers it


def test_reinitialise_of_one_layer_draws_like_its_reset_parameters():
    a, b = nn.Linear(4, 3), nn.Linear(4, 3)
    torch.manual_seed(1)
    reinitialise(a)
    torch.manual_seed(1)
    b.reset_parameters()
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)


def test_fresh_init_draws_without_touching_the_network():
    net = WithBareParameter()
    before = copy.deepcopy(net.state_dict())
    fresh = FreshInit(net)
    seeded = {k: v.clone() for k, v in fresh.draw(seed=3).items()}
    rng = torch.get_rng_state()
    again = fresh.draw(seed=3)
    assert torch.equal(rng, torch.get_rng_state())  # a seeded draw leaves the global RNG alone
    assert seeded.keys() == dict(net.named_parameters()).keys()
    assert all(torch.equal(seeded[k], again[k]) for k in seeded)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())
    torch.manual_seed(3)
    expected = reinitialise(copy.deepcopy(net))
    torch.manual_seed(3)
    unseeded = fresh.draw()  # from the global RNG, as reinitialise on a copy
    for name, p in expected.named_parameters():
        assert torch.equal(unseeded[name], p), name
    assert not any(p.requires_grad for p in fresh.scratch.parameters())


def test_shrink_perturb_formula():
    params = [torch.tensor([1.0, -2.0]), torch.tensor([[4.0]])]
    fresh = [torch.tensor([10.0, 20.0]), torch.tensor([[-1.0]])]
    shrink_perturb_(params, fresh, 0.5, 0.1)
    assert torch.equal(params[0], torch.tensor([0.5 + 1.0, -1.0 + 2.0]))
    torch.testing.assert_close(params[1], torch.tensor([[2.0 - 0.1]]))
    with pytest.raises(ValueError):
        shrink_perturb_(params, fresh[:1], 0.5, 0.1)


def test_copy_parameters_whole_network_and_named_modules():
    src, dst = WithBareParameter(), WithBareParameter()
    with torch.no_grad():
        src.scale.fill_(7.0)
        src.count.fill_(2.0)
    copy_parameters(src, dst, ["q_net.0"])
    assert torch.equal(dst.q_net[0].weight, src.q_net[0].weight)
    assert not torch.equal(dst.body[0].weight, src.body[0].weight)
    assert torch.equal(dst.scale, torch.full((2,), 3.0))
    copy_parameters(src, dst)
    for a, b in zip(src.state_dict().values(), dst.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_drop_optimizer_state_of_exactly_the_given_parameters():
    net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    opt = torch.optim.Adam(net.parameters())
    net(torch.randn(4, 2)).sum().backward()
    opt.step()
    assert drop_optimizer_state(opt, net[1].parameters()) == 2
    assert set(opt.state) == set(net[0].parameters())
    assert drop_optimizer_state(opt, net[1].parameters()) == 0
