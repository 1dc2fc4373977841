"""Benchmark the metric suite (collapse + rank + dormant) against a straightforward reference.

The reference computes the same quantities the obvious way: per-class Python loops for the class
means and ``Σ_W``, the ``D×D`` ``Σ_B`` with ``torch.linalg.pinv``, a full (thin, with singular
vectors) ``torch.linalg.svd`` for the ranks, and one host transfer per value. Both run in float64
on the same precomputed forward pass (its time is reported separately); probe plasticity is timed
on its own.

Usage::

    python benchmarks/metrics_bench.py --quick
    python benchmarks/metrics_bench.py --n 10000 --d 512 --c 2 6 18
    python benchmarks/metrics_bench.py --threads 1   # full grid N × D × C (see --help)
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.torch_layers import FlattenExtractor
from stable_baselines3.dqn.policies import QNetwork

from rlplast.metrics import METRICS, MetricContext, forward_with_activations, last_linear
from rlplast.metrics.probe import probe_plasticity

DT = torch.float64
SUITE = ("collapse", "rank", "dormant")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, repeats: int) -> tuple[float, object]:
    out = fn()  # warm-up
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def make_net(d: int, c: int, obs_dim: int, device: torch.device) -> QNetwork:
    space = gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
    ext = FlattenExtractor(space)
    return QNetwork(space, gym.spaces.Discrete(c), ext, obs_dim, net_arch=[d, d]).to(device).eval()


def suite_metrics(ctx: MetricContext) -> dict[str, float]:
    # A fresh context per call, as MetricSuite builds one per evaluation: nothing cached across repeats.
    ctx = dataclasses.replace(ctx, metric_names=SUITE, cache={})
    results: dict[str, torch.Tensor] = {}
    for name in SUITE:
        results.update(METRICS.get(name)(ctx))
    keys = list(results)
    host = torch.cat([v.reshape(-1).to(DT) for v in results.values()]).cpu().tolist()  # one transfer
    return dict(zip(keys, host, strict=True))


def reference_collapse(
    h: torch.Tensor, y: torch.Tensor, w: torch.Tensor, b: torch.Tensor, c: int, n_min: int
):
    h, w, b = h.to(DT), w.to(DT), b.to(DT)
    kept = [k for k in range(c) if int((y == k).sum()) >= n_min]
    out: dict[str, float] = {"c_eff": float(len(kept))}
    if len(kept) < 2:
        return out
    d = h.shape[1]
    means, sw, n = {}, torch.zeros(d, d, dtype=DT, device=h.device), 0
    for k in kept:
        hk = h[y == k]
        means[k] = hk.mean(0)
        diff = hk - means[k]
        sw += diff.T @ diff
        n += hk.shape[0]
    sw /= n
    mu_g = torch.stack([means[k] for k in kept]).mean(0)
    m = torch.stack([means[k] - mu_g for k in kept], 1)
    sb = m @ m.T / len(kept)
    out["nc1"] = float(torch.trace(sw @ torch.linalg.pinv(sb, rtol=1e-10)) / len(kept))
    out["nc1_quotient"] = float(torch.trace(sw) / torch.trace(sb))
    mn = m.norm(dim=0)
    wk = w[kept]
    wn = wk.norm(dim=1)
    out["nc2_equinorm_means"] = float(mn.std(unbiased=False) / mn.mean())
    out["nc2_equinorm_weights"] = float(wn.std(unbiased=False) / wn.mean())
    cos = [
        float(m[:, i] @ m[:, j] / (mn[i] * mn[j]))
        for i in range(len(kept))
        for j in range(len(kept))
        if i != j
    ]
    out["nc2_equiangular"] = float(np.std(cos))
    out["nc2_maxangle"] = float(np.mean(np.abs(np.array(cos) + 1 / (len(kept) - 1))))
    wwt = wk @ wk.T
    eye = torch.eye(len(kept), dtype=DT, device=h.device)
    target = (eye - 1.0 / len(kept)) / (len(kept) - 1) ** 0.5
    out["nc2_etf_error"] = float((wwt / wwt.norm() - target).norm())
    out["nc3"] = float(((wk.T / wk.norm() - m / m.norm()) ** 2).sum())
    mask = torch.isin(y, torch.tensor(kept, device=h.device))
    hk = h[mask]
    pred = (hk @ wk.T + b[kept]).argmax(1)
    ncc = torch.cdist(hk, torch.stack([means[k] for k in kept])).argmin(1)
    out["nc4_mismatch"] = float((pred != ncc).to(DT).mean())
    return out


def reference_all(
    acts: dict[str, torch.Tensor], feats: torch.Tensor, q: torch.Tensor, taken: torch.Tensor, w, b, c
):
    out: dict[str, float] = {}
    for label, y in (("greedy", q.argmax(1)), ("taken", taken)):
        for k, v in reference_collapse(feats, y, w, b, c, 20).items():
            out[f"{k}_{label}"] = v
    _, s, _ = torch.linalg.svd(feats.to(DT), full_matrices=False)
    p = s / s.sum()
    cum = torch.cumsum(s, 0) / s.sum()
    out["srank"] = float(int((cum < 0.99).sum()) + 1)
    out["effective_rank"] = float(torch.exp(-(p[p > 0] * p[p > 0].log()).sum()))
    out["feature_rank"] = float((s / feats.shape[0] ** 0.5 > 0.01).sum())
    for name, a in acts.items():
        score = a.to(DT).abs().mean(0)
        out[f"dormant/{name}"] = float(((score / score.mean()) <= 0.025).to(DT).mean())
        out[f"dead/{name}"] = float((score == 0).sum())
    return out


def bench(n: int, d: int, c: int, device: torch.device, repeats: int) -> dict[str, float]:
    torch.manual_seed(0)
    net = make_net(d, c, 16, device)
    obs = torch.randn(n, 16, device=device)
    taken = torch.randint(0, c, (n,), device=device)
    with torch.no_grad():
        t_fwd, (acts, feats, q) = timed(lambda: forward_with_activations(net, obs), device, repeats)
    head = last_linear(net)
    w, b = head.weight.detach(), head.bias.detach()
    ctx = MetricContext(
        q_net=net, obs=obs, activations=acts, features=feats, q_values=q, taken_actions=taken,
        weight=w, bias=b, num_classes=c, n_min=20,
    )  # fmt: skip
    with torch.no_grad():
        t_suite, fast = timed(lambda: suite_metrics(ctx), device, repeats)
        t_ref, ref = timed(lambda: reference_all(acts, feats, q, taken, w, b, c), device, repeats)
    nc1_fast, nc1_ref = fast.get("collapse/nc1_taken", float("nan")), ref.get("nc1_taken", float("nan"))
    rel = abs(nc1_fast - nc1_ref) / max(abs(nc1_ref), 1e-300)
    return {"fwd": t_fwd, "suite": t_suite, "ref": t_ref, "nc1_rel_diff": rel}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="N∈{2000,10000}, D∈{64,512}, C∈{2,18}")
    parser.add_argument("--n", type=int, nargs="+", default=None)
    parser.add_argument("--d", type=int, nargs="+", default=None)
    parser.add_argument("--c", type=int, nargs="+", default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--probe-steps", type=int, default=500)
    parser.add_argument("--no-probe", action="store_true")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (training workers use 1)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ns = args.n or ([2000, 10000] if args.quick else [2000, 10000, 50000])
    ds = args.d or ([64, 512] if args.quick else [64, 256, 512])
    cs = args.c or ([2, 18] if args.quick else [2, 6, 18])
    device = torch.device(args.device)
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu ({torch.get_num_threads()} threads)"
    )
    print(f"device: {name}; torch {torch.__version__}; median of {args.repeats} after 1 warm-up")
    header = f"{'N':>6} {'D':>4} {'C':>3} | {'forward s':>9} {'suite s':>9} {'reference s':>11} {'ratio':>7}"
    print(header + " | nc1 rel diff")
    for n in ns:
        for d in ds:
            for c in cs:
                r = bench(n, d, c, device, args.repeats)
                ratio = r["ref"] / r["suite"]
                print(
                    f"{n:>6} {d:>4} {c:>3} | {r['fwd']:>9.4f} {r['suite']:>9.4f} {r['ref']:>11.4f} "
                    f"{ratio:>6.1f}x | {r['nc1_rel_diff']:.1e}",
                    flush=True,
                )
    if not args.no_probe:
        print(f"\nprobe plasticity ({args.probe_steps} steps × 2 fits, batch 256, N=2000 probe states)")
        for d in ds:
            net = make_net(d, 6, 16, device)
            obs = torch.randn(2000, 16, device=device)
            t, _ = timed(
                lambda net=net, obs=obs: probe_plasticity(net, obs, steps=args.probe_steps), device, 1
            )
            print(f"  MLP 16-{d}-{d}-6: {t:.3f} s", flush=True)


if __name__ == "__main__":
    main()
