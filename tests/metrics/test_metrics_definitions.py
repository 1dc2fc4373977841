"""The published NC variants rlplast offers besides its own (docs/metrics.md, "Definitions compared
with other code"): the sample-weighted global mean (``nc_global_mean: samples``) and the paper's NC3
(``nc3_etf_error``), against hand-computed values and a literal transcription of the paper's code.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rlplast.callbacks import MetricsProbe
from rlplast.config import config_from_dict
from rlplast.errors import UserError
from rlplast.metrics import MetricSuite, forward_with_activations
from rlplast.metrics.collapse import (
    collapse_metrics,
    nc1,
    nc1_quotient,
    nc3,
    nc3_etf_error,
    nc4_mismatch,
)

F64 = torch.float64

# ---------------------------------------------------------------- an imbalanced case by hand
# C = 3 classes of sizes 1 / 2 / 5 in D = 2:
#   class 0: (0, 0)                                    μ_0 = (0, 0)
#   class 1: (2, 1), (2, −1)                           μ_1 = (2, 0)
#   class 2: (1, 2), (−1, 2), (1, 2), (−1, 2), (0, 2)  μ_2 = (0, 2)
# N = 8. Within-class deviations: (0, ±1) once each, (±1, 0) twice each, 0 otherwise, so
#   Σ_W = diag(4, 2) / 8 = diag(1/2, 1/4),  Tr Σ_W = 3/4.
#
# samples: μ_G = (1·μ_0 + 2·μ_1 + 5·μ_2)/8 = (1/2, 5/4);
#   centred means (−1/2, −5/4), (3/2, −5/4), (−1/2, 3/4);
#   Σ_B = A/3 with A = Σ_c m_c m_cᵀ = [[11/4, −13/8], [−13/8, 59/16]], det A = 15/2,
#   Σ_B⁻¹ = 3 A⁻¹ = (3/(15/2)) [[59/16, 13/8], [13/8, 11/4]],
#   Tr(Σ_W Σ_B⁻¹) = (2/5)(1/2 · 59/16 + 1/4 · 11/4) = (2/5)(81/32) = 81/80,
#   NC1 = 81/80 / 3 = 27/80 = 0.3375;  Tr Σ_B = (11/4 + 59/16)/3 = 103/48,
#   quotient = (3/4)/(103/48) = 36/103.
# classes: μ_G = (2/3, 2/3); centred means (−2/3, −2/3), (4/3, −2/3), (−2/3, 4/3);
#   A = [[8/3, −4/3], [−4/3, 8/3]], Σ_B⁻¹ = 3 A⁻¹ = [[3/2, 3/4], [3/4, 3/2]],
#   Tr(Σ_W Σ_B⁻¹) = 1/2 · 3/2 + 1/4 · 3/2 = 9/8, NC1 = 3/8 = 0.375;
#   Tr Σ_B = (16/3)/3 = 16/9, quotient = (3/4)/(16/9) = 27/64.
H_HAND = [[0, 0], [2, 1], [2, -1], [1, 2], [-1, 2], [1, 2], [-1, 2], [0, 2]]
Y_HAND = [0, 1, 1, 2, 2, 2, 2, 2]
NC1_SAMPLES, NC1_CLASSES = 27 / 80, 3 / 8
QUOTIENT_SAMPLES, QUOTIENT_CLASSES = 36 / 103, 27 / 64


def hand_case(extra_dims: int = 0, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The hand case, optionally rotated into ``2 + extra_dims`` dimensions with within-class noise
    orthogonal to the class means (Σ_B then has rank 2 < D: the truncated pseudo-inverse ignores
    that noise, so NC1 is unchanged)."""
    h = np.array(H_HAND, dtype=np.float64)
    y = np.array(Y_HAND)
    if extra_dims:
        rng = np.random.default_rng(seed)
        d = 2 + extra_dims
        q, _ = np.linalg.qr(rng.normal(size=(d, d)))
        noise = rng.normal(size=(len(y), extra_dims))
        for c in range(3):  # zero-mean per class: the class means stay in the first two axes
            noise[y == c] -= noise[y == c].mean(0)
        h = np.concatenate([h, noise], axis=1) @ q.T + 3.0  # rotate and offset
    return torch.tensor(h, dtype=F64), torch.tensor(y)


@pytest.mark.parametrize("extra_dims", [0, 3])
def test_nc1_sample_mean_on_an_imbalanced_case_by_hand(extra_dims):
    h, y = hand_case(extra_dims)
    assert float(nc1(h, y, 3, global_mean="samples")) == pytest.approx(NC1_SAMPLES, rel=1e-12)
    assert float(nc1(h, y, 3)) == pytest.approx(NC1_CLASSES, rel=1e-12)  # default: classes
    if extra_dims:
        return  # the quotient's Tr Σ_W includes the orthogonal noise (NC1's Σ_B^† ignores it)
    assert float(nc1_quotient(h, y, 3, global_mean="samples")) == pytest.approx(QUOTIENT_SAMPLES, rel=1e-12)
    assert float(nc1_quotient(h, y, 3, global_mean="classes")) == pytest.approx(QUOTIENT_CLASSES, rel=1e-12)


def paper_nc(h: np.ndarray, y: np.ndarray, w: np.ndarray, b: np.ndarray, k: int) -> dict[str, float]:
    """A literal NumPy transcription of the paper's util/neural_collapse.py (gianhess/dl_project):
    sample mean μ_G, Σ_B divided by K, NC1 = Tr(Σ_W pinv(Σ_B))/K, NC3 = ‖WH/‖WH‖ − ETF‖, NC4 =
    agreement of argmax(Wh + b) with the nearest class mean. The pseudo-inverse is given rlplast's
    cut-off (rcond 1e-10) instead of torch's dtype-dependent default."""
    n, d = h.shape
    mu_g = h.sum(0) / n
    mu_c = {c: h[y == c].mean(0) for c in range(k)}
    sw = np.zeros((d, d))
    for i in range(n):
        diff = (h[i] - mu_c[y[i]])[:, None]
        sw += diff @ diff.T
    sw /= n
    sb = np.zeros((d, d))
    for c in range(k):
        diff = (mu_c[c] - mu_g)[:, None]
        sb += diff @ diff.T
    sb /= k
    nc1_value = np.trace(sw @ np.linalg.pinv(sb, rcond=1e-10)) / k
    hm = np.stack([mu_c[c] - mu_g for c in range(k)], axis=1)  # D×K
    wh = w @ hm
    wh /= np.linalg.norm(wh)
    sub = (np.eye(k) - np.ones((k, k)) / k) / math.sqrt(k - 1)
    centers = np.stack([mu_c[c] for c in range(k)])
    nearest = np.argmin(((h[:, None, :] - centers[None]) ** 2).sum(-1), axis=1)
    preds = np.argmax(h @ w.T + b, axis=1)
    return {
        "nc1": float(nc1_value),
        "nc3": float(np.linalg.norm(wh - sub)),
        "nc4": float((nearest == preds).mean()),
    }


@pytest.mark.parametrize(("n", "d", "k", "seed"), [(300, 10, 3, 0), (500, 32, 6, 1), (200, 4, 5, 2)])
def test_samples_variant_reproduces_the_papers_code(n, d, k, seed):
    """Every class present and n_min = 1: ``samples`` NC1, ``nc3_etf_error`` and the agreement are
    the paper's NC1, NC3 and NC4 (to round-off); the default ``classes`` NC1 differs."""
    rng = np.random.default_rng(seed)
    probs = np.array([0.6] + [0.4 / (k - 1)] * (k - 1))  # one frequent action, as in RL
    y = rng.choice(k, size=n, p=probs)
    y[:k] = np.arange(k)  # every class present
    h = np.maximum(rng.normal(size=(k, d))[y] * 2.0 + rng.normal(size=(n, d)), 0.0)
    w, b = rng.normal(size=(k, d)), rng.normal(size=k) * 0.1
    ref = paper_nc(h, y, w, b, k)
    res = collapse_metrics(
        torch.tensor(h), torch.tensor(y), torch.tensor(w), torch.tensor(b), k, n_min=1, global_mean="samples"
    )
    assert float(res["nc1"]) == pytest.approx(ref["nc1"], rel=1e-9)
    assert float(res["nc3_etf_error"]) == pytest.approx(ref["nc3"], rel=1e-9)
    assert float(res["nc4_agreement"]) == pytest.approx(ref["nc4"], abs=1e-12)
    default = collapse_metrics(torch.tensor(h), torch.tensor(y), torch.tensor(w), torch.tensor(b), k, n_min=1)
    assert float(default["nc1"]) != pytest.approx(ref["nc1"], rel=1e-3)
    # NC4 does not depend on the global mean.
    assert float(default["nc4_mismatch"]) == float(res["nc4_mismatch"])


def test_balanced_classes_give_the_same_values_under_both_means():
    rng = np.random.default_rng(4)
    k, d, per = 5, 12, 40
    y = np.repeat(np.arange(k), per)
    rng.shuffle(y)
    h = rng.normal(size=(k, d))[y] + 0.5 * rng.normal(size=(k * per, d))
    w, b = rng.normal(size=(k, d)), rng.normal(size=k)
    args = (torch.tensor(h), torch.tensor(y), torch.tensor(w), torch.tensor(b), k)
    a = collapse_metrics(*args, n_min=1, global_mean="classes")
    s = collapse_metrics(*args, n_min=1, global_mean="samples")
    for key, value in a.items():
        if key == "counts":
            assert torch.equal(value, s[key])
        else:
            assert float(s[key]) == pytest.approx(float(value), rel=1e-12, abs=1e-14), key


def test_samples_mean_uses_kept_samples_only():
    """A class dropped by n_min takes its samples with it: μ_G is the mean of the kept samples."""
    h, y = hand_case()
    # Every sample twice (sizes 2 / 4 / 10: same means, same Σ_W) plus one far-away sample of a
    # fourth class, which n_min = 2 drops.
    h2 = torch.cat([h, h, torch.tensor([[50.0, -40.0]], dtype=F64)])
    y2 = torch.cat([y, y, torch.tensor([3])])
    assert float(nc1(h2, y2, 4, n_min=2, global_mean="samples")) == pytest.approx(NC1_SAMPLES, rel=1e-12)
    assert float(nc1(h2, y2, 4, n_min=1, global_mean="samples")) != pytest.approx(NC1_SAMPLES, rel=1e-3)


def test_nc1_samples_gradient_is_finite_and_matches_finite_differences():
    h, y = hand_case(extra_dims=2)
    h = h.clone().requires_grad_(True)
    torch.autograd.gradcheck(lambda x: nc1(x, y, 3, global_mean="samples"), (h,), eps=1e-6, atol=1e-6)


# ---------------------------------------------------------------- the paper's NC3


def simplex_etf(c: int, d: int, seed: int = 0) -> np.ndarray:
    """C×D rows forming a simplex ETF (centred, equal norms, cos = −1/(C−1))."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(d, c)))
    return (np.sqrt(c / (c - 1)) * (np.eye(c) - np.ones((c, c)) / c)) @ q.T


@pytest.mark.parametrize("global_mean", ["classes", "samples"])
def test_nc3_etf_error_is_zero_on_a_simplex_etf(global_mean):
    c, d = 5, 16
    etf = simplex_etf(c, d, seed=2)
    rng = np.random.default_rng(0)
    y = np.concatenate([np.arange(c)] * 4)  # balanced: the ETF is centred under both means
    h = etf[y] + 7.0  # features exactly at the (offset) class means
    res = collapse_metrics(
        torch.tensor(h), torch.tensor(y), torch.tensor(2.5 * etf), None, c, n_min=1, global_mean=global_mean
    )
    assert float(res["nc3_etf_error"]) == pytest.approx(0.0, abs=1e-12)
    assert float(res["nc3"]) == pytest.approx(0.0, abs=1e-12)
    # A sixth, absent class (any W row) is dropped: still an ETF over C_eff = 5.
    w6 = np.concatenate([2.5 * etf, rng.normal(size=(1, d))])
    assert float(nc3_etf_error(torch.tensor(h), torch.tensor(y), torch.tensor(w6), 6)) == pytest.approx(
        0.0, abs=1e-12
    )


def test_nc3_etf_error_by_hand():
    # C = 2, D = 1: class means ∓1 (μ_G = 0), W = [[1], [0]]: WM̃ = [[−1, 1], [0, 0]], unit-normed
    # [[−1, 1], [0, 0]]/√2; target (I − 11ᵀ/2)/1 = [[½, −½], [−½, ½]];
    # ‖diff‖² = 2(1/√2 + ½)² + 2·¼ = 2 + √2.
    h = torch.tensor([[-1.0], [1.0]], dtype=F64)
    value = nc3_etf_error(h, torch.tensor([0, 1]), torch.tensor([[1.0], [0.0]], dtype=F64), 2)
    assert float(value) == pytest.approx(math.sqrt(2 + math.sqrt(2)), rel=1e-14)
    # C = 3, D = 2: means (1, 0), (−1, 0), (0, 0) (μ_G = 0), W = M̃ᵀ, i.e. self-dual: nc3 = 0.
    # WM̃/‖WM̃‖ = [[1, −1, 0], [−1, 1, 0], [0, 0, 0]]/2; with t = 1/(3√2) the target has 2t on the
    # diagonal and −t off it: ‖diff‖² = 2(½ − 2t)² + (2t)² + 2(½ − t)² + 4t² = 1 − 6t + 18t² = 2 − √2.
    # Self-duality holds, the geometry is not an ETF: no conversion between the two NC3s.
    h3 = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 0.0]], dtype=F64)
    y3 = torch.tensor([0, 1, 2])
    assert float(nc3_etf_error(h3, y3, h3, 3)) == pytest.approx(math.sqrt(2 - math.sqrt(2)), rel=1e-14)
    assert float(nc3(h3, y3, h3, 3)) == pytest.approx(0.0, abs=1e-15)


def test_nc3_etf_error_nan_cases():
    h, y = hand_case()
    w = torch.randn(3, 2, dtype=F64)
    assert math.isnan(float(nc3_etf_error(h, y, torch.zeros(3, 2, dtype=F64), 3)))  # W = 0
    assert math.isnan(float(nc3_etf_error(torch.ones(8, 2, dtype=F64), y, w, 3)))  # coinciding means
    assert math.isnan(float(nc3_etf_error(h, torch.zeros(8, dtype=torch.long), w, 3)))  # C_eff = 1
    assert math.isfinite(float(nc4_mismatch(h, y, w, None, 3)))


# ---------------------------------------------------------------- the option end to end


def test_bad_global_mean_is_a_one_line_user_error():
    h, y = hand_case()
    with pytest.raises(
        UserError, match=r"^nc_global_mean: 'sample' is not allowed; valid: classes, samples$"
    ):
        MetricSuite(names=["collapse"], nc_global_mean="sample")
    with pytest.raises(UserError, match="valid: classes, samples"):
        nc1(h, y, 3, global_mean="weighted")
    with pytest.raises(
        UserError, match=r"metrics.nc_global_mean: 'weighted' is not allowed; valid: classes, samples"
    ):
        config_from_dict({"metrics": {"nc_global_mean": "weighted"}})
    assert config_from_dict({}).metrics.nc_global_mean == "classes"


def test_config_option_reaches_the_suite_and_its_values():
    import gymnasium as gym
    from stable_baselines3.common.torch_layers import FlattenExtractor
    from stable_baselines3.dqn.policies import QNetwork

    cfg = config_from_dict({"metrics": {"nc_global_mean": "samples", "n_min": 1}})
    probe = MetricsProbe(cfg.metrics, seed=0, echo=False)
    assert probe.suite.nc_global_mean == "samples"
    assert probe.cheap_suite is not None and probe.cheap_suite.nc_global_mean == "samples"
    assert MetricsProbe(config_from_dict({}).metrics, seed=0, echo=False).suite.nc_global_mean == "classes"

    torch.manual_seed(0)
    space = gym.spaces.Box(-np.inf, np.inf, (6,), np.float32)
    extractor = FlattenExtractor(space)
    q = QNetwork(space, gym.spaces.Discrete(3), extractor, 6, net_arch=[16, 16])
    obs = torch.randn(400, 6)
    actions = torch.tensor([0] * 30 + [1] * 90 + [2] * 280)  # imbalanced taken actions
    samples = MetricSuite(names=["collapse"], n_min=cfg.metrics.n_min, nc_global_mean="samples")
    values = samples.compute(q, obs, taken_actions=actions)
    default = MetricSuite(names=["collapse"], n_min=1).compute(q, obs, taken_actions=actions)
    with torch.no_grad():
        _, feats, _ = forward_with_activations(q, obs)
    head = q.q_net[-1]
    ref = collapse_metrics(feats, actions, head.weight, head.bias, 3, n_min=1, global_mean="samples")
    for key in ("nc1", "nc1_quotient", "nc3", "nc3_etf_error"):
        assert values[f"collapse/{key}_taken"] == pytest.approx(float(ref[key].detach()), rel=1e-9), key
    assert values["collapse/nc1_taken"] != pytest.approx(default["collapse/nc1_taken"], rel=1e-6)
    assert "collapse/nc3_etf_error_greedy" in values and "collapse/nc3_etf_error_greedy" in default
