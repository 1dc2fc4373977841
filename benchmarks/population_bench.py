"""Population engine throughput: aggregate env steps/s of S members vs one PlasticDQN run.

Every variant trains DQN with the same hyperparameters and one torch thread; a population of S
members counts S env steps per lock-step. Variants run side by side in one process, interleaved
in turns as ``train_bench.py`` does: each runs in its own thread, exactly one runs at a time, for
``--chunk`` env steps (per member), then the next; a machine whose speed drifts slows every
variant alike, so the ratios hold when absolute numbers move. Time is measured over ``learn()``
only (construction excluded) and summed over a variant's turns; the table gives each variant's
aggregate env steps/s, its ratio to PlasticDQN, and the spread of per-turn ratios (turns after
``learning_starts``).

Suites:
    cartpole   CartPole-v1, MLP 64x64, train_freq 4, batch 64: PlasticDQN vs populations of
               ``--sizes`` (default 1 8 16 32 64)
    permuted   the same on rlplast/PermutedCartPole-v0
    minatar    configs/minatar_sequence_short.yaml's agent and env (rlplast/MinAtarSequence-v0,
               conv 16@3x3 + FC 128): PlasticDQN vs a population of 8 (``--minatar-sizes``)

Targets (issue "Population engine"): CartPole population of 16 >= 8x PlasticDQN (aim 12x), the
aggregate still growing up to 64; MinAtar population of 8 >= 3x PlasticDQN.

Usage::

    python benchmarks/population_bench.py                          # every suite
    python benchmarks/population_bench.py --suites cartpole --sizes 1 16 --steps 10000
    python benchmarks/population_bench.py --quick                  # a smoke-sized version
    python benchmarks/population_bench.py --suites cartpole --profile 16   # cProfile one population
    python benchmarks/population_bench.py --kernels --sizes 8 16      # baddbmm / grouped conv vs vmap
    python benchmarks/population_bench.py --suites cartpole --sizes 16 64 256 --device cuda   # a GPU

``--device cuda`` trains the populations on the GPU; PlasticDQN, the baseline, stays on the CPU
(where SB3's DQN is fastest for networks this small), so the ratio reads "S members on the GPU vs
one PlasticDQN run on a CPU core".
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

CARTPOLE = dict(
    learning_rate=1e-3,
    buffer_size=50_000,
    learning_starts=1000,
    batch_size=64,
    gamma=0.99,
    train_freq=4,
    gradient_steps=1,
    target_update_interval=500,
    exploration_fraction=0.1,
    exploration_final_eps=0.05,
    max_grad_norm=10.0,
)
SUITE_ENVS = {"cartpole": "CartPole-v1", "permuted": "rlplast/PermutedCartPole-v0"}
MINATAR_CONFIG = REPO / "configs" / "minatar_sequence_short.yaml"


# ----------------------------------------------------------------------------- turns
class Clock:
    """Times one variant; yields to the scheduler every ``chunk`` env steps (per member)."""

    def __init__(self, chunk: int) -> None:
        self.chunk = chunk
        self.next_pause = chunk
        self.elapsed = 0.0
        self.turns: list[float] = []
        self.go, self.yielded = threading.Event(), threading.Event()
        self.done = False
        self.error: str | None = None
        self._t0 = 0.0
        self._steps0 = 0

    def begin(self) -> None:
        self._yield()  # built: wait for the first turn
        self._t0 = time.perf_counter()

    def tick(self, steps: int) -> bool:
        if steps >= self.next_pause:
            while self.next_pause <= steps:
                self.next_pause += self.chunk
            self._stop(steps)
            self._yield()
            self._t0 = time.perf_counter()
        return True

    def end(self, steps: int) -> None:
        self._stop(steps)

    def _stop(self, steps: int) -> None:
        dt = time.perf_counter() - self._t0
        self.elapsed += dt
        if steps > self._steps0:  # a turn that ran no env step (the end) is not a sample
            self.turns.append(dt)
        self._steps0 = steps

    def _yield(self) -> None:
        self.yielded.set()
        self.go.wait()
        self.go.clear()


# ----------------------------------------------------------------------------- variants
def _plastic(env: str, hyper: dict[str, Any], policy: str, policy_kwargs: dict[str, Any]) -> Any:
    from stable_baselines3.common.logger import Logger

    from rlplast.agents import PlasticDQN

    model = PlasticDQN(
        policy,
        env,
        seed=0,
        device="cpu",
        policy_kwargs={**policy_kwargs, "optimizer_kwargs": {"foreach": True}},
        **hyper,
    )
    model.set_logger(Logger(folder=None, output_formats=[]))
    return model


def _setting(suite: str) -> tuple[str, dict[str, Any], dict[str, Any], str, dict[str, Any]]:
    """(env id, env kwargs, hyperparameters, policy, policy_kwargs) of a suite."""
    if suite in SUITE_ENVS:
        return SUITE_ENVS[suite], {}, dict(CARTPOLE), "MlpPolicy", {"net_arch": [64, 64]}
    from dataclasses import fields

    from rlplast.agents.minatar_cnn import MinAtarCNN
    from rlplast.config import load_config
    from rlplast.population import DQNSettings
    from rlplast.train import ACTIVATIONS

    cfg = load_config(MINATAR_CONFIG)
    a = cfg.agent
    hyper = {f.name: getattr(a, f.name) for f in fields(DQNSettings)}
    policy_kwargs = {
        "net_arch": list(a.net_arch),
        "activation_fn": ACTIVATIONS[a.activation],
        "features_extractor_class": MinAtarCNN,
        "normalize_images": False,
    }
    return cfg.env.id, dict(cfg.env.kwargs), hyper, a.policy, policy_kwargs


def runner(suite: str, variant: str, steps: int, clock: Clock, device: str = "cpu") -> Callable[[], int]:
    """Build ``variant`` of ``suite`` now (a population on ``device``); return a function that
    trains it (returns S)."""
    import torch

    import rlplast.envs  # noqa: F401  (registers the rlplast/ ids)

    torch.set_num_threads(1)
    env_id, env_kwargs, hyper, policy, policy_kwargs = _setting(suite)
    if variant == "plastic":
        import gymnasium as gym
        from stable_baselines3.common.callbacks import BaseCallback

        model = _plastic(gym.make(env_id, **env_kwargs), hyper, policy, policy_kwargs)  # type: ignore[arg-type]

        class TickSB3(BaseCallback):
            def _on_step(self) -> bool:
                return clock.tick(self.model.num_timesteps)

        def train_plastic() -> int:
            clock.begin()
            model.learn(steps, callback=TickSB3())
            clock.end(model.num_timesteps)
            return 1

        return train_plastic
    size = int(variant.removeprefix("pop-"))
    from rlplast.population import Population, PopulationCallback

    pop = Population(
        policy,
        env_id,
        list(range(size)),
        env_kwargs=env_kwargs,
        policy_kwargs=policy_kwargs,
        device=device,
        **hyper,
    )

    class Tick(PopulationCallback):
        def on_iteration_end(self, population: Population) -> bool:
            return clock.tick(population.num_timesteps)

    def train_population() -> int:
        clock.begin()
        pop.learn(steps, callback=Tick())
        clock.end(pop.num_timesteps)
        pop.close()
        return size

    return train_population


def run_interleaved(
    suite: str, variants: list[str], steps: int, chunk: int, device: str = "cpu"
) -> dict[str, tuple[Clock, int]]:
    """Every variant in its own thread, one at a time, ``chunk`` env steps per turn."""
    clocks = {v: Clock(chunk) for v in variants}
    sizes: dict[str, int] = {}

    def thread_main(variant: str) -> None:
        clock = clocks[variant]
        try:
            train = runner(suite, variant, steps, clock, device)
            sizes[variant] = train()
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
            raise SystemExit(f"{suite} variant {v} failed: {clock.error}")
    return {v: (clocks[v], sizes[v]) for v in variants}


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def report(
    suite: str, results: dict[str, tuple[Clock, int]], steps: int, chunk: int, learning_starts: int
) -> None:
    env_id = _setting(suite)[0]
    print(f"\n{suite}: {env_id}, {steps} env steps per member, interleaved in turns of {chunk} steps")
    print(f"{'variant':10s} {'members':>7s} {'agg steps/s':>12s} {'x PlasticDQN':>13s}   per-turn ratio")
    base_clock, _ = results["plastic"]
    base_rate = steps / base_clock.elapsed
    skip = math.ceil(learning_starts / chunk)
    for v, (clock, size) in results.items():
        rate = size * steps / clock.elapsed
        ratio = rate / base_rate
        per_turn = [
            size * tb / ta
            for ta, tb in zip(clock.turns[skip:], base_clock.turns[skip:], strict=False)
            if ta > 0
        ]
        spread = ""
        if v != "plastic" and per_turn:
            lo, hi = _quantile(per_turn, 0.1), _quantile(per_turn, 0.9)
            spread = f"median {statistics.median(per_turn):.2f} [10th-90th {lo:.2f}-{hi:.2f}]"
        print(f"{v:10s} {size:7d} {rate:12.0f} {ratio:13.2f}   {spread}")


def profile(suite: str, size: int, steps: int) -> None:
    """cProfile of one population's learn() (where the engine's own time goes)."""
    import cProfile
    import pstats

    clock = Clock(10**12)
    clock.go.set()  # never waits
    train = runner(suite, f"pop-{size}", steps, clock)
    prof = cProfile.Profile()
    prof.runcall(train)
    pstats.Stats(prof).sort_stats("tottime").print_stats(30)


def _stacking_candidates(kind: str, size: int) -> dict[str, Callable[[], None]]:
    """Forward + backward of ``size`` stacked MLPs or MinAtar CNNs, in each way of stacking them."""
    import copy

    import gymnasium as gym
    import numpy as np
    import torch
    from torch.func import functional_call, stack_module_state, vmap
    from torch.nn import functional as F

    import rlplast.envs  # noqa: F401
    from rlplast.agents.minatar_cnn import MinAtarCNN
    from rlplast.population import StackedQNetwork, build_member_networks

    if kind == "MLP":
        env, policy, batch = gym.make("CartPole-v1"), "MlpPolicy", 64
        policy_kwargs: dict[str, Any] = {"net_arch": [64, 64]}
    else:
        env, policy, batch = gym.make("rlplast/MinAtarSequence-v0"), "CnnPolicy", 32
        policy_kwargs = {"net_arch": [], "features_extractor_class": MinAtarCNN, "normalize_images": False}
    members = build_member_networks(
        policy, env.observation_space, env.action_space, policy_kwargs, range(size)
    )
    net = StackedQNetwork(members, "cpu")
    obs = torch.from_numpy(
        np.stack([[env.observation_space.sample() for _ in range(batch)] for _ in range(size)])
    )
    params, buffers = stack_module_state(members)  # type: ignore[arg-type]
    base = copy.deepcopy(members[0]).to("meta")

    def engine() -> None:
        net.forward(obs, net.prepare(net.params)).sum().backward()

    def functorch() -> None:
        out = vmap(lambda p, b, x: functional_call(base, (p, b), (x,)))(params, buffers, obs)
        out.sum().backward()

    def loop() -> None:
        sum(m(obs[i]).sum() for i, m in enumerate(members)).backward()  # type: ignore[union-attr]

    candidates = {"engine": engine, "vmap": functorch, "loop": loop}
    if kind == "CNN":
        w, b, w1, b1, w2, b2 = net.params  # conv, FC 128, head

        def grouped_nchw() -> None:
            x = obs.float()
            grouped = x.transpose(0, 1).reshape(batch, -1, *x.shape[3:])
            h = F.conv2d(grouped, w.reshape(-1, *w.shape[2:]), b.reshape(-1), groups=size)
            h = torch.relu(h.unflatten(1, (size, -1)).transpose(0, 1)).flatten(2)
            h = torch.relu(torch.baddbmm(b1.unsqueeze(1), h, w1.transpose(1, 2)))
            torch.baddbmm(b2.unsqueeze(1), h, w2.transpose(1, 2)).sum().backward()

        candidates["grouped NCHW"] = grouped_nchw
    return candidates


def kernels(sizes: list[int], rounds: int = 15) -> None:
    """Forward + backward of S stacked networks, ways of stacking side by side (min over rounds).

    MLP 4-64-64-2 at batch 64: the engine's ``baddbmm`` vs ``torch.func`` (``vmap`` over
    ``functional_call`` of ``stack_module_state``) vs one network after the other. MinAtar CNN at
    batch 32: the engine's grouped convolution in channels-last layout vs the same in NCHW, vmap,
    and one network after the other.
    """
    import torch

    torch.set_num_threads(1)
    for kind in ("MLP", "CNN"):
        for size in sizes:
            candidates = _stacking_candidates(kind, size)
            times: dict[str, list[float]] = {k: [] for k in candidates}
            for _ in range(rounds):
                for name, fn in candidates.items():
                    t0 = time.perf_counter()
                    for _ in range(3):
                        fn()
                    times[name].append((time.perf_counter() - t0) / 3 * 1e3)
            row = "  ".join(f"{k} {min(v):6.2f} ms" for k, v in times.items())
            print(f"{kind} S={size:3d}, forward+backward (min of {rounds}): {row}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--suites",
        nargs="+",
        default=["cartpole", "permuted", "minatar"],
        choices=["cartpole", "permuted", "minatar"],
    )
    p.add_argument(
        "--sizes", nargs="+", type=int, default=[1, 8, 16, 32, 64], help="CartPole population sizes"
    )
    p.add_argument("--minatar-sizes", nargs="+", type=int, default=[8])
    p.add_argument("--steps", type=int, default=20_000, help="env steps per member (CartPole suites)")
    p.add_argument("--minatar-steps", type=int, default=20_000, help="env steps per member (MinAtar)")
    p.add_argument("--chunk", type=int, default=1000, help="env steps per turn")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="3000 steps (MinAtar 6000), turns of 500")
    p.add_argument("--profile", type=int, metavar="S", help="cProfile a population of S (first suite)")
    p.add_argument("--kernels", action="store_true", help="compare ways of stacking the networks (--sizes)")
    p.add_argument("--device", default="cpu", help="device of the populations (PlasticDQN stays on the CPU)")
    args = p.parse_args()
    if args.kernels:
        kernels(args.sizes)
        return
    if args.quick:
        args.steps, args.minatar_steps, args.chunk = 3000, 6000, 500
    if args.profile:
        profile(args.suites[0], args.profile, args.steps)
        return
    print(f"populations on {args.device}; PlasticDQN on the CPU")
    for suite in args.suites:
        minatar = suite == "minatar"
        steps = args.minatar_steps if minatar else args.steps
        sizes = args.minatar_sizes if minatar else args.sizes
        variants = ["plastic", *(f"pop-{s}" for s in sizes)]
        learning_starts = int(_setting(suite)[2]["learning_starts"])
        for _ in range(args.repeats):
            results = run_interleaved(suite, variants, steps, args.chunk, args.device)
            report(suite, results, steps, args.chunk, learning_starts)
            sys.stdout.flush()


if __name__ == "__main__":
    main()
