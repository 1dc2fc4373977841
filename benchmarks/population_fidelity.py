"""Fidelity of the population engine: do its members learn like single PlasticDQN runs?

For each config, the same seeds are trained twice with ``rlplast compare`` — once with
``--engine single`` (one PlasticDQN process per run) and once with ``--engine population`` — and
the two sets of runs are compared:

* per task, the IQM over seeds of the mean return per episode (the report's headline return),
  with its 95 % percentile-bootstrap CI (``rlplast.analysis``), side by side;
* on the final returns (``summary.json``'s mean of the last 100 episodes): Welch's t-test and the
  Mann-Whitney U test (``scipy.stats``), two-sided.

The engines are not bitwise comparable — a member draws its exploration and replay indices from
random streams of its own (docs/population.md) — so the question is whether the two samples look
drawn from the same distribution. Large p-values do not prove equality; with 10 seeds per side
only differences of roughly one standard deviation of the seed-to-seed spread would show.

Usage::

    python benchmarks/population_fidelity.py                    # 10 seeds of cartpole.yaml and quickstart.yaml
    python benchmarks/population_fidelity.py --seeds 10 --set train.total_steps=20000 --out /tmp/fidelity
    python benchmarks/population_fidelity.py --configs configs/cartpole.yaml --seeds 4 --set train.total_steps=3000

The sweeps go to ``--out`` (one folder per config and engine; rerunning skips finished runs);
``--set`` overrides apply to every run of both engines (metrics are switched off by default: they
do not change training and only cost time). The table is printed and written to
``<out>/fidelity.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIGS = [REPO / "configs" / "cartpole.yaml", REPO / "configs" / "quickstart.yaml"]
ENGINES = ("single", "population")


def run_engine(
    config: Path, engine: str, seeds: int, overrides: list[str], out: Path, workers: int | None
) -> float:
    """Train ``seeds`` seeds of ``config`` (method ``vanilla``) with ``engine``; return the wall time."""
    from rlplast.sweep import run_compare

    start = time.perf_counter()
    result = run_compare(
        config,
        ["vanilla"],
        seeds=seeds,
        overrides=overrides,
        out=out,
        workers=workers,
        quiet=True,
        report=False,
        engine=engine,
    )
    if result.failed:
        raise SystemExit(f"{config.name} ({engine}): runs failed: {', '.join(result.failed)}")
    return time.perf_counter() - start


def returns(sweep: Path) -> tuple[np.ndarray, list[int], np.ndarray]:
    """``(per-task mean return (seeds × tasks), task ids, final returns (seeds,))`` of a sweep."""
    from rlplast.analysis import compute_scores, load_sweep

    runs, _ = load_sweep(sweep)
    scores = compute_scores(runs)
    final = np.array([float(run.summary.get("final_return", np.nan)) for run in runs])
    return scores.values["mean_return"], list(scores.tasks), final


def interval(values: np.ndarray, seed: int) -> str:
    """``IQM [low, high]`` of the finite values (95 % percentile bootstrap of the IQM)."""
    from rlplast.analysis import bootstrap_ci, iqm

    values = values[np.isfinite(values)]
    if values.size == 0:
        return "n/a"
    low, high = bootstrap_ci(values, stat=iqm, seed=seed)
    return f"{float(iqm(values)):.1f} [{low:.1f}, {high:.1f}]"


def compare_config(
    config: Path, seeds: int, overrides: list[str], out: Path, workers: int | None
) -> tuple[list[str], list[str]]:
    """Train both engines on ``config``; return the Markdown rows of the two tables."""
    walls = {}
    data = {}
    for engine in ENGINES:
        sweep = out / f"{config.stem}-{engine}"
        walls[engine] = run_engine(config, engine, seeds, overrides, sweep, workers)
        data[engine] = returns(sweep)
    (single, tasks, final_s), (pop, tasks_p, final_p) = data["single"], data["population"]
    task_rows = []
    for k, task in enumerate(tasks):
        members = pop[:, tasks_p.index(task)] if task in tasks_p else np.array([])
        task_rows.append(f"| {config.name} | {task} | {interval(single[:, k], k)} | {interval(members, k)} |")
    welch = stats.ttest_ind(final_s, final_p, equal_var=False, nan_policy="omit")
    mwu = stats.mannwhitneyu(
        final_s[np.isfinite(final_s)], final_p[np.isfinite(final_p)], alternative="two-sided"
    )
    final_row = (
        f"| {config.name} | {np.nanmean(final_s):.1f} ± {np.nanstd(final_s, ddof=1):.1f} | "
        f"{np.nanmean(final_p):.1f} ± {np.nanstd(final_p, ddof=1):.1f} | {welch.pvalue:.3f} | {mwu.pvalue:.3f} | "
        f"{walls['single']:.0f} s / {walls['population']:.0f} s |"
    )
    return task_rows, [final_row]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", type=Path, default=DEFAULT_CONFIGS)
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--workers", type=int, help="as rlplast compare --workers (default: os.cpu_count())")
    p.add_argument("--out", type=Path, default=Path("sweeps") / "fidelity")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--metrics", action="store_true", help="keep the metrics on (default: off)")
    args = p.parse_args()
    overrides = list(args.overrides)
    if not args.metrics:
        overrides.insert(0, "metrics.enabled=false")
    task_rows: list[str] = []
    final_rows: list[str] = []
    for config in args.configs:
        t, f = compare_config(config, args.seeds, overrides, args.out, args.workers)
        task_rows += t
        final_rows += f
        print(f"{config.name}: done", file=sys.stderr)
    command = " ".join(["python benchmarks/population_fidelity.py", *sys.argv[1:]])
    text = "\n".join(
        [
            f"`{command}` — {args.seeds} seeds per engine, overrides: {', '.join(overrides) or 'none'}",
            "",
            "Mean return per episode, per task: IQM over seeds [95 % bootstrap CI]",
            "",
            "| config | task | single (PlasticDQN) | population |",
            "|---|---|---|---|",
            *task_rows,
            "",
            "Final return (mean of the last 100 episodes): mean ± sd over seeds, two-sided p-values",
            "",
            "| config | single | population | Welch t p | Mann-Whitney U p | wall time single / population |",
            "|---|---|---|---|---|---|",
            *final_rows,
            "",
        ]
    )
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fidelity.md").write_text(text)


if __name__ == "__main__":
    main()
