"""NC metrics against a plain float64 NumPy reference, known answers, edge cases, gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rlplast.metrics.collapse import (
    class_stats,
    collapse_metrics,
    nc1,
    nc1_quotient,
    nc2_equiangular,
    nc2_equinorm,
    nc2_etf_error,
    nc2_maxangle,
    nc3,
    nc3_etf_error,
    nc4_mismatch,
)

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")),
]
NC_KEYS = [
    "nc1",
    "nc1_quotient",
    "nc2_equinorm_means",
    "nc2_equinorm_weights",
    "nc2_equiangular",
    "nc2_maxangle",
    "nc2_etf_error",
    "nc3",
    "nc3_etf_error",
    "nc4_mismatch",
    "nc4_agreement",
]


# Everything computed from the class means (NaN when they coincide); W-only values are not here.
MEANS_KEYS = [k for k in NC_KEYS if k not in ("nc2_equinorm_weights", "nc2_etf_error")]


def reference(
    h: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    b: np.ndarray,
    num_classes: int,
    n_min: int,
    global_mean: str = "classes",
) -> dict:
    """Straightforward definitions: per-class loops, D×D covariances, np.linalg.pinv."""
    counts = np.array([(y == c).sum() for c in range(num_classes)])
    kept = [c for c in range(num_classes) if counts[c] >= max(n_min, 1)]
    out: dict = {"c_eff": float(len(kept)), "counts": counts}
    if len(kept) < 2:
        out.update({k: math.nan for k in NC_KEYS})
        return out
    ce = len(kept)
    mask = np.isin(y, kept)
    hk, yk = h[mask], y[mask]
    n, d = hk.shape
    means = {c: hk[yk == c].mean(0) for c in kept}
    # The mean of the kept samples, or the unweighted mean of the kept class means (default).
    mu_g = hk.mean(0) if global_mean == "samples" else np.mean([means[c] for c in kept], axis=0)
    sw = np.zeros((d, d))
    for c in kept:
        diff = hk[yk == c] - means[c]
        sw += diff.T @ diff
    sw /= n
    m = np.stack([means[c] - mu_g for c in kept], axis=1)  # D×C_eff
    sb = m @ m.T / ce
    # Truncated pinv: top C_eff−1 eigenpairs above 1e-10·λ_max.
    lam, vec = np.linalg.eigh(sb)
    order = np.argsort(lam)[::-1][: ce - 1]
    lam, vec = lam[order], vec[:, order]
    sel = lam >= 1e-10 * lam[0]
    sb_pinv = (vec[:, sel] / lam[sel]) @ vec[:, sel].T
    out["nc1"] = float(np.trace(sw @ sb_pinv) / ce)
    out["nc1_quotient"] = float(np.trace(sw) / np.trace(sb))
    mn = np.linalg.norm(m, axis=0)
    out["nc2_equinorm_means"] = float(np.std(mn) / np.mean(mn))
    wk = w[kept]
    wn = np.linalg.norm(wk, axis=1)
    out["nc2_equinorm_weights"] = float(np.std(wn) / np.mean(wn))
    cos = []
    for i in range(ce):
        for j in range(ce):
            if i != j:
                cos.append(m[:, i] @ m[:, j] / (mn[i] * mn[j]))
    cos = np.array(cos)
    out["nc2_equiangular"] = float(np.std(cos))
    out["nc2_maxangle"] = float(np.mean(np.abs(cos + 1.0 / (ce - 1))))
    wwt = wk @ wk.T
    target = (np.eye(ce) - np.ones((ce, ce)) / ce) / np.sqrt(ce - 1)
    out["nc2_etf_error"] = float(np.linalg.norm(wwt / np.linalg.norm(wwt) - target))
    out["nc3"] = float(np.sum((wk.T / np.linalg.norm(wk) - m / np.linalg.norm(m)) ** 2))
    wm = wk @ m  # C_eff×C_eff
    out["nc3_etf_error"] = float(np.linalg.norm(wm / np.linalg.norm(wm) - target))
    mismatch = 0
    for i in range(n):
        logits = [wk[k] @ hk[i] + b[c] for k, c in enumerate(kept)]
        dists = [np.linalg.norm(hk[i] - means[c]) for c in kept]
        mismatch += int(np.argmax(logits) != np.argmin(dists))
    out["nc4_mismatch"] = mismatch / n
    out["nc4_agreement"] = 1 - mismatch / n
    return out


def make_data(n: int, d: int, c: int, seed: int, sep: float = 1.0):
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(c) * 0.7)  # imbalanced actions
    y = rng.choice(c, size=n, p=probs)
    centres = rng.normal(size=(c, d)) * sep
    h = centres[y] + rng.normal(size=(n, d))
    h = np.maximum(h, 0.0)  # post-ReLU-like
    w = rng.normal(size=(c, d))
    b = rng.normal(size=c) * 0.1
    return h, y, w, b


def as_torch(device, *arrays, dtype=torch.float32):
    return [torch.as_tensor(a, dtype=dtype, device=device) for a in arrays]


def check(res: dict, ref: dict, rtol: float) -> None:
    for key in NC_KEYS + ["c_eff"]:
        got, want = float(res[key].detach()), ref[key]
        if math.isnan(want):
            assert math.isnan(got), key
        else:
            assert got == pytest.approx(want, rel=rtol, abs=1e-9), key
    assert res["counts"].cpu().tolist() == list(ref["counts"])


@pytest.mark.parametrize("global_mean", ["classes", "samples"])
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    ("n", "d", "c", "n_min", "seed"),
    [(400, 8, 3, 1, 0), (600, 32, 6, 20, 1), (900, 16, 18, 20, 2), (300, 64, 5, 1, 3), (60, 100, 4, 5, 4)],
)
def test_collapse_matches_numpy_reference(device, n, d, c, n_min, seed, global_mean):
    h, y, w, b = make_data(n, d, c, seed)
    ref = reference(h, y, w, b, c, n_min, global_mean)
    th, tw, tb = as_torch(device, h, w, b, dtype=torch.float64)
    ty = torch.as_tensor(y, device=device)
    res = collapse_metrics(th, ty, tw, tb, c, n_min=n_min, global_mean=global_mean)
    check(res, ref, 1e-6 if device == "cpu" else 1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_float32_inputs_accumulate_in_float64(device):
    h, y, w, b = make_data(500, 24, 5, 7)
    h32 = h.astype(np.float32)
    ref = reference(
        h32.astype(np.float64), y, w.astype(np.float32).astype(np.float64), b.astype(np.float32), 5, 1
    )
    th, tw, tb = as_torch(device, h32, w.astype(np.float32), b.astype(np.float32))
    res = collapse_metrics(th, torch.as_tensor(y, device=device), tw, tb, 5, n_min=1)
    assert res["nc1"].dtype == torch.float64
    check(res, ref, 1e-6 if device == "cpu" else 1e-5)


@pytest.mark.parametrize("gm", ["classes", "samples"])
def test_single_functions_agree_with_bundle(gm):
    h, y, w, b = make_data(500, 12, 4, 11)
    th, tw, tb = as_torch("cpu", h, w, b, dtype=torch.float64)
    ty = torch.as_tensor(y)
    res = collapse_metrics(th, ty, tw, tb, 4, n_min=5, global_mean=gm)
    assert torch.equal(nc1(th, ty, 4, 5, global_mean=gm), res["nc1"])
    assert torch.equal(nc1_quotient(th, ty, 4, 5, global_mean=gm), res["nc1_quotient"])
    eq_m, eq_w = nc2_equinorm(th, ty, tw, 4, 5, global_mean=gm)
    assert torch.equal(eq_m, res["nc2_equinorm_means"]) and torch.equal(eq_w, res["nc2_equinorm_weights"])
    assert torch.equal(nc2_equiangular(th, ty, 4, 5, global_mean=gm), res["nc2_equiangular"])
    assert torch.equal(nc2_maxangle(th, ty, 4, 5, global_mean=gm), res["nc2_maxangle"])
    assert torch.equal(nc2_etf_error(th, ty, tw, 4, 5), res["nc2_etf_error"])
    assert torch.equal(nc3(th, ty, tw, 4, 5, global_mean=gm), res["nc3"])
    assert torch.equal(nc3_etf_error(th, ty, tw, 4, 5, global_mean=gm), res["nc3_etf_error"])
    assert torch.equal(nc4_mismatch(th, ty, tw, tb, 4, 5), res["nc4_mismatch"])


def simplex_etf(c: int, d: int, seed: int = 0) -> np.ndarray:
    """C×D rows forming a simplex ETF (centred, equal norms, cos = −1/(C−1))."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(d, c)))
    return (np.sqrt(c / (c - 1)) * (np.eye(c) - np.ones((c, c)) / c)) @ q.T


def test_perfect_collapse_gives_zero_nc1_and_nc4():
    c, d = 5, 16
    means = simplex_etf(c, d) * 3.0
    y = np.repeat(np.arange(c), [30, 50, 21, 40, 25])
    h = means[y]
    res = collapse_metrics(
        *as_torch("cpu", h), torch.as_tensor(y), *as_torch("cpu", means, np.zeros(c)), c, n_min=20
    )
    assert float(res["nc1"]) == pytest.approx(0.0, abs=1e-12)
    assert float(res["nc1_quotient"]) == pytest.approx(0.0, abs=1e-12)
    assert float(res["nc4_mismatch"]) == 0.0
    assert float(res["nc4_agreement"]) == 1.0


def test_simplex_etf_with_self_dual_weights():
    c, d = 6, 20
    means = simplex_etf(c, d, seed=3) + 5.0  # global offset: centring must remove it
    rng = np.random.default_rng(0)
    y = rng.integers(0, c, size=600)
    h = means[y] + 0.05 * rng.normal(size=(600, d))
    # Unweighted class means of the data, so W equals the *centred* empirical means.
    emp = np.stack([h[y == k].mean(0) for k in range(c)])
    w = emp - emp.mean(0)
    res = collapse_metrics(
        *as_torch("cpu", h, dtype=torch.float64),
        torch.as_tensor(y),
        *as_torch("cpu", w, np.zeros(c), dtype=torch.float64),
        c,
        n_min=1,
    )
    assert float(res["nc3"]) == pytest.approx(0.0, abs=1e-12)
    # The exact ETF: W = the ideal simplex, error 0 and max-angle/equinorm ≈ 0.
    w_etf = simplex_etf(c, d, seed=3)
    res2 = collapse_metrics(
        *as_torch("cpu", means[y], dtype=torch.float64),
        torch.as_tensor(y),
        *as_torch("cpu", w_etf, np.zeros(c), dtype=torch.float64),
        c,
        n_min=1,
    )
    assert float(res2["nc2_etf_error"]) == pytest.approx(0.0, abs=1e-9)
    assert float(res2["nc3"]) == pytest.approx(0.0, abs=1e-12)
    assert float(res2["nc2_maxangle"]) == pytest.approx(0.0, abs=1e-9)
    assert float(res2["nc2_equiangular"]) == pytest.approx(0.0, abs=1e-9)
    assert float(res2["nc2_equinorm_means"]) == pytest.approx(0.0, abs=1e-9)
    assert float(res2["nc1"]) == pytest.approx(0.0, abs=1e-12)


def test_n_min_drops_classes_and_their_samples():
    h, y, w, b = make_data(800, 10, 5, 5)
    y = np.arange(800) % 4
    y[:12] = 4  # make class 4 tiny
    assert (y == 4).sum() == 12
    th, tw, tb = as_torch("cpu", h, w, b, dtype=torch.float64)
    res = collapse_metrics(th, torch.as_tensor(y), tw, tb, 5, n_min=20)
    assert float(res["c_eff"]) == 4.0
    assert res["counts"].tolist()[4] == 12
    # Same as removing class 4's samples entirely (with any W row for class 4).
    keep = y != 4
    tw2 = tw.clone()
    tw2[4] = 1e6  # a huge row for the dropped class must not matter
    res2 = collapse_metrics(th[torch.as_tensor(keep)], torch.as_tensor(y[keep]), tw2, tb, 5, n_min=20)
    for key in NC_KEYS:
        assert float(res[key]) == pytest.approx(float(res2[key]), rel=1e-10, abs=1e-12), key
    check(res, reference(h, y, w, b, 5, 20), 1e-6)


def test_absent_classes_are_not_zero_means():
    h, y, w, b = make_data(500, 10, 3, 9)
    th, tw, tb = as_torch("cpu", h, w, b, dtype=torch.float64)
    w6 = torch.cat([tw, torch.randn(3, 10, dtype=torch.float64)])
    b6 = torch.cat([tb, torch.zeros(3, dtype=torch.float64)])
    res3 = collapse_metrics(th, torch.as_tensor(y), tw, tb, 3, n_min=1)
    res6 = collapse_metrics(th, torch.as_tensor(y), w6, b6, 6, n_min=1)  # classes 3..5 never occur
    for key in NC_KEYS:
        assert float(res3[key]) == pytest.approx(float(res6[key]), rel=1e-10, abs=1e-12), key
    assert float(res6["c_eff"]) == 3.0


@pytest.mark.parametrize("device", DEVICES)
def test_fewer_than_two_classes_is_nan_not_error(device):
    h, _, w, b = make_data(100, 8, 3, 1)
    th, tw, tb = as_torch(device, h, w, b)
    y = torch.zeros(100, dtype=torch.long, device=device)
    res = collapse_metrics(th, y, tw, tb, 3, n_min=1)
    assert all(math.isnan(float(res[k])) for k in NC_KEYS)
    assert float(res["c_eff"]) == 1.0
    y2 = torch.arange(100, device=device) % 3
    res2 = collapse_metrics(th, y2, tw, tb, 3, n_min=1000)  # every class below n_min
    assert all(math.isnan(float(res2[k])) for k in NC_KEYS)
    assert float(res2["c_eff"]) == 0.0


@pytest.mark.parametrize(
    "case",
    ["all_zero", "duplicated_rows", "d_gt_n", "n_1", "one_class", "empty", "zero_weight", "d_lt_c"],
)
def test_degenerate_inputs_finite_or_nan(case):
    rng = np.random.default_rng(0)
    c, d, n = 4, 8, 50
    h = rng.normal(size=(n, d))
    y = rng.integers(0, c, size=n)
    w = rng.normal(size=(c, d))
    if case == "all_zero":
        h = np.zeros((n, d))
    elif case == "duplicated_rows":
        h = np.tile(h[:1], (n, 1))
    elif case == "d_gt_n":
        h, y = rng.normal(size=(6, 40)), np.array([0, 1, 2, 3, 0, 1])
        w = rng.normal(size=(c, 40))
    elif case == "n_1":
        h, y = h[:1], y[:1]
    elif case == "one_class":
        y = np.full(n, 2)
    elif case == "empty":
        h, y = h[:0], y[:0]
    elif case == "zero_weight":
        w = np.zeros((c, d))
    elif case == "d_lt_c":
        c = 6
        h, y, w = rng.normal(size=(300, 2)), rng.integers(0, c, size=300), rng.normal(size=(c, 2))
    th = torch.tensor(h, dtype=torch.float32, requires_grad=True)
    res = collapse_metrics(th, torch.as_tensor(y, dtype=torch.long), torch.as_tensor(w), None, c, n_min=1)
    for key in NC_KEYS:
        v = float(res[key].detach())
        assert math.isnan(v) or math.isfinite(v), (case, key)
    if case in ("all_zero", "duplicated_rows"):
        # Zero between-class scatter: everything built on the class means is a deliberate NaN,
        # the W-only values stay finite.
        for key in MEANS_KEYS:
            assert math.isnan(float(res[key].detach())), (case, key)
        for key in ("nc2_equinorm_weights", "nc2_etf_error"):
            assert math.isfinite(float(res[key].detach())), (case, key)
    if case == "d_lt_c":
        ref = reference(h, y, w, np.zeros(c), c, 1)
        check(res, ref, 1e-6)
    # The regularizer's backward never raises and stays finite.
    loss = torch.nan_to_num(res["nc1"]) + torch.nan_to_num(res["nc1_quotient"])
    if loss.requires_grad:
        loss.backward()
        assert torch.isfinite(th.grad).all()


@pytest.mark.parametrize("seed", range(8))
def test_coinciding_class_means_give_nan_not_round_off(seed):
    """Duplicated rows leave ~1e-17 round-off in the centred means, which must not be read as a
    direction (cosines, NC3), a spread (equinorm) or a nearest centre (NC4)."""
    rng = np.random.default_rng(seed)
    c, d = 4, 16
    sizes = [3, 7, 11, 13 + seed]
    y = np.repeat(np.arange(c), sizes)
    rng.shuffle(y)
    row = rng.normal(size=d) * 10.0 ** rng.uniform(-3, 3) + rng.normal() * 100
    h = np.tile(row, (len(y), 1))
    w, b = rng.normal(size=(c, d)), rng.normal(size=c)
    for dtype in (torch.float32, torch.float64):
        res = collapse_metrics(
            torch.tensor(h, dtype=dtype),
            torch.as_tensor(y),
            torch.as_tensor(w),
            torch.as_tensor(b),
            c,
            n_min=1,
        )
        for key in MEANS_KEYS:
            assert math.isnan(float(res[key])), (dtype, key, float(res[key]))
    # Class means a small but real distance apart: the values are defined again.
    h2 = h + 1e-3 * np.abs(row).max() * rng.normal(size=(c, d))[y]
    res = collapse_metrics(
        torch.tensor(h2), torch.as_tensor(y), torch.as_tensor(w), torch.as_tensor(b), c, n_min=1
    )
    for key in ("nc1", "nc1_quotient", "nc2_equinorm_means", "nc3", "nc4_mismatch"):
        assert math.isfinite(float(res[key])), key
    ref = reference(h2, y, w, b, c, 1)
    # Within-class scatter is exactly 0 here: the quotient is 0 up to the documented cancellation.
    assert float(res["nc1_quotient"]) == pytest.approx(ref["nc1_quotient"], abs=1e-6)
    assert float(res["nc4_mismatch"]) == pytest.approx(ref["nc4_mismatch"], abs=1e-12)


def test_nc1_gradcheck():
    rng = np.random.default_rng(0)
    y = torch.as_tensor(np.array([0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 3]))
    h = torch.tensor(rng.normal(size=(11, 5)), dtype=torch.float64, requires_grad=True)
    # Class 3 has one sample and is dropped by n_min=2; its gradient must be 0.
    assert torch.autograd.gradcheck(lambda x: nc1(x, y, 4, n_min=2), (h,), eps=1e-6, atol=1e-7, rtol=1e-5)
    assert torch.autograd.gradcheck(lambda x: nc1_quotient(x, y, 4, n_min=2), (h,), eps=1e-6, atol=1e-7)
    assert torch.autograd.gradcheck(lambda x: nc1(x, y, 4, n_min=1), (h,), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_nc1_gradient_finite_at_repeated_eigenvalues():
    # A simplex ETF of class means: Σ_B has C−1 equal eigenvalues (eigenvector backward would be NaN).
    c, d = 4, 6
    means = simplex_etf(c, d)
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(c), 10)
    noise = rng.normal(size=(40, d)) * 0.1
    noise -= np.stack([noise[y == k].mean(0) for k in range(c)])[y]  # keep the means exactly ETF
    h = torch.tensor(means[y] + noise, requires_grad=True)
    val = nc1(h, torch.as_tensor(y), c)
    val.backward()
    assert torch.isfinite(h.grad).all() and h.grad.abs().sum() > 0
    # Agrees with a central finite difference along a random direction.
    v = torch.as_tensor(rng.normal(size=h.shape))
    eps = 1e-6
    with torch.no_grad():
        fd = (nc1(h + eps * v, torch.as_tensor(y), c) - nc1(h - eps * v, torch.as_tensor(y), c)) / (2 * eps)
    assert float((h.grad * v).sum()) == pytest.approx(float(fd), rel=1e-5)


def test_class_stats_mask_and_means():
    h = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [5.0, 5.0]])
    y = torch.tensor([0, 0, 1, 2])
    s = class_stats(h, y, 4, n_min=2)
    assert s.keep.tolist() == [True, False, False, False]
    assert s.counts.tolist() == [2, 1, 1, 0]
    assert float(s.c_eff) == 1.0 and float(s.n_eff) == 2.0
    assert s.means[0].tolist() == [2.0, 0.0] and s.means[1:].abs().sum() == 0
    assert s.sample_keep.tolist() == [1.0, 1.0, 0.0, 0.0]
