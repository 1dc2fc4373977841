"""The shared float64 passes: row blocks, the lower-triangle Gram, one pass for the whole suite."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import rlplast.metrics._shared as shared
from rlplast.metrics import MetricContext, MetricSuite, forward_with_activations
from rlplast.metrics.collapse import collapse_metrics, nc1, nc1_quotient
from rlplast.metrics.plasticity import effective_rank, feature_rank, singular_values, srank, unit_scores
from tests.metrics.test_metrics_collapse import NC_KEYS, as_torch, check, make_data, reference
from tests.metrics.test_metrics_plasticity import ref_ranks
from tests.metrics.test_metrics_suite import make_qnet


@pytest.fixture
def small_blocks(monkeypatch):
    """Row blocks of 64 KiB of float64, so that modest test sizes take the multi-block paths."""
    monkeypatch.setattr(shared, "_BLOCK_BYTES", 64 << 10)
    monkeypatch.setattr(shared, "_MIN_BLOCK_ROWS", 16)


def test_row_blocks_cover_rows_in_order(small_blocks):
    x = torch.randn(1000, 100)
    blocks = shared.row_blocks(x)
    assert len(blocks) > 5
    assert torch.equal(torch.cat(blocks), x)
    seen = [b.clone() for b, scratch in shared.blocks64(x) if scratch]
    assert len(seen) == len(blocks)
    assert torch.equal(torch.cat(seen), x.double())


@pytest.mark.parametrize(("n", "d", "c", "n_min", "seed"), [(3000, 40, 6, 20, 1), (2500, 130, 3, 1, 2)])
def test_collapse_multi_block_matches_reference(small_blocks, n, d, c, n_min, seed):
    h, y, w, b = make_data(n, d, c, seed)
    assert len(shared.row_blocks(torch.as_tensor(h))) > 1
    th, tw, tb = as_torch("cpu", h, w, b, dtype=torch.float32)
    ref = reference(th.double().numpy(), y, tw.double().numpy(), tb.double().numpy(), c, n_min)
    res = collapse_metrics(th, torch.as_tensor(y), tw, tb, c, n_min=n_min)
    check(res, ref, 1e-6)


def test_multi_block_gradient_matches_single_block(monkeypatch):
    h, y, _, _ = make_data(600, 12, 3, 4)
    ty = torch.as_tensor(y)
    grads = []
    for block_bytes in (8 << 20, 8 << 10):
        monkeypatch.setattr(shared, "_BLOCK_BYTES", block_bytes)
        monkeypatch.setattr(shared, "_MIN_BLOCK_ROWS", 16)
        th = torch.tensor(h, requires_grad=True)
        (nc1(th, ty, 3) + nc1_quotient(th, ty, 3)).backward()
        grads.append(th.grad)
    assert len(shared.row_blocks(torch.zeros(600, 12))) > 1  # the second run was multi-block
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-10, atol=1e-14)


@pytest.fixture
def one_thread():
    """Single-threaded BLAS: multi-threaded LAPACK on a busy 2-core machine is 100× slower."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpoolctl.threadpool_limits(1):
        yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("blocks", ["one", "many"])
@pytest.mark.parametrize(("n", "d"), [(600, 300), (300, 130)])
def test_strip_gram_ranks_ill_conditioned(request, one_thread, blocks, n, d):
    """Lower-triangle strip Gram (D >= 128) on a spectrum spanning 1e-5 matches NumPy's SVD."""
    if blocks == "many":
        request.getfixturevalue("small_blocks")
    rng = np.random.default_rng(d)
    u, _ = np.linalg.qr(rng.normal(size=(n, d)))
    v, _ = np.linalg.qr(rng.normal(size=(d, d)))
    sv_true = np.logspace(0, -5, d) * np.sqrt(n) * 3.0
    h = (u * sv_true) @ v.T + 0.5  # an offset too: a large leading singular value
    th = torch.as_tensor(h)
    ref = ref_ranks(h)
    assert float(srank(th)) == ref[0]
    assert float(effective_rank(th)) == pytest.approx(ref[1], rel=1e-6)
    assert float(feature_rank(th)) == ref[2]
    sv = singular_values(th).numpy()
    np.testing.assert_allclose(sv, np.linalg.svd(h, compute_uv=False), rtol=1e-6, atol=1e-6 * sv[0])


def test_unit_scores_multi_block_never_modifies_input(small_blocks):
    for dtype in (torch.float32, torch.float64):
        act = torch.randn(3000, 40, dtype=dtype)
        before = act.clone()
        scores = unit_scores(act)
        assert torch.equal(act, before)  # |.| is taken in place only on our own scratch copy
        torch.testing.assert_close(scores, act.double().abs().mean(0), rtol=1e-12, atol=0)
    conv = torch.randn(500, 3, 4, 4)
    torch.testing.assert_close(unit_scores(conv), conv.double().abs().mean((0, 2, 3)), rtol=1e-12, atol=0)


def test_near_collapse_traces_stay_accurate():
    """Tr Σ_W = Σ‖h‖² − Σ n_c‖μ_c‖² with a large offset and tiny within-class spread."""
    c, d = 4, 16
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(c, d)) + 20.0
    y = rng.integers(0, c, size=2000)
    h = centres[y] + 1e-3 * rng.normal(size=(2000, d))
    w = rng.normal(size=(c, d))
    ref = reference(h, y, w, np.zeros(c), c, 1)
    th, tw = as_torch("cpu", h, w, dtype=torch.float64)
    res = collapse_metrics(th, torch.as_tensor(y), tw, None, c, n_min=1)
    assert ref["nc1_quotient"] < 1e-5
    assert float(res["nc1_quotient"]) == pytest.approx(ref["nc1_quotient"], rel=1e-6)
    assert float(res["nc1"]) == pytest.approx(ref["nc1"], rel=1e-6)


@pytest.mark.parametrize("blocks", ["one", "many"])
def test_suite_shared_pass_equals_pure_functions(request, blocks):
    if blocks == "many":
        request.getfixturevalue("small_blocks")
    q = make_qnet(obs_dim=6, n_actions=4, arch=(64, 48))
    obs = torch.randn(1500, 6)
    actions = torch.randint(0, 4, (1500,))
    values = MetricSuite(names=["collapse", "rank", "dormant"], n_min=5).compute(q, obs, actions)
    with torch.no_grad():
        q.eval()
        acts, feats, qv = forward_with_activations(q, obs)
    w, b = q.q_net[-1].weight.detach(), q.q_net[-1].bias.detach()
    for labeling, labels in (("greedy", qv.argmax(1)), ("taken", actions)):
        ref = collapse_metrics(feats, labels, w, b, 4, n_min=5)
        for key in NC_KEYS + ["c_eff"]:
            want, got = float(ref[key]), values[f"collapse/{key}_{labeling}"]
            assert (math.isnan(want) and math.isnan(got)) or got == pytest.approx(want, rel=1e-9, abs=1e-12)
    sv_ref = singular_values(feats)
    assert values["plasticity/srank"] == float(srank(feats))
    assert values["plasticity/feature_rank"] == float(feature_rank(feats))
    assert values["plasticity/effective_rank"] == pytest.approx(float(effective_rank(feats)), rel=1e-12)
    assert float(sv_ref[0]) > 0
    for name, act in acts.items():
        scores = act.double().abs().mean(0)
        want = float(((scores / scores.mean()) <= 0.025).double().mean())
        assert values[f"plasticity/dormant_fraction/{name}"] == want


def test_hand_built_context_computes_every_piece_once():
    q = make_qnet(n_actions=3)
    obs = torch.randn(200, 6)
    with torch.no_grad():
        acts, feats, qv = forward_with_activations(q, obs)
    ctx = MetricContext(
        q_net=q, obs=obs, activations=acts, features=feats, q_values=qv, taken_actions=None,
        weight=q.q_net[-1].weight, bias=q.q_net[-1].bias, num_classes=3,
    )  # fmt: skip
    first = shared.suite_pass(ctx)
    assert shared.suite_pass(ctx) is first
    fp = first.features
    assert fp.gram is not None and fp.sums is not None and fp.abs_sum is not None
    assert list(first.labels) == ["greedy"]


def test_weight_gradient_through_multi_block_projection(small_blocks):
    """Features without grad, W with grad (as when a caller passes ``layer.weight``): the blocks
    saved for W's backward must not be a reused scratch buffer."""
    h, y, w, b = make_data(2000, 24, 4, 6)
    th = torch.as_tensor(h, dtype=torch.float32)
    tw = torch.tensor(w, requires_grad=True)
    res = collapse_metrics(th, torch.as_tensor(y), tw, torch.as_tensor(b), 4, n_min=1)
    # NC4 is piecewise constant in W; a differentiable use of the logits path: the projections.
    from rlplast.metrics.collapse import class_stats

    s = class_stats(th, torch.as_tensor(y), 4, weight=tw)
    assert s.logits is not None
    s.logits.sum().backward()
    torch.testing.assert_close(tw.grad, th.double().sum(0).expand(4, -1), rtol=1e-10, atol=1e-9)
    assert math.isfinite(float(res["nc4_mismatch"]))


@pytest.mark.parametrize("blocks", ["one", "many"])
def test_scatter_add_class_sums_with_many_actions(request, blocks):
    """C >= 8 on CPU: the suite pass scatter-adds class sums; out-of-range labels count for no class."""
    if blocks == "many":
        request.getfixturevalue("small_blocks")
    n_actions = 9
    assert n_actions >= shared._INDEX_ADD_MIN_CLASSES
    q = make_qnet(obs_dim=6, n_actions=n_actions, arch=(40, 40), seed=3)
    obs = torch.randn(2000, 6)
    taken = torch.randint(0, n_actions, (2000,))
    taken[:30] = -1
    taken[30:45] = n_actions  # outside [0, C): ignored
    with torch.no_grad():
        acts, feats, qv = forward_with_activations(q, obs)
    w, b = q.q_net[-1].weight.detach(), q.q_net[-1].bias.detach()
    ctx = MetricContext(
        q_net=q, obs=obs, activations=acts, features=feats, q_values=qv, taken_actions=taken,
        weight=w, bias=b, num_classes=n_actions, n_min=5, metric_names=("collapse",),
    )  # fmt: skip
    from rlplast.metrics.collapse import collapse

    values = collapse(ctx)
    assert ctx.cache["suite_pass"].features.gram is None  # rank not selected: no Gram
    for labeling, labels in (("greedy", qv.argmax(1)), ("taken", taken)):
        ref = collapse_metrics(feats, labels, w, b, n_actions, n_min=5)
        for key in NC_KEYS + ["c_eff"]:
            want, got = float(ref[key]), float(values[f"collapse/{key}_{labeling}"])
            assert (math.isnan(want) and math.isnan(got)) or got == pytest.approx(want, rel=1e-9, abs=1e-12)
    assert sum(float(values[f"collapse/count_{c}_taken"]) for c in range(n_actions)) == 2000 - 45


def test_non_finite_features_give_nan_not_an_exception():
    """A diverged network (NaN or inf features) yields NaN metrics instead of a LinAlgError."""
    import math

    import torch

    from rlplast.metrics.collapse import collapse_metrics
    from rlplast.metrics.plasticity import effective_rank, singular_values, srank

    gen = torch.Generator().manual_seed(0)
    h = torch.randn(200, 8, generator=gen)
    y = torch.randint(0, 3, (200,), generator=gen)
    w, b = torch.randn(3, 8, generator=gen), torch.zeros(3)
    for bad in (float("nan"), float("inf")):
        hb = h.clone()
        hb[3, 2] = bad
        out = collapse_metrics(hb, y, w, b, 3, n_min=5)
        assert math.isnan(float(out["nc1"]))
        for method in ("gram", "svd"):
            assert torch.isnan(singular_values(hb, method=method)).all()
        assert math.isnan(float(effective_rank(hb)))
        assert math.isnan(float(srank(hb)))
    assert math.isfinite(float(collapse_metrics(h, y, w, b, 3, n_min=5)["nc1"]))
