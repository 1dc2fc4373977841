"""Training-path speed: PlasticDQN vs stable-baselines3's DQN vs a minimal single-file torch DQN.

Every variant trains DQN on CartPole-v1 (64×64 MLP, train_freq 4, batch 32 unless the variant says
otherwise, the same hyperparameters) with one torch thread; steps/s are measured over ``learn()``
only (construction and imports excluded).

Two ways of putting variants side by side:

* **interleaved** (default): every variant runs in one process, in its own thread, and they take
  turns — exactly one runs at a time, for ``--chunk`` env steps, then the next. A machine whose speed
  drifts over seconds to minutes (a shared host) slows every variant alike, so the ratios hold even
  when absolute numbers move. Each variant's time is summed over its turns; the table also gives the
  spread of the per-turn ratios (turns after ``learning_starts``). The variants share NumPy's and
  torch's global random generators, so their trajectories are statistically, not bitwise, those of
  isolated runs.
* ``--isolated``: each variant in its own subprocess, variants interleaved over ``--repeats``
  rounds (medians); the only way to measure peak memory (``--rss``).

Variants:
    sb3          stable_baselines3.DQN.learn
    plastic      rlplast.agents.PlasticDQN.learn (no interventions, no callback)
    plastic-cuda the same with the networks on the GPU
    rlplast      the full `rlplast train` path (run_training: callback, logging) with metrics off
    metrics      the same with the metric suite at its default cadence (every 5000 steps)
    batch-B      `rlplast` with batch size B
    ncreg-B      `batch-B` plus the NC regularizer (coef 0.05, the default)
    ncreg0-B     `batch-B` plus the NC regularizer with coef 1e-12: all of its computation, but the
                 agent learns as without it (isolates the regularizer's cost from the changed
                 behaviour of a regularized agent, e.g. shorter episodes)
    minimal      a minimal torch DQN loop written for this benchmark (same hyperparameters)
    X-fused      variant X (plastic, rlplast, minimal) with torch's fused Adam kernel instead of the
                 default (rlplast: agent.optimizer_impl=fused)

Usage::

    python benchmarks/train_bench.py                      # 50k steps, interleaved, every variant
    python benchmarks/train_bench.py --steps 30000 --variants sb3 plastic minimal
    python benchmarks/train_bench.py --isolated --repeats 3 --variants plastic minimal
    python benchmarks/train_bench.py --rss --steps 100000 # peak RSS: SB3 vs rlplast with metrics
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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

DEFAULT_VARIANTS = [
    "sb3",
    "plastic",
    "rlplast",
    "minimal",
    "plastic-fused",
    "minimal-fused",
    "metrics",
    *(f"{kind}-{b}" for b in (32, 256) for kind in ("batch", "ncreg", "ncreg0")),
]


# ----------------------------------------------------------------------------- timing and turns
class Clock:
    """Times one variant's ``learn()``; with ``chunk`` it also yields to the next variant every
    ``chunk`` env steps (the scheduler in :func:`run_interleaved` decides who runs)."""

    def __init__(self, chunk: int | None = None) -> None:
        self.chunk = chunk
        self.next_pause = chunk if chunk else math.inf
        self.elapsed = 0.0
        self.turns: list[float] = []  # seconds of each turn
        self.go, self.yielded = threading.Event(), threading.Event()
        self.done = False
        self.error: str | None = None
        self._t0 = 0.0
        self._steps0 = 0  # env steps when the current turn began

    def begin(self) -> None:
        if self.chunk:
            self._yield()  # built: wait for the first turn
        _sync_cuda()
        self._t0 = time.perf_counter()

    def tick(self, num_timesteps: int) -> None:
        if num_timesteps >= self.next_pause:
            while self.next_pause <= num_timesteps:
                self.next_pause += self.chunk or math.inf
            self._stop(num_timesteps)
            self._yield()
            _sync_cuda()
            self._t0 = time.perf_counter()

    def end(self, num_timesteps: int) -> None:
        self._stop(num_timesteps)

    def _stop(self, num_timesteps: int) -> None:
        _sync_cuda()  # queued GPU work belongs to this turn, not to the next variant's
        dt = time.perf_counter() - self._t0
        self.elapsed += dt
        if num_timesteps > self._steps0:  # a turn that ran no env step (the end) is not a sample
            self.turns.append(dt)
        self._steps0 = num_timesteps

    def _yield(self) -> None:
        self.yielded.set()
        self.go.wait()
        self.go.clear()


def _sync_cuda() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


_LOCAL = threading.local()
_HOOKED = False


def _install_clock_hooks() -> None:
    """Route SB3's ``learn``/``collect_rollouts`` through the running thread's :class:`Clock`."""
    global _HOOKED
    if _HOOKED:
        return
    from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

    from rlplast.agents import PlasticDQN

    collect = OffPolicyAlgorithm.collect_rollouts

    def timed_collect(self: Any, *args: Any, **kwargs: Any) -> Any:
        out = collect(self, *args, **kwargs)
        clock = getattr(_LOCAL, "clock", None)
        if clock is not None:
            clock.tick(self.num_timesteps)
        return out

    def timed(learn: Callable[..., Any]) -> Callable[..., Any]:
        def timed_learn(self: Any, *args: Any, **kwargs: Any) -> Any:
            clock = getattr(_LOCAL, "clock", None)
            if clock is None:
                return learn(self, *args, **kwargs)
            clock.begin()
            try:
                return learn(self, *args, **kwargs)
            finally:
                clock.end(self.num_timesteps)

        return timed_learn

    OffPolicyAlgorithm.collect_rollouts = timed_collect  # type: ignore[method-assign]
    OffPolicyAlgorithm.learn = timed(OffPolicyAlgorithm.learn)  # type: ignore[method-assign]
    PlasticDQN.learn = timed(PlasticDQN.learn)  # type: ignore[method-assign]  # does not call super().learn
    _HOOKED = True


# ----------------------------------------------------------------------------- the variants
def run_sb3(steps: int, cls_name: str, device: str = "cpu", fused: bool = False) -> None:
    import torch
    from stable_baselines3 import DQN

    from rlplast.agents import PlasticDQN

    torch.set_num_threads(1)
    cls = DQN if cls_name == "sb3" else PlasticDQN
    policy_kwargs: dict = dict(net_arch=[64, 64])
    if fused:
        policy_kwargs["optimizer_kwargs"] = dict(fused=True)
    model = cls("MlpPolicy", "CartPole-v1", seed=0, device=device, policy_kwargs=policy_kwargs, **HYPER)
    model.learn(steps)


def run_rlplast(
    steps: int, metrics: bool = False, batch: int = 32, ncreg_coef: float | None = None, fused: bool = False
) -> None:
    from rlplast.config import config_from_dict
    from rlplast.train import run_training

    data: dict[str, Any] = {
        "env": {"id": "CartPole-v1"},
        "agent": {
            **HYPER,
            "batch_size": batch,
            "net_arch": [64, 64],
            "optimizer_impl": "fused" if fused else "foreach",
        },
        "train": {"total_steps": steps, "seed": 0, "log_every_steps": 1000, "progress": False},
        "metrics": {"enabled": metrics},
        "checkpoint": {"every_steps": 0},
        "output": {"tensorboard": True, "save_model": False},
    }
    if ncreg_coef is not None:
        data["interventions"] = [{"name": "nc_regularizer", "coef": ncreg_coef}]
    with tempfile.TemporaryDirectory() as tmp:
        run_training(config_from_dict(data), Path(tmp) / "run", quiet=True)


def run_minimal(steps: int, fused: bool = False) -> None:
    """A plain DQN: ε-greedy, uniform replay, Huber loss, Adam, hard target updates."""
    import gymnasium as gym
    import numpy as np
    import torch
    from torch import nn
    from torch.nn import functional as F

    clock = getattr(_LOCAL, "clock", None) or Clock()
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
    opt = torch.optim.Adam(q.parameters(), lr=HYPER["learning_rate"], **({"fused": True} if fused else {}))
    size = HYPER["buffer_size"]
    obs_buf = np.zeros((size, n_obs), np.float32)
    next_buf = np.zeros((size, n_obs), np.float32)
    act_buf = np.zeros(size, np.int64)
    rew_buf = np.zeros(size, np.float32)
    done_buf = np.zeros(size, np.float32)
    obs, _ = env.reset(seed=0)
    pos, full = 0, False
    decay = HYPER["exploration_fraction"] * steps
    clock.begin()
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
        if t + 1 >= clock.next_pause:
            clock.tick(t + 1)
    clock.end(steps)


def runner(variant: str) -> Callable[[int], None]:
    """The function that trains ``variant`` for a number of env steps."""
    kind, _, arg = variant.partition("-")
    fused = arg == "fused"
    if kind in ("sb3", "plastic") and arg in ("", "fused", "cuda"):
        return lambda steps: run_sb3(steps, kind, device="cuda" if arg == "cuda" else "cpu", fused=fused)
    if kind == "minimal" and arg in ("", "fused"):
        return lambda steps: run_minimal(steps, fused=fused)
    if kind in ("rlplast", "metrics") and arg in ("", "fused"):
        return lambda steps: run_rlplast(steps, metrics=kind == "metrics", fused=fused)
    if kind in ("batch", "ncreg", "ncreg0") and arg.isdigit():
        coef = {"batch": None, "ncreg": 0.05, "ncreg0": 1e-12}[kind]
        return lambda steps: run_rlplast(steps, batch=int(arg), ncreg_coef=coef)
    raise SystemExit(f"unknown variant {variant}")


# ----------------------------------------------------------------------------- the two modes
def run_interleaved(variants: list[str], steps: int, chunk: int) -> dict[str, Clock]:
    """Run every variant in its own thread, one at a time, ``chunk`` env steps per turn."""
    import torch

    torch.set_num_threads(1)
    _install_clock_hooks()
    clocks = {v: Clock(chunk) for v in variants}

    def thread_main(variant: str) -> None:
        clock = clocks[variant]
        _LOCAL.clock = clock
        try:
            runner(variant)(steps)
        except BaseException as exc:  # noqa: BLE001 - reported by the scheduler
            clock.error = f"{type(exc).__name__}: {exc}"
        finally:
            clock.done = True
            clock.yielded.set()

    for v in variants:  # build one variant at a time; each waits at the start of learn()
        threading.Thread(target=thread_main, args=(v,), daemon=True).start()
        clocks[v].yielded.wait()
        clocks[v].yielded.clear()
    active = [v for v in variants if not clocks[v].done]
    while active:
        for v in list(active):
            clocks[v].go.set()
            clocks[v].yielded.wait()
            clocks[v].yielded.clear()
            if clocks[v].done:
                active.remove(v)
    for v, clock in clocks.items():
        if clock.error:
            raise SystemExit(f"variant {v} failed: {clock.error}")
    return clocks


def child(variant: str, steps: int) -> None:
    """One isolated run (a subprocess of ``--isolated``): print steps/s and peak RSS as JSON."""
    _install_clock_hooks()
    _LOCAL.clock = clock = Clock()
    runner(variant)(steps)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"variant": variant, "steps_per_s": steps / clock.elapsed, "peak_rss_mib": peak_mib}))


def run_isolated(variants: list[str], steps: int, repeats: int) -> dict[str, list[dict]]:
    results: dict[str, list[dict]] = {v: [] for v in variants}
    for round_ in range(repeats):
        for v in variants:
            proc = subprocess.run(
                [sys.executable, __file__, "--child", v, "--steps", str(steps)],
                capture_output=True,
                text=True,
                check=True,
            )
            results[v].append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(
                f"round {round_ + 1}: {v:14s} {results[v][-1]['steps_per_s']:8.0f} steps/s "
                f"peak RSS {results[v][-1]['peak_rss_mib']:.0f} MiB",
                file=sys.stderr,
            )
    return results


# ----------------------------------------------------------------------------- the report
def ratio_pairs(variants: list[str]) -> list[tuple[str, str, str, bool]]:
    """(label, numerator, denominator, as overhead %) for every comparison the variants allow."""
    pairs = [
        ("PlasticDQN / SB3 DQN", "plastic", "sb3", False),
        ("rlplast train path / SB3 DQN", "rlplast", "sb3", False),
        ("PlasticDQN / minimal loop", "plastic", "minimal", False),
        ("rlplast train path / minimal loop", "rlplast", "minimal", False),
        ("PlasticDQN on CUDA / on CPU", "plastic-cuda", "plastic", False),
        *(
            (f"{ours} / {theirs}", ours, theirs, False)
            for ours in ("plastic-fused", "rlplast-fused")
            for theirs in ("minimal", "minimal-fused")
        ),
        ("metrics overhead (wall time, %)", "metrics", "rlplast", True),
    ]
    for v in variants:
        kind, _, batch = v.partition("-")
        if kind in ("ncreg", "ncreg0"):
            what = "NC regularizer" if kind == "ncreg" else "NC regularizer, coef≈0"
            pairs.append((f"{what} overhead at batch {batch} (%)", v, f"batch-{batch}", True))
    return [p for p in pairs if p[1] in variants and p[2] in variants]


def _as_shown(ratio: float, overhead: bool) -> float:
    """A steps/s ratio, or the extra wall time in % it means."""
    return 100 * (1 / ratio - 1) if overhead else ratio


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=50_000)
    p.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS)
    p.add_argument("--chunk", type=int, default=1000, help="env steps per turn (interleaved mode)")
    p.add_argument("--repeats", type=int, default=1, help="whole interleaved runs, or isolated rounds")
    p.add_argument("--isolated", action="store_true", help="one subprocess per variant and round")
    p.add_argument("--rss", action="store_true", help="peak RSS of sb3 vs rlplast with metrics (isolated)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    for v in args.variants:
        runner(v)  # unknown names fail before anything runs
    if args.child:
        child(args.child, args.steps)
        return
    variants = ["sb3", "metrics"] if args.rss else args.variants
    if args.rss or args.isolated:
        results = run_isolated(variants, args.steps, args.repeats)
        med = {v: statistics.median(r["steps_per_s"] for r in rs) for v, rs in results.items()}
        rss = {v: statistics.median(r["peak_rss_mib"] for r in rs) for v, rs in results.items()}
        _report(
            f"{args.steps} steps, isolated, median of {args.repeats} rounds; ratios of medians, per round",
            variants,
            med,
            rss,
            lambda a, b: (
                med[a] / med[b],
                [
                    ra["steps_per_s"] / rb["steps_per_s"]
                    for ra, rb in zip(results[a], results[b], strict=True)
                ],
            ),
        )
        if args.rss:
            print(f"{'peak RSS rlplast+metrics / SB3':50s} {rss['metrics'] / rss['sb3']:8.2f}")
        return

    skip = math.ceil(HYPER["learning_starts"] / args.chunk)  # turns before the first update
    for repeat in range(args.repeats):
        clocks = run_interleaved(variants, args.steps, args.chunk)
        _report(
            f"{args.steps} steps, interleaved in turns of {args.chunk} steps (run {repeat + 1} of "
            f"{args.repeats}); ratios of total times, per turn after learning starts",
            variants,
            {v: args.steps / clocks[v].elapsed for v in variants},
            None,
            lambda a, b, clocks=clocks: (
                clocks[b].elapsed / clocks[a].elapsed,
                [tb / ta for ta, tb in zip(clocks[a].turns[skip:], clocks[b].turns[skip:], strict=False)],
            ),
        )


def _report(
    title: str,
    variants: list[str],
    rates: dict[str, float],
    rss: dict[str, float] | None,
    ratio: Callable[[str, str], tuple[float, list[float]]],
) -> None:
    """Print steps/s per variant and every comparison: its value and its per-round/turn spread."""
    print(f"\nCartPole-v1, 64x64, train_freq 4, {title}")
    print(f"{'variant':14s} {'steps/s':>9s}" + (f" {'peak RSS MiB':>13s}" if rss else ""))
    for v in variants:
        print(f"{v:14s} {rates[v]:9.0f}" + (f" {rss[v]:13.0f}" if rss else ""))
    for label, a, b, overhead in ratio_pairs(variants):
        value, samples = ratio(a, b)
        shown = [_as_shown(r, overhead) for r in samples]
        if len(shown) <= 5:
            spread = " ".join(f"{r:.2f}" for r in shown)
        else:
            lo, hi = sorted((_quantile(shown, 0.1), _quantile(shown, 0.9)))
            spread = f"median {statistics.median(shown):.2f} [10th–90th percentile {lo:.2f}–{hi:.2f}]"
        print(f"{label:50s} {_as_shown(value, overhead):8.2f}   {spread}")


if __name__ == "__main__":
    main()
