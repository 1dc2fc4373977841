"""Training-path speed: PlasticDQN vs stable-baselines3's DQN vs a minimal single-file torch DQN.

Every variant trains DQN on CartPole-v1 (64×64 MLP, train_freq 4, batch 32, the same
hyperparameters) in its own subprocess with one torch thread; variants are interleaved over
``--repeats`` rounds so machine noise hits them alike, and the table reports the median steps/s
and the ratios measured in this one invocation.

Variants:
    sb3          stable_baselines3.DQN.learn
    plastic      rlplast.agents.PlasticDQN.learn (no interventions, no callback)
    rlplast      the full `rlplast train` path (run_training: callback, logging) with metrics off
    metrics      the same with the metric suite at its default cadence (every 5000 steps)
    ncreg-B      the same as `rlplast` plus the NC regularizer, batch size B
    minimal      a minimal torch DQN loop written for this benchmark (same hyperparameters)

Usage::

    python benchmarks/train_bench.py                      # 50k steps, 3 rounds, every variant
    python benchmarks/train_bench.py --steps 20000 --variants sb3 plastic minimal
    python benchmarks/train_bench.py --rss --steps 100000 # peak RSS: SB3 vs rlplast with metrics
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HYPER = dict(
    learning_rate=1e-3,
    buffer_size=50_000,
    learning_starts=1000,
    batch_size=32,
    gamma=0.99,
    train_freq=4,
    gradient_steps=1,
    target_update_interval=500,
    exploration_fraction=0.1,
    exploration_final_eps=0.05,
    max_grad_norm=10.0,
)


def run_sb3(steps: int, cls_name: str, device: str = "cpu") -> float:
    import torch
    from stable_baselines3 import DQN

    from rlplast.agents import PlasticDQN

    torch.set_num_threads(1)
    cls = DQN if cls_name == "sb3" else PlasticDQN
    model = cls(
        "MlpPolicy", "CartPole-v1", seed=0, device=device, policy_kwargs=dict(net_arch=[64, 64]), **HYPER
    )
    start = time.perf_counter()
    model.learn(steps)
    return steps / (time.perf_counter() - start)


def run_rlplast(steps: int, metrics: bool, ncreg_batch: int | None) -> float:
    from rlplast.config import config_from_dict
    from rlplast.train import run_training

    data = {
        "env": {"id": "CartPole-v1"},
        "agent": {**HYPER, "net_arch": [64, 64]},
        "train": {"total_steps": steps, "seed": 0, "log_every_steps": 1000, "progress": False},
        "metrics": {"enabled": metrics},
        "checkpoint": {"every_steps": 0},
        "output": {"tensorboard": True, "save_model": False},
    }
    if ncreg_batch is not None:
        data["agent"]["batch_size"] = ncreg_batch
        data["interventions"] = [{"name": "nc_regularizer", "coef": 0.05}]
    with tempfile.TemporaryDirectory() as tmp:
        # steps/s over learn() only (as for the SB3 variants): set-up and imports are excluded.
        return run_training(config_from_dict(data), Path(tmp) / "run", quiet=True)["steps_per_s"]


def run_minimal(steps: int) -> float:
    """A plain DQN: ε-greedy, uniform replay, Huber loss, Adam, hard target updates."""
    import gymnasium as gym
    import numpy as np
    import torch
    from torch import nn
    from torch.nn import functional as F

    torch.set_num_threads(1)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    env = gym.make("CartPole-v1")
    n_obs, n_act = env.observation_space.shape[0], env.action_space.n
    q = nn.Sequential(nn.Linear(n_obs, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, n_act))
    target = nn.Sequential(
        *[type(m)(*m.weight.shape[::-1]) if isinstance(m, nn.Linear) else nn.ReLU() for m in q]
    )
    target.load_state_dict(q.state_dict())
    opt = torch.optim.Adam(q.parameters(), lr=HYPER["learning_rate"])
    size = HYPER["buffer_size"]
    obs_buf = np.zeros((size, n_obs), np.float32)
    next_buf = np.zeros((size, n_obs), np.float32)
    act_buf = np.zeros(size, np.int64)
    rew_buf = np.zeros(size, np.float32)
    done_buf = np.zeros(size, np.float32)
    obs, _ = env.reset(seed=0)
    pos, full = 0, False
    decay = HYPER["exploration_fraction"] * steps
    start = time.perf_counter()
    for t in range(steps):
        eps = max(HYPER["exploration_final_eps"], 1.0 - t / decay * (1.0 - HYPER["exploration_final_eps"]))
        if rng.random() < eps:
            action = int(rng.integers(n_act))
        else:
            with torch.inference_mode():
                action = int(q(torch.as_tensor(obs)).argmax())
        nxt, reward, term, trunc, _ = env.step(action)
        obs_buf[pos], next_buf[pos], act_buf[pos], rew_buf[pos], done_buf[pos] = (
            obs,
            nxt,
            action,
            reward,
            term,
        )
        pos = (pos + 1) % size
        full = full or pos == 0
        obs = env.reset()[0] if term or trunc else nxt
        if t >= HYPER["learning_starts"] and t % HYPER["train_freq"] == 0:
            idx = rng.integers(0, size if full else pos, HYPER["batch_size"])
            o, n = torch.from_numpy(obs_buf[idx]), torch.from_numpy(next_buf[idx])
            a, r, d = (
                torch.from_numpy(act_buf[idx]),
                torch.from_numpy(rew_buf[idx]),
                torch.from_numpy(done_buf[idx]),
            )
            with torch.no_grad():
                y = r + (1 - d) * HYPER["gamma"] * target(n).max(1).values
            loss = F.smooth_l1_loss(q(o).gather(1, a[:, None]).squeeze(1), y)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(q.parameters(), HYPER["max_grad_norm"])
            opt.step()
        if t % HYPER["target_update_interval"] == 0:
            target.load_state_dict(q.state_dict())
    return steps / (time.perf_counter() - start)


def child(variant: str, steps: int) -> None:
    if variant in ("sb3", "plastic"):
        rate = run_sb3(steps, variant)
    elif variant == "plastic-cuda":  # the same PlasticDQN run with its networks on the GPU
        rate = run_sb3(steps, "plastic", device="cuda")
    elif variant == "minimal":
        rate = run_minimal(steps)
    elif variant == "rlplast":
        rate = run_rlplast(steps, metrics=False, ncreg_batch=None)
    elif variant == "metrics":
        rate = run_rlplast(steps, metrics=True, ncreg_batch=None)
    elif variant.startswith("ncreg-"):
        rate = run_rlplast(steps, metrics=False, ncreg_batch=int(variant.split("-")[1]))
    elif variant.startswith("batch-"):  # the rlplast path without the regularizer, same batch size
        from rlplast.config import config_from_dict  # noqa: F401  (import cost outside the timing)

        HYPER["batch_size"] = int(variant.split("-")[1])
        rate = run_rlplast(steps, metrics=False, ncreg_batch=None)
    else:
        raise SystemExit(f"unknown variant {variant}")
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"variant": variant, "steps_per_s": rate, "peak_rss_mib": peak_mib}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=50_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--variants",
        nargs="+",
        default=[
            "sb3",
            "plastic",
            "rlplast",
            "minimal",
            "metrics",
            *(f"batch-{b}" for b in (32, 256)),
            *(f"ncreg-{b}" for b in (32, 256)),
        ],
    )
    p.add_argument("--rss", action="store_true", help="peak RSS of sb3 vs rlplast with metrics")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child, args.steps)
        return
    variants = ["sb3", "metrics"] if args.rss else args.variants
    results: dict[str, list[dict]] = {v: [] for v in variants}
    for round_ in range(args.repeats):
        for v in variants:
            out = (
                subprocess.run(
                    [sys.executable, __file__, "--child", v, "--steps", str(args.steps)],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                .stdout.strip()
                .splitlines()[-1]
            )
            results[v].append(json.loads(out))
            print(
                f"round {round_ + 1}: {v:12s} {results[v][-1]['steps_per_s']:8.0f} steps/s "
                f"peak RSS {results[v][-1]['peak_rss_mib']:.0f} MiB",
                file=sys.stderr,
            )
    med = {v: statistics.median(r["steps_per_s"] for r in rs) for v, rs in results.items()}
    rss = {v: statistics.median(r["peak_rss_mib"] for r in rs) for v, rs in results.items()}
    print(
        f"\nCartPole-v1, 64x64, train_freq 4, {args.steps} steps, median of {args.repeats} interleaved rounds"
    )
    print(f"{'variant':12s} {'steps/s':>9s} {'peak RSS MiB':>13s}")
    for v in variants:
        print(f"{v:12s} {med[v]:9.0f} {rss[v]:13.0f}")
    ratios = []
    if "plastic" in med and "sb3" in med:
        ratios.append(("PlasticDQN / SB3 DQN", med["plastic"] / med["sb3"]))
    if "rlplast" in med and "sb3" in med:
        ratios.append(("rlplast train path / SB3 DQN", med["rlplast"] / med["sb3"]))
    if "rlplast" in med and "minimal" in med:
        ratios.append(("rlplast train path / minimal loop", med["rlplast"] / med["minimal"]))
    if "plastic-cuda" in med and "plastic" in med:
        ratios.append(("PlasticDQN on CUDA / on CPU", med["plastic-cuda"] / med["plastic"]))
    if "plastic" in med and "minimal" in med:
        ratios.append(("PlasticDQN / minimal loop", med["plastic"] / med["minimal"]))
    if "metrics" in med and "rlplast" in med:
        ratios.append(("metrics overhead (wall time, %)", 100 * (med["rlplast"] / med["metrics"] - 1)))
    for v in variants:
        if v.startswith("ncreg-") and f"batch-{v.split('-')[1]}" in med:
            base = med[f"batch-{v.split('-')[1]}"]
            ratios.append(
                (f"NC regularizer overhead at batch {v.split('-')[1]} (%)", 100 * (base / med[v] - 1))
            )
    if args.rss:
        ratios.append(("peak RSS rlplast+metrics / SB3", rss["metrics"] / rss["sb3"]))
    for name, value in ratios:
        print(f"{name:45s} {value:8.2f}")


if __name__ == "__main__":
    main()
