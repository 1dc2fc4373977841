"""Plasticity metrics against NumPy references and known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from rlplast.metrics.plasticity import (
    dead_units,
    distance_from_init,
    dormant_units,
    effective_rank,
    feature_norm,
    feature_rank,
    singular_values,
    srank,
    unit_scores,
    weight_magnitudes,
)

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")),
]
METHODS = ["gram", "svd"]


def ref_ranks(h: np.ndarray, delta: float = 0.01, eps: float = 0.01) -> tuple[float, float, float]:
    sv = np.linalg.svd(h, compute_uv=False)
    total = sv.sum()
    k, acc = 0, 0.0
    for k_, s in enumerate(sv, start=1):  # noqa: B007
        acc += s
        k = k_
        if acc / total >= 1 - delta:
            break
    p = sv / total
    p = p[p > 0]
    erank = math.exp(-(p * np.log(p)).sum())
    frank = float((sv / np.sqrt(h.shape[0]) > eps).sum())
    return float(k), erank, frank


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("n", "d", "seed"), [(500, 16, 0), (200, 64, 1), (30, 80, 2), (1000, 32, 3)])
def test_ranks_match_numpy(device, method, n, d, seed):
    rng = np.random.default_rng(seed)
    # Decaying spectrum so srank < D and the threshold is not hit exactly.
    h = rng.normal(size=(n, d)) @ np.diag(np.exp(-np.arange(d) / 6.0)) @ rng.normal(size=(d, d))
    ref = ref_ranks(h)
    th = torch.as_tensor(h, device=device)
    rtol = 1e-6 if device == "cpu" else 1e-5
    assert float(srank(th, method=method)) == ref[0]
    assert float(effective_rank(th, method=method)) == pytest.approx(ref[1], rel=rtol)
    assert float(feature_rank(th, method=method)) == ref[2]
    sv = singular_values(th, method=method).cpu().numpy()
    np.testing.assert_allclose(sv, np.linalg.svd(h, compute_uv=False), rtol=1e-6, atol=1e-6 * sv[0])


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("r", [1, 3, 7])
def test_feature_rank_of_rank_r_features(method, r):
    rng = np.random.default_rng(r)
    h = rng.normal(size=(400, r)) @ rng.normal(size=(r, 24))
    th = torch.as_tensor(h, dtype=torch.float32)
    assert float(feature_rank(th, method=method)) == r
    assert float(srank(th, method=method)) <= r
    assert float(effective_rank(th, method=method)) == pytest.approx(ref_ranks(h)[1], rel=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_rank_edge_cases(method):
    zeros = torch.zeros(50, 8)
    assert float(srank(zeros, method=method)) == 0.0
    assert float(effective_rank(zeros, method=method)) == 0.0
    assert float(feature_rank(zeros, method=method)) == 0.0
    one = torch.randn(1, 8)
    assert float(srank(one, method=method)) == 1.0
    assert float(effective_rank(one, method=method)) == pytest.approx(1.0)
    assert float(feature_rank(one, method=method)) == 1.0
    dup = torch.randn(1, 8).repeat(30, 1)
    assert float(feature_rank(dup, method=method)) == 1.0
    assert float(srank(dup, method=method)) == 1.0


def relu_layer_with_dead_units() -> tuple[torch.Tensor, nn.Sequential]:
    torch.manual_seed(0)
    layer = nn.Sequential(nn.Linear(5, 10), nn.ReLU())
    with torch.no_grad():
        layer[0].weight[:3] = 0.0
        layer[0].bias[:3] = -1.0  # units 0..2 are always 0 after ReLU
        layer[0].bias[3:] = 2.0
    x = torch.randn(256, 5)
    return layer(x), layer


@pytest.mark.parametrize("device", DEVICES)
def test_dead_and_dormant_units(device):
    act, _ = relu_layer_with_dead_units()
    act = act.detach().to(device)
    dead, units = dead_units(act)
    assert float(dead) == 3.0 and units == 10
    dormant, units = dormant_units(act, tau=0.025)
    assert float(dormant) >= 3.0 and units == 10
    # Reference for the dormant score.
    a = act.cpu().double().numpy()
    score = np.abs(a).mean(0)
    s = score / score.mean()
    assert float(dormant) == float((s <= 0.025).sum())
    # Large τ makes weak units dormant too.
    act2 = act.clone()
    act2[:, 3] *= 1e-3
    assert float(dormant_units(act2, tau=0.025)[0]) == 4.0
    assert float(dead_units(act2)[0]) == 3.0


def test_dormant_conv_and_all_silent_layer():
    act = torch.rand(8, 4, 5, 5)
    act[:, 1] = 0.0
    assert unit_scores(act).shape == (4,)
    assert float(dead_units(act)[0]) == 1.0
    assert float(dormant_units(act)[0]) == 1.0
    silent = torch.zeros(16, 6)
    assert float(dormant_units(silent)[0]) == 6.0
    assert float(dead_units(silent)[0]) == 6.0
    empty = torch.zeros(0, 6)
    assert float(dead_units(empty)[0]) == 6.0  # no evidence of activity


def test_weight_magnitude_distance_and_feature_norm():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    mags = weight_magnitudes(net)
    assert set(mags) == {"0", "2"}
    assert float(mags["0"]) == pytest.approx(net[0].weight.abs().mean().item(), rel=1e-6)
    init = [p.detach().clone() for p in net.parameters()]
    assert float(distance_from_init(net.parameters(), init)) == 0.0
    with torch.no_grad():
        net[2].bias += torch.tensor([3.0, 0.0, 4.0])
    assert float(distance_from_init(net.parameters(), init)) == pytest.approx(5.0)
    with pytest.raises(ValueError):
        distance_from_init(net.parameters(), init[:-1])
    h = torch.tensor([[3.0, 4.0], [0.0, 1.0]])
    assert float(feature_norm(h)) == pytest.approx(3.0)
    assert math.isnan(float(feature_norm(torch.zeros(0, 2))))
