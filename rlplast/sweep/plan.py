"""Planning a sweep: the methods × seeds grid, each run's resolved config, and the pre-run checks.

Planning reads the base config and the method overlays once, in the parent process. Each run's
config is resolved here (base + overlay + ``--set`` + seed and worker settings), validated, and kept
as text: that text is the job a worker gets (:class:`rlplast.sweep.job.Job`), so editing the YAML
files after planning changes nothing in the sweep.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from rlplast.config import Config, dump_config, load_config, parse_override, read_yaml
from rlplast.errors import UserError
from rlplast.methods import DEFAULT_METHODS, refuse_overlay_as_config, resolve_method
from rlplast.rundir import POPULATIONS, population_name, run_name
from rlplast.sweep.job import Job, PopulationJob

#: Overrides every sweep run gets: no progress bar and one torch thread per worker process
#: (two 2-thread processes on 2 cores run ~7× slower than two 1-thread ones).
WORKER_OVERRIDES = ["train.progress=false", "train.torch_threads=1"]


@dataclass
class RunSpec:
    """One cell of the grid, as planned.

    Attributes:
        method: method name (the overlay's stem).
        seed: training seed.
        run_dir: the run directory.
        config_text: the resolved config as YAML (:func:`rlplast.config.dump_config`): the job's
            payload, and what the run's ``config.yaml`` will hold.
        overlay: the method's partial config (kept to blame errors on their layer).
        overlay_path: the overlay file.
        overrides: every ``--set`` override of this run (the sweep's, then the seed and worker ones).
        config: the resolved config itself.
        population: the population it trains in (``populations/<name>``, relative to the sweep
            directory), set by :func:`plan_jobs`; None for a single run.
    """

    method: str
    seed: int
    run_dir: Path
    config_text: str = field(repr=False)
    overlay: dict[str, Any] = field(default_factory=dict, repr=False)
    overlay_path: Path | None = None
    overrides: list[str] = field(default_factory=list)
    config: Config | None = field(default=None, repr=False, compare=False)
    population: str | None = field(default=None, compare=False)

    @property
    def name(self) -> str:
        """``<method>-s<seed>``, the run directory's name and the manifest key."""
        return run_name(self.method, self.seed)

    @property
    def config_hash(self) -> str:
        """Hash of the resolved config, recorded in the manifest to spot a rerun with another config."""
        return hashlib.sha256(self.config_text.encode()).hexdigest()[:16]

    def job(self, absolute: bool = False) -> Job:
        """The payload a worker trains: the resolved config text and the run directory.

        Args:
            absolute: give the run directory as an absolute path (for workers that may run in
                another working directory, e.g. Ray's).
        """
        run_dir = self.run_dir.resolve() if absolute else self.run_dir
        return Job(self.config_text, str(run_dir))

    @property
    def engine(self) -> str:
        """How the run is trained: ``single`` or ``population`` (its config's ``train.engine``)."""
        if self.config is not None:
            return self.config.train.engine
        return str(yaml.safe_load(self.config_text).get("train", {}).get("engine", "single"))


@dataclass
class JobPlan:
    """What one worker (a local process or a Ray task) trains: one run, or a population of runs.

    Attributes:
        specs: the runs; one for a single run, the members of a population (see :func:`plan_jobs`).
        population_dir: the population's directory (``<out>/populations/<name>``), or None for a
            single run.
        trust_checkpoint: the job may continue from a checkpoint this user's key did not sign
            (``rlplast compare --trust-checkpoint``).
    """

    specs: list[RunSpec]
    population_dir: Path | None = None
    trust_checkpoint: bool = False

    @property
    def name(self) -> str:
        """The run's name, or the population's."""
        return self.specs[0].name if self.population_dir is None else self.population_dir.name

    def job(self, absolute: bool = False) -> Job | PopulationJob:
        """The payload: the run's :class:`~rlplast.sweep.job.Job`, or a
        :class:`~rlplast.sweep.job.PopulationJob` of every member's.

        Args:
            absolute: give directories as absolute paths (for workers that may run in another
                working directory, e.g. Ray's).
        """
        trust = self.trust_checkpoint
        jobs = tuple(replace(spec.job(absolute), trust_checkpoint=trust) for spec in self.specs)
        if self.population_dir is None:
            return jobs[0]
        folder = self.population_dir.resolve() if absolute else self.population_dir
        return PopulationJob(jobs, str(folder), trust_checkpoint=trust)


def population_key(spec: RunSpec) -> str:
    """What runs must share to train in one population: the resolved config apart from
    ``train.seed`` and ``interventions`` (each member has its own seed and interventions)."""
    data = yaml.safe_load(spec.config_text)
    data.get("train", {}).pop("seed", None)
    data.pop("interventions", None)
    return yaml.safe_dump(data, sort_keys=True)


def plan_jobs(out_dir: Path, todo: list[RunSpec], workers: int | None = None) -> list[JobPlan]:
    """Group the runs to train into jobs: one per single-engine run, and populations of the runs
    that use the population engine (``train.engine: population``).

    Runs that can share a population (the same config apart from the seed and the interventions,
    :func:`population_key`: usually every method of a sweep) are split into ``workers``
    populations of near-equal size, in grid order (method by method, seeds ascending), so that
    every worker trains one; without ``workers`` (a Ray cluster that schedules every job at once)
    they form one population. A member's results do not depend on the population it trains in —
    its random streams, env and interventions are its own — so the grouping only decides speed.

    Args:
        out_dir: the sweep directory (populations live in ``<out>/populations/<first>..<last>``).
        todo: the runs to train, in grid order.
        workers: the jobs that run at once (None: no cap).

    Returns:
        The jobs, in the order of their first run; each member's :attr:`RunSpec.population` set.
    """
    singles: dict[int, JobPlan] = {}
    groups: dict[str, list[RunSpec]] = {}
    order: list[tuple[str, Any]] = []
    for position, spec in enumerate(todo):
        if spec.engine != "population":
            singles[position] = JobPlan([spec])
            order.append(("single", position))
            continue
        key = population_key(spec)
        if key not in groups:
            groups[key] = []
            order.append(("group", key))
        groups[key].append(spec)
    n_population_runs = sum(len(g) for g in groups.values())
    plans: list[JobPlan] = []
    for kind, what in order:
        if kind == "single":
            plans.append(singles[what])
            continue
        members = groups[what]
        share = len(members) if workers is None else workers * len(members) / n_population_runs
        k = 1 if workers is None else max(1, min(len(members), round(share)))
        for part in range(k):
            chunk = members[part * len(members) // k : (part + 1) * len(members) // k]
            name = f"{POPULATIONS}/{population_name(chunk[0].name, chunk[-1].name)}"
            for spec in chunk:
                spec.population = name
            plans.append(JobPlan(chunk, out_dir / name))
    return plans


def check_overrides(overrides: list[str]) -> None:
    """Parse every ``--set`` once (format errors first) and refuse ``train.seed`` (``--seeds`` sets it).

    Raises:
        UserError: a malformed override, or one that sets ``train.seed``.
    """
    for text in overrides:
        parts, value = parse_override(text)
        if parts == ["train", "seed"] or (parts == ["train"] and isinstance(value, dict) and "seed" in value):
            raise UserError(
                f"--set {text}: compare gives each run its own seed, 0 .. S-1 for --seeds S; "
                "drop train.seed and use --seeds (one run with a chosen seed: rlplast train --seed N)"
            )


def run_overrides(seed: int) -> list[str]:
    """The overrides every run gets after the user's ``--set``: its seed and the worker settings."""
    return [f"train.seed={seed}", *WORKER_OVERRIDES]


def blame(
    exc: UserError,
    config_path: str | Path,
    overlay: dict[str, Any],
    seed: int,
    method: tuple[str, Path],
    check: Callable[[Config], None] | None = None,
) -> UserError:
    """Prefix ``exc`` with what introduced it: the base config, the method overlay or the ``--set``.

    The layers are added one at a time (base, then the overlay, then ``--set``); the first layer whose
    config fails (to load, or ``check``) is blamed.

    Args:
        exc: the error the fully resolved config raised.
        config_path: the base config.
        overlay: the method's partial config.
        seed: the run's seed.
        method: ``(name, overlay path)``, for the message.
        check: a further check of a loaded config (e.g. :class:`rlplast.train.Preflight`).

    Returns:
        A UserError naming the layer: ``CONFIG: …``, ``method 'NAME' (PATH): …`` or ``--set: …``.
    """

    def fails(overlays: list[dict[str, Any]]) -> bool:
        try:
            cfg = load_config(config_path, run_overrides(seed), overlays)
            if check is not None:
                check(cfg)
        except UserError:
            return True
        return False

    text = str(exc)
    if fails([]):
        return UserError(text if str(config_path) in text else f"{config_path}: {text}")
    if fails([overlay]):
        return UserError(f"method '{method[0]}' ({method[1]}): {text}")
    return UserError(text if text.startswith("--set") else f"--set: {text}")


def plan_sweep(
    config_path: str | Path,
    methods: list[str] | None,
    seeds: int,
    overrides: list[str] | None = None,
    out: str | Path | None = None,
) -> tuple[Path, list[RunSpec]]:
    """Resolve and validate every run's config (as :func:`rlplast.config.load_config` does).

    Reads the config and overlay files once; writes nothing.

    Args:
        config_path: the base YAML config.
        methods: method names (``methods/<name>.yaml`` beside the config) or ``.yaml`` paths;
            None: :data:`rlplast.methods.DEFAULT_METHODS`.
        seeds: seeds ``0 .. seeds-1``.
        overrides: ``--set`` overrides applied to every run (not ``train.seed``).
        out: the sweep directory (default ``sweeps/<config stem>``).

    Returns:
        The sweep directory and one :class:`RunSpec` per (method, seed), methods in the given order.

    Raises:
        UserError: unknown method, bad overlay, bad override or invalid resolved config.
    """
    if not Path(config_path).is_file():
        raise UserError(f"config file not found: {config_path}")
    read_yaml(config_path)  # the config's own YAML errors come first
    refuse_overlay_as_config(config_path, "compare")
    if seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {seeds}")
    user = list(overrides or [])
    check_overrides(user)
    out_dir = Path(out) if out else Path("sweeps") / Path(config_path).stem
    specs: list[RunSpec] = []
    seen: dict[str, str] = {}
    for entry in methods if methods is not None else DEFAULT_METHODS:
        try:
            name, path = resolve_method(config_path, entry)
        except UserError as exc:
            if methods is not None:
                raise
            raise UserError(
                f"{exc} (no --methods given: the default is {', '.join(DEFAULT_METHODS)})"
            ) from None
        if name in seen:
            raise UserError(f"methods '{seen[name]}' and '{entry}' both resolve to the name '{name}'")
        seen[name] = entry
        overlay = read_yaml(path)
        for seed in range(seeds):
            all_overrides = [*user, *run_overrides(seed)]
            try:
                cfg = load_config(config_path, all_overrides, overlays=[overlay])
            except UserError as exc:
                raise blame(exc, config_path, overlay, seed, (name, path)) from None
            run_dir = out_dir / "runs" / run_name(name, seed)
            specs.append(RunSpec(name, seed, run_dir, dump_config(cfg), overlay, path, all_overrides, cfg))
    return out_dir, specs


def check_populations(config_path: str | Path, plans: list[JobPlan], at_once: int | None = None) -> None:
    """Check every population job as the population engine would before writing
    (:func:`rlplast.population.run.check_population`: agent options, network, interventions per
    member, the replay buffers' memory for that many members), and that the replay buffers of the
    populations that may run at once fit together.

    Args:
        config_path: the base config.
        plans: the planned jobs.
        at_once: how many jobs run at the same time (``--workers``), or None when every job is
            submitted at once to a cluster whose machines this one cannot see (not summed then).

    Raises:
        UserError: the first population the engine would refuse, named; or the largest ones that
            may run together, when their replay buffers exceed the memory available.
    """
    from rlplast.population.replay import available_memory_bytes
    from rlplast.population.run import check_population

    needs: dict[Any, list[tuple[int, str]]] = {}  # device -> (bytes, population name)
    for plan in plans:
        if plan.population_dir is None:
            continue
        try:
            found = check_population(
                [s.config or load_config(config_path, s.overrides, [s.overlay]) for s in plan.specs]
            )
        except UserError as exc:
            runs = f"{len(plan.specs)} run{'s' if len(plan.specs) != 1 else ''}"
            raise UserError(f"population {plan.name} ({runs}): {exc}") from None
        if found is not None:
            needs.setdefault(found[1], []).append((found[0], plan.name))
    if at_once is None or at_once < 2:
        return
    for device, sizes in needs.items():
        largest = sorted(sizes, reverse=True)[:at_once]
        if len(largest) < 2:
            continue
        total = sum(n for n, _ in largest)
        available = available_memory_bytes(device)
        if available is not None and total > available:
            names = ", ".join(name for _, name in largest)
            raise UserError(
                f"populations {names} may run at once (--workers {at_once}) and their replay buffers "
                f"need {total / 2**30:.2f} GiB together, more than the {available / 2**30:.2f} GiB "
                f"available on {device}; lower --workers, agent.buffer_size or the number of seeds"
            )


def check_runs(config_path: str | Path, specs: list[RunSpec]) -> None:
    """Check every planned run as ``rlplast train`` would before writing (:class:`rlplast.train.Preflight`).

    Args:
        config_path: the base config (to blame an error on its layer).
        specs: the planned runs.

    Raises:
        UserError: the first run that ``rlplast train`` would reject, blamed on its layer.
    """
    from rlplast.train import Preflight

    checks = Preflight(build_models=True)
    for spec in specs:
        cfg = spec.config or load_config(config_path, spec.overrides, overlays=[spec.overlay])
        try:
            checks(cfg)
        except UserError as exc:
            method = (spec.method, spec.overlay_path or Path(spec.method))
            raise blame(exc, config_path, spec.overlay, spec.seed, method, checks) from None
