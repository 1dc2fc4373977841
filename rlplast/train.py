"""One training run, top to bottom: config → env → agent (+ interventions) → callbacks → learn → outputs.

The file reads in that order: the device, the env and its checks (:func:`make_env`, :class:`Preflight`),
the agent (:func:`build_model`), the run directory, then :func:`run_training` (a new run) and
:func:`resume_training` (a run continued from its checkpoint, optionally with a larger budget), which
share :func:`train`: callbacks → ``learn`` → ``model.zip`` and ``summary.json``.

Everything that can be rejected (config, env id, action and observation spaces, policy, interventions,
metric names, device, a run directory that cannot be created, a resume that cannot be exact) is checked
before anything is written, so bad input never leaves a half-written run behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import platform
import shutil
import signal
import sys
import typing
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
import torch
import yaml
from stable_baselines3.common.logger import Logger

from rlplast.agents.layers import CReLU
from rlplast.config import Config, dump_config
from rlplast.errors import TrainingStopped, UserError, user_code_error
from rlplast.io import atomic_write_json, atomic_write_text
from rlplast.threads import set_cpu_threads

if TYPE_CHECKING:
    from rlplast.agents import PlasticDQN
    from rlplast.callbacks import EpisodeLog, MetricsProbe

#: ``agent.activation`` → activation class. ``crelu`` doubles each hidden layer's output width
#: (:class:`rlplast.agents.layers.CReLU`); the Q head is then built by rlplast's policies.
ACTIVATIONS: dict[str, type[torch.nn.Module]] = {
    "relu": torch.nn.ReLU,
    "tanh": torch.nn.Tanh,
    "elu": torch.nn.ELU,
    "leaky_relu": torch.nn.LeakyReLU,
    "crelu": CReLU,
}


def resolve_device(name: str) -> str:
    """Map ``auto`` to ``cuda`` when available, else ``cpu``; reject ``cuda`` without a GPU."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device: 'cuda' requested but no CUDA device is available; valid: auto, cpu")
    return name


def make_env(cfg: Config) -> gym.Env:
    """Create the configured env (importing ``env.import`` first) and check it suits DQN."""
    from rlplast.envs.factory import make_env as _make

    env = _make(cfg.env.id, cfg.env.kwargs, import_module=cfg.env.import_module)
    if not isinstance(env.action_space, gym.spaces.Discrete):
        env.close()
        raise UserError(
            f"env '{cfg.env.id}' has a {type(env.action_space).__name__} action space; "
            "DQN needs a Discrete action space"
        )
    if not isinstance(env.observation_space, OBSERVATION_SPACES):
        env.close()
        raise UserError(
            f"env '{cfg.env.id}' has a {describe_space(env.observation_space)} observation space, which "
            f"stable-baselines3's DQN cannot handle; valid: {', '.join(c.__name__ for c in OBSERVATION_SPACES)}"
        )
    return env


#: Observation spaces PlasticDQN's policies (MlpPolicy, CnnPolicy) take; SB3 needs MultiInputPolicy
#: for Dict spaces and supports no Tuple, Graph, Text or Sequence spaces.
OBSERVATION_SPACES: tuple[type[gym.Space], ...] = (
    gym.spaces.Box,
    gym.spaces.Discrete,
    gym.spaces.MultiBinary,
    gym.spaces.MultiDiscrete,
)

#: The smallest height and width SB3's NatureCNN (CnnPolicy's extractor) can take:
#: conv 8x8 stride 4, conv 4x4 stride 2, conv 3x3 stride 1.
NATURE_CNN_MIN_SIZE = 36


def describe_space(space: gym.Space) -> str:
    """A short one-line description of a space (a Box's per-dimension bounds are left out)."""
    if isinstance(space, gym.spaces.Box):
        low, high = np.unique(space.low), np.unique(space.high)
        bounds = f"{low[0]:g}..{high[0]:g}, " if low.size == 1 and high.size == 1 else ""
        return f"Box({bounds}shape {space.shape}, {space.dtype})"
    return str(space)


def check_policy_fits(cfg: Config, space: gym.Space) -> None:
    """Reject ``agent.policy`` / ``agent.features_extractor`` choices the observation space cannot feed.

    Mirrors the checks stable-baselines3 and :class:`MinAtarCNN` make when the network is built, so
    they fail as one-line errors before anything is written.
    """
    from stable_baselines3.common.preprocessing import is_image_space, is_image_space_channels_first

    a = cfg.agent
    if a.features_extractor == "minatar_cnn":
        if not (isinstance(space, gym.spaces.Box) and len(space.shape) == 3 and min(space.shape[1:]) >= 3):
            raise UserError(
                f"agent.features_extractor: minatar_cnn needs a (channels, height, width) Box observation "
                f"space with height and width >= 3, env '{cfg.env.id}' has {describe_space(space)}; "
                "valid: null (SB3's default for the policy), minatar_cnn"
            )
        return
    if a.policy == "CnnPolicy":
        # SB3 divides image observations by 255 (normalize_images), so NatureCNN takes only uint8
        # Boxes with bounds 0..255; rlplast passes normalize_images=False only with minatar_cnn.
        if not is_image_space(space):
            raise UserError(
                f"agent.policy: CnnPolicy needs image observations (a uint8 Box with bounds 0..255 and "
                f"shape (H, W, C) or (C, H, W)), env '{cfg.env.id}' has {describe_space(space)}; "
                "use MlpPolicy (valid: MlpPolicy, CnnPolicy), or features_extractor: minatar_cnn for "
                "channel-first grids such as MinAtar's"
            )
        box = typing.cast(gym.spaces.Box, space)  # is_image_space: a 3-D Box
        hw = box.shape[1:] if is_image_space_channels_first(box) else box.shape[:2]
        if min(hw) < NATURE_CNN_MIN_SIZE:
            raise UserError(
                f"agent.policy: CnnPolicy (SB3's NatureCNN) needs images of at least "
                f"{NATURE_CNN_MIN_SIZE}x{NATURE_CNN_MIN_SIZE}, env '{cfg.env.id}' has "
                f"{describe_space(space)}; use MlpPolicy (valid: MlpPolicy, CnnPolicy)"
            )


class Preflight:
    """Everything a run rejects before it writes, checked once per distinct setting.

    Device (:func:`resolve_device`), env id, action and observation spaces (:func:`make_env`, one
    env per distinct env section), policy and features extractor against the observations
    (:func:`check_policy_fits`), interventions (:func:`rlplast.interventions.base.build_intervention`)
    and metric names (:class:`rlplast.callbacks.MetricsProbe`). ``rlplast train`` runs it on its
    config, ``rlplast compare`` on every planned run's config (one instance, so each distinct
    setting is checked once). Only :class:`UserError` is bad input; any other exception is left to
    the run itself, which then fails where it happens (in a sweep: a run failure).

    With ``build_models`` it also builds the agent on the CPU once per distinct env, agent and
    interventions setting, so what an intervention refuses when it is set up on the network (e.g.
    ``redo`` on a CReLU network, ``plasticity_injection`` with more layers than the head has) is
    bad input before a sweep writes anything; ``rlplast train`` builds its agent before writing
    anyway.
    """

    def __init__(self, build_models: bool = False) -> None:
        self.cache: dict[str, tuple[Any, UserError | None]] = {}
        self.build_models = build_models

    def _once(self, key: str, fn: Any) -> Any:
        """``fn()``, computed once per key; a UserError is raised again for every config with that key."""
        if key not in self.cache:
            try:
                self.cache[key] = (fn(), None)
            except UserError as exc:
                self.cache[key] = (None, exc)
            except Exception:  # noqa: BLE001 - not bad input: the run reports it as a failure
                self.cache[key] = (None, None)
        value, error = self.cache[key]
        if error is not None:
            raise UserError(str(error))
        return value

    def __call__(self, cfg: Config) -> None:
        """Raise the :class:`UserError` a run of ``cfg`` would raise before writing anything."""
        import json

        self._once(f"device {cfg.train.device}", lambda: resolve_device(cfg.train.device))

        def observation_space() -> Any:
            env = make_env(cfg)
            space = env.observation_space
            env.close()
            return space

        env_key = json.dumps([cfg.env.id, cfg.env.kwargs, cfg.env.import_module], sort_keys=True, default=str)
        space = self._once(f"env {env_key}", observation_space)
        if space is not None:
            policy = f"{cfg.agent.policy} {cfg.agent.features_extractor}"
            self._once(f"policy {policy} {env_key}", lambda: check_policy_fits(cfg, space))
        from rlplast.interventions.base import build_intervention

        for spec in cfg.interventions:
            self._once(
                f"intervention {json.dumps(spec, sort_keys=True, default=str)}",
                lambda spec=spec: build_intervention(dict(spec)),
            )
        if cfg.metrics.enabled:
            from rlplast.callbacks import MetricsProbe

            self._once(
                f"metrics {json.dumps(list(cfg.metrics.names))}",
                lambda: MetricsProbe(cfg.metrics, seed=cfg.train.seed, echo=False),
            )
        if self.build_models and space is not None:
            setting = [env_key, dataclasses.asdict(cfg.agent), list(cfg.interventions)]
            self._once(f"model {json.dumps(setting, sort_keys=True, default=str)}", lambda: _build_once(cfg))


def _build_once(cfg: Config) -> None:
    """Build ``cfg``'s agent on the CPU and drop it (:class:`Preflight` with ``build_models``)."""
    env = make_env(cfg)
    try:
        build_model(cfg, env, "cpu")
    finally:
        env.close()


def preflight(cfg: Config) -> None:
    """Check ``cfg`` as a run would before writing anything (see :class:`Preflight`).

    Raises:
        UserError: the first problem found (device, env, spaces, policy, interventions, metrics).
    """
    Preflight()(cfg)


def policy_kwargs(cfg: Config) -> dict[str, Any]:
    """SB3 ``policy_kwargs`` from the agent section.

    The network options (``layer_norm``, ``activation: crelu``) and the optimizer choices
    (``weight_decay`` > 0: AdamW; ``optimizer: trac``: TRAC around Adam / AdamW) appear only when
    they differ from the defaults, so a default agent gets SB3's own policy arguments.
    """
    a = cfg.agent
    kwargs: dict[str, Any] = {
        "net_arch": list(a.net_arch),
        "activation_fn": ACTIVATIONS[a.activation],
    }
    if a.layer_norm:
        kwargs["layer_norm"] = True
    if a.features_extractor == "minatar_cnn":
        from rlplast.agents.minatar_cnn import MinAtarCNN

        kwargs.update(features_extractor_class=MinAtarCNN, normalize_images=False)
    # foreach is PlasticDQN's own default for Adam (bitwise equal to SB3's per-tensor loop).
    optimizer_kwargs: dict[str, Any] = {"fused": True} if a.optimizer_impl == "fused" else {"foreach": True}
    if a.weight_decay > 0:
        # Decoupled weight decay (Loshchilov & Hutter): AdamW, as in Lyle et al. 2024.
        optimizer_kwargs["weight_decay"] = a.weight_decay
        kwargs["optimizer_class"] = torch.optim.AdamW
    if a.optimizer == "trac":
        from rlplast.agents.trac import TRACAdam, TRACAdamW

        kwargs["optimizer_class"] = TRACAdamW if a.weight_decay > 0 else TRACAdam
    kwargs["optimizer_kwargs"] = optimizer_kwargs
    return kwargs


def build_model(cfg: Config, env: gym.Env, device: str) -> Any:
    """A PlasticDQN with the configured hyperparameters and interventions.

    Raises:
        UserError: a policy or features extractor the env's observations cannot feed
            (:func:`check_policy_fits`), a bad intervention, fused Adam where it is unavailable.
    """
    from rlplast.interventions.base import build_intervention

    check_policy_fits(cfg, env.observation_space)
    interventions = [build_intervention(dict(spec)) for spec in cfg.interventions]
    a = cfg.agent
    try:
        model = _plastic_dqn(cfg, env, device, interventions)
    except RuntimeError as exc:
        if a.optimizer_impl != "fused":
            raise
        raise UserError(
            f"agent.optimizer_impl: fused Adam is not available with torch {torch.__version__} on "
            f"{device} ({str(exc).splitlines()[0]}); use foreach"
        ) from None
    except NotImplementedError as exc:
        # stable-baselines3's refusal of a space that make_env / check_policy_fits do not mirror.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"stable-baselines3 cannot build agent.policy {a.policy} for env '{cfg.env.id}': {first}"
        ) from None
    # rlplast writes its own logs (RunLogger); SB3's logger records nothing anywhere.
    model.set_logger(Logger(folder=None, output_formats=[]))
    return model


def _plastic_dqn(cfg: Config, env: gym.Env, device: str, interventions: list[Any]) -> Any:
    from rlplast.agents import PlasticDQN

    a = cfg.agent
    return PlasticDQN(
        a.policy,
        env,
        interventions=interventions,
        double_dqn=a.double_dqn,
        learning_rate=a.learning_rate,
        buffer_size=a.buffer_size,
        learning_starts=a.learning_starts,
        batch_size=a.batch_size,
        tau=a.tau,
        gamma=a.gamma,
        train_freq=a.train_freq,
        gradient_steps=a.gradient_steps,
        n_steps=a.n_steps,
        target_update_interval=a.target_update_interval,
        exploration_fraction=a.exploration_fraction,
        exploration_initial_eps=a.exploration_initial_eps,
        exploration_final_eps=a.exploration_final_eps,
        max_grad_norm=a.max_grad_norm,
        stats_window_size=a.stats_window_size,
        policy_kwargs=policy_kwargs(cfg),
        seed=cfg.train.seed,
        device=device,
        verbose=0,
    )


def default_run_dir(cfg: Config, config_path: str | Path | None, method: str | None = None) -> Path:
    """``output.dir/output.name``, else ``output.dir/<config stem>[-<method>]-s<seed>``."""
    if cfg.output.name:
        return Path(cfg.output.dir) / cfg.output.name
    stem = Path(config_path).stem if config_path else "run"
    if method:
        stem += f"-{Path(method).stem}"
    return Path(cfg.output.dir) / f"{stem}-s{cfg.train.seed}"


def package_versions() -> dict[str, str]:
    """Versions of Python and of the packages a run's results depend on (``summary.json``)."""
    out = {"python": platform.python_version()}
    for pkg in ("rlplast", "torch", "stable-baselines3", "gymnasium", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def check_run_dir(run_dir: Path, overwrite: bool) -> bool:
    """Whether ``run_dir`` holds something; raise unless ``overwrite`` allows replacing it.

    Also raises when ``run_dir`` cannot be created because a path component is a file (a cheap
    check before the env and model are built; :func:`prepare_run_dir` catches every other reason).
    """
    occupied = run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir()))
    if occupied and not overwrite:
        raise UserError(f"run directory {run_dir} already exists; pass --overwrite or choose --out")
    if not run_dir.exists():
        ancestor = next((p for p in run_dir.parents if p.exists()), None)
        if ancestor is not None and not ancestor.is_dir():
            raise UserError(f"cannot create run directory {run_dir}: {ancestor} is not a directory")
    return occupied


def _os_reason(exc: Exception, path: Path) -> str:
    """``strerror`` of an OSError (with the path it names, when that is not ``path``), else the message."""
    if isinstance(exc, OSError) and exc.strerror:
        named = exc.filename
        return exc.strerror if named is None or Path(named) == path else f"{named}: {exc.strerror}"
    return str(exc)


def prepare_run_dir(run_dir: Path, overwrite: bool) -> None:
    """Create ``run_dir``; an existing non-empty one is replaced only with ``overwrite``.

    Raises:
        UserError: the directory cannot be created or replaced (folders this call created on the
            way are removed again).
    """
    if check_run_dir(run_dir, overwrite):
        try:
            if run_dir.is_dir():
                shutil.rmtree(run_dir)
            else:
                run_dir.unlink()
        except OSError as exc:
            raise UserError(f"cannot replace run directory {run_dir}: {_os_reason(exc, run_dir)}") from None
    created = [p for p in (run_dir, *run_dir.parents) if not p.exists()]  # deepest first
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except (OSError, ValueError) as exc:
        for folder in created:
            with contextlib.suppress(OSError, ValueError):
                folder.rmdir()
        raise UserError(f"cannot create run directory {run_dir}: {_os_reason(exc, run_dir)}") from None


SIGNAL_EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


# ---------------------------------------------------------------------------------- a new run
def run_training(
    cfg: Config,
    run_dir: str | Path,
    overwrite: bool = False,
    quiet: bool = False,
) -> dict[str, Any]:
    """Train one PlasticDQN run and write its run directory. Returns the summary.

    Args:
        cfg: a validated config.
        run_dir: the run directory itself (created; see :func:`prepare_run_dir`).
        overwrite: replace an existing run directory.
        quiet: no progress bar, no metric notes on stderr.

    Raises:
        UserError: bad input (nothing is written), including a checkpoint key that cannot be
            created or read (:func:`rlplast.checkpoint.checkpoint_key`).
        TrainingStopped: a signal or non-finite values stopped training after a checkpoint.
    """
    from rlplast.checkpoint import checkpoint_key

    run_dir = Path(run_dir)
    # config: everything that can be rejected, before anything is written
    check_run_dir(run_dir, overwrite)  # fail before the (slower) env and model set-up
    preflight(cfg)  # the same checks rlplast compare makes for every planned run
    set_cpu_threads(cfg.train.torch_threads)
    # env
    env = make_env(cfg)
    # agent (+ interventions), and the metrics probe the callbacks will use
    model = build_model(cfg, env, resolve_device(cfg.train.device))
    probe = metrics_probe(cfg, quiet)
    checkpoint_key()  # checkpoints are signed with it: an unusable key fails before anything is written
    # only now touch the file system
    prepare_run_dir(run_dir, overwrite)
    atomic_write_text(run_dir / "config.yaml", dump_config(cfg))
    return train(cfg, run_dir, model, probe, quiet=quiet)


def metrics_probe(cfg: Config, quiet: bool) -> MetricsProbe | None:
    """The run's metrics probe, or None with ``metrics.enabled: false``.

    Raises:
        UserError: an unknown metric name.
    """
    from rlplast.callbacks import MetricsProbe

    if not cfg.metrics.enabled:
        return None
    return MetricsProbe(cfg.metrics, seed=cfg.train.seed, echo=not quiet)


# ---------------------------------------------------------------------------------- a resumed run
@dataclasses.dataclass
class Resume:
    """Where a resumed run starts: what its checkpoint holds besides the agent.

    Attributes:
        callback_state: the callbacks' part of the checkpoint.
        rng: the global random states.
    """

    callback_state: dict[str, Any]
    rng: dict[str, Any]


def resume_training(
    run_dir: str | Path,
    quiet: bool = False,
    total_steps: int | None = None,
    trust_checkpoint: bool = False,
) -> dict[str, Any]:
    """Continue a run from its latest valid checkpoint, exactly as if it had never stopped.

    ``config.yaml`` must be the config the checkpoint was taken with: checkpoints record it, and
    any difference (an edited env, network, budget, metrics switch, ...) is refused, since the
    checkpoint's agent and env would silently keep the old settings. Checkpoints written before
    the config was recorded are only checked for what resuming needs (``metrics.enabled``).
    Everything is checked before a file is touched: a refused resume leaves the run as it was.

    The checkpoint is loaded only when it is signed with this user's checkpoint key (it holds
    pickled objects, see :mod:`rlplast.checkpoint`): a run directory from someone else, or a
    checkpoint of rlplast's previous format, is refused unless ``trust_checkpoint``.

    With ``total_steps``, the run's budget becomes ``total_steps`` (written to ``config.yaml``);
    a finished run is continued from the checkpoint of its last step. The exploration schedule
    keeps the budget the run started with (:attr:`rlplast.agents.PlasticDQN.schedule_timesteps`):
    epsilon reaches ``exploration_final_eps`` after ``exploration_fraction`` × the original
    ``train.total_steps`` and stays there.

    Args:
        run_dir: the run directory.
        quiet: no progress bar, no metric notes on stderr.
        total_steps: a new budget, larger than the steps already trained.
        trust_checkpoint: load the checkpoint even when this user's key did not sign it
            (``--trust-checkpoint``): only for run directories whose source you trust.

    Raises:
        UserError: not a run directory, already finished (without ``total_steps``), no valid
            checkpoint, a checkpoint not signed with this user's key (without ``trust_checkpoint``),
            a config.yaml that differs from the checkpoint's, corrupt metrics.csv / episodes.csv, a
            budget not above the steps already trained, or a finished run without a checkpoint of
            its last step.
    """
    from rlplast.checkpoint import checkpoint_key, load_latest
    from rlplast.config import config_from_dict, load_config
    from rlplast.io import csv_rows_through, truncate_csv_rows

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"{run_dir} is not a run directory (no config.yaml); nothing to resume")
    finished = (run_dir / "summary.json").is_file()
    if finished and total_steps is None:
        raise UserError(
            f"run {run_dir} already finished (summary.json exists); nothing to resume; "
            f"to train it for more steps: rlplast train --resume {run_dir} --total-steps N"
        )
    cfg = load_config(run_dir / "config.yaml")
    payload, path = load_latest(run_dir / "checkpoints", trust=trust_checkpoint)
    check_resume_config(cfg, payload, run_dir, ignore_total_steps=total_steps is not None)
    step = int(payload["step"])
    original_total = _recorded_total_steps(payload, cfg)
    if total_steps is not None:
        _check_new_budget(run_dir, step, total_steps, finished)
        data = cfg.to_dict()
        data["train"]["total_steps"] = total_steps
        cfg = config_from_dict(data)
    state = payload["callback"]
    # metrics.csv keeps the rows up to the checkpoint's last logging row; a finished run's final row
    # (written after its last checkpoint, off the logging grid) is dropped like any later row.
    last_row = int(state["last_log_step"])
    for name, through in (("episodes.csv", step), ("metrics.csv", last_row)):  # check both first
        if csv_rows_through(run_dir / name, through) is None:
            raise UserError(f"{run_dir / name} is missing or empty; cannot resume {run_dir}")
    set_cpu_threads(cfg.train.torch_threads)
    model: PlasticDQN = payload["model"]
    if cfg.train.total_steps != original_total and model.schedule_timesteps is None:
        model.schedule_timesteps = original_total
    probe = metrics_probe(cfg, quiet)
    checkpoint_key()  # the run's next checkpoints are signed with it

    # Everything is checked: only now touch the files.
    if total_steps is not None:
        (run_dir / "summary.json").unlink(missing_ok=True)  # the run is no longer finished
        atomic_write_text(run_dir / "config.yaml", dump_config(cfg))
    truncate_csv_rows(run_dir / "episodes.csv", step)
    to = f" to {cfg.train.total_steps} steps" if total_steps is not None else ""
    print(f"rlplast: resuming {run_dir} from {path.name} (step {step}){to}", file=sys.stderr)
    resume = Resume(callback_state=state, rng=payload["rng"])
    return train(cfg, run_dir, model, probe, quiet=quiet, resume=resume)


def _recorded_total_steps(payload: dict[str, Any], cfg: Config) -> int:
    """``train.total_steps`` of the config the checkpoint was taken with (``cfg``'s if not recorded)."""
    recorded = payload.get("config")
    if recorded is not None:
        with contextlib.suppress(yaml.YAMLError, TypeError, KeyError, AttributeError):
            return int(yaml.safe_load(recorded)["train"]["total_steps"])
    return cfg.train.total_steps


def _check_new_budget(run_dir: Path, step: int, total_steps: int, finished: bool) -> None:
    """Refuse a ``--total-steps`` that continues nothing or cannot continue exactly."""
    from rlplast.rundir import read_summary

    trained = step
    if finished:
        trained = int(read_summary(run_dir / "summary.json").get("steps", step))
    if total_steps <= max(trained, step):
        raise UserError(
            f"--total-steps {total_steps}: run {run_dir} has already trained {max(trained, step)} steps; "
            "give a larger budget"
        )
    if finished and trained != step:
        raise UserError(
            f"run {run_dir} finished at step {trained} but its latest checkpoint is from step {step}; "
            "only a run with a checkpoint of its last step can be continued (checkpoint.every_steps > 0, "
            "rlplast 0.1.0 from the callbacks split on)"
        )


def check_resume_config(
    cfg: Config, payload: dict[str, Any], run_dir: Path, ignore_total_steps: bool = False
) -> None:
    """Refuse to resume when ``config.yaml`` (``cfg``) is not the config the checkpoint was taken with.

    Nothing may change: the checkpoint holds the agent, env and schedules built from its config, so
    an edit would be ignored in part (env, network, interventions) and applied in part (budget,
    logging, metrics), giving a run that matches neither config. Only the budget may differ, and
    only when a new one is given (``ignore_total_steps``: ``rlplast train --resume --total-steps``).
    """
    from rlplast.config import config_from_dict, first_difference

    recorded = payload.get("config")
    if recorded is None:  # a checkpoint from before rlplast recorded the config
        has_metrics = "metrics_rng" in payload["callback"]
        if cfg.metrics.enabled != has_metrics:
            _differs(run_dir, "metrics.enabled", cfg.metrics.enabled, has_metrics)
        return
    try:
        taken_with = config_from_dict(yaml.safe_load(recorded)).to_dict()
    except (UserError, yaml.YAMLError):
        # Written by another rlplast version whose config no longer loads: compare as recorded.
        taken_with = yaml.safe_load(recorded)
    now = cfg.to_dict()
    if ignore_total_steps and isinstance(taken_with, dict) and isinstance(taken_with.get("train"), dict):
        taken_with["train"]["total_steps"] = now["train"]["total_steps"]
    difference = first_difference(now, taken_with)
    if difference is not None:
        _differs(run_dir, *difference)


def _differs(run_dir: Path, where: str, now: Any, then: Any) -> typing.NoReturn:
    hint = ""
    if where == "train.total_steps":
        hint = f" (to change the budget: rlplast train --resume {run_dir} --total-steps N)"
    raise UserError(
        f"config.yaml of {run_dir} differs from its checkpoint at {where}: {now!r} (config.yaml) vs "
        f"{then!r} (checkpoint); restore it or start a new run{hint}"
    )


# ---------------------------------------------------------------------------------- both: callbacks → learn → outputs
def train(
    cfg: Config,
    run_dir: Path,
    model: PlasticDQN,
    probe: MetricsProbe | None,
    quiet: bool = False,
    resume: Resume | None = None,
) -> dict[str, Any]:
    """The path shared by new and resumed runs: callbacks → ``learn`` → ``model.zip`` and ``summary.json``.

    ``run_dir`` already holds ``config.yaml`` (and, when resuming, the files up to ``resume.step``).

    Raises:
        TrainingStopped: a signal or non-finite values stopped training after a checkpoint.
    """
    from rlplast.callbacks import (
        Checkpoints,
        Progress,
        RunCallbacks,
        RunWriters,
        StopRequest,
        TaskSwitches,
    )
    from rlplast.checkpoint import set_rng_state
    from rlplast.runlog import RunLogger

    # callbacks, each given what it needs
    run_logger = RunLogger(
        run_dir,
        tensorboard=cfg.output.tensorboard,
        resume_step=None if resume is None else int(resume.callback_state["last_log_step"]),
    )
    stop = StopRequest()  # set by signals or NonFiniteGuard; Checkpoints then checkpoints and stops
    progress = Progress(cfg.train.total_steps) if cfg.train.progress and not quiet else None
    # the run directory's writers (shared with the population engine): the step record, episodes,
    # rows and their row callbacks (non-finite guard, metrics, evaluation, then the progress bar)
    writers = RunWriters.build(
        cfg,
        run_dir,
        run_logger,
        model.stats_window_size,
        probe,
        stop,
        make_env=lambda: make_env(cfg),
        extra_row_callbacks=[progress] if progress is not None else None,
    )
    record, episodes, rows = writers.record, writers.episodes, writers.rows
    checkpoints = Checkpoints(
        run_dir / "checkpoints",
        every_steps=cfg.checkpoint.every_steps,
        keep=cfg.checkpoint.keep,
        total_steps=cfg.train.total_steps,
        config_text=dump_config(cfg),
        parts=writers.parts,
        before_save=[episodes.flush],
        stop=stop,
    )
    children = [TaskSwitches(), *writers.callbacks, progress, checkpoints]
    callback = RunCallbacks([c for c in children if c is not None], record)
    if resume is not None:
        checkpoints.load_callback_state(resume.callback_state)
        set_rng_state(resume.rng)

    # learn
    try:
        with stop_on_signals(stop) as received:
            model.learn(
                cfg.train.total_steps - model.num_timesteps,
                callback=callback,
                log_interval=None,
                reset_num_timesteps=resume is None,
            )
    except Exception as exc:
        # An env, intervention or plugin of the user's that raises is bad input: one line (the
        # files written so far stay, flushed below); anything else is a bug and keeps its traceback.
        error = user_code_error(
            exc,
            f"training stopped at step {model.num_timesteps}; {run_dir} keeps what was written "
            f"(rlplast train --resume {run_dir} continues from its last checkpoint, if it has one)",
        )
        if error is None:
            raise
        raise error from exc
    finally:
        run_logger.close()
        writers.close()
    if stop.reason is not None:
        code = SIGNAL_EXIT_CODES.get(signal.Signals(received[0]), 1) if received else 1
        raise TrainingStopped(
            f"{stop.reason}; checkpoint saved at step {model.num_timesteps}; "
            f"continue with: rlplast train --resume {run_dir}",
            exit_code=code,
        )

    # outputs
    if cfg.output.save_model:
        model.save(run_dir / "model.zip")
    summary = run_summary(
        cfg,
        episodes,
        rows.elapsed(),
        steps=model.num_timesteps,
        updates=model.n_updates,
        window=model.stats_window_size,
        device=str(model.device),
        probe=probe,
        resumed=resume is not None,
        schedule_total_steps=model.schedule_timesteps,
    )
    atomic_write_json(run_dir / "summary.json", summary)
    assert model.env is not None
    model.env.close()
    return summary


def run_summary(
    cfg: Config,
    episodes: EpisodeLog,
    wall_time_s: float,
    *,
    steps: int,
    updates: int,
    window: int,
    device: str,
    probe: MetricsProbe | None,
    resumed: bool,
    schedule_total_steps: int | None = None,
) -> dict[str, Any]:
    """A finished run's ``summary.json`` (one definition for every engine that writes run dirs).

    Args:
        cfg: the run's config.
        episodes: its episode log (returns, per task, the final window).
        wall_time_s: wall-clock seconds of training (earlier sessions of a resumed run included).
        steps: env steps taken.
        updates: gradient updates made.
        window: episodes the final return averages over (SB3's ``stats_window_size``).
        device: the torch device trained on.
        probe: the metrics probe (its NaN notes), or None without metrics.
        resumed: whether the run was resumed from a checkpoint.
        schedule_total_steps: the budget the exploration schedule spans when it is not
            ``train.total_steps`` (a run continued with ``--total-steps``).
    """
    return {
        "final_return": episodes.window_return(),
        "final_return_window": window,
        "mean_return": episodes.mean_return(),
        "episodes": episodes.count,
        "returns_per_task": episodes.returns_per_task(),
        "steps": int(steps),
        "updates": int(updates),
        "wall_time_s": wall_time_s,
        "steps_per_s": steps / wall_time_s if wall_time_s > 0 else None,
        "resumed": resumed,
        # The budget the exploration schedule spans: train.total_steps, or the original budget
        # of a run continued with --total-steps.
        "schedule_total_steps": schedule_total_steps or cfg.train.total_steps,
        "seed": cfg.train.seed,
        "device": device,
        "env": cfg.env.id,
        "interventions": [spec.get("name") for spec in cfg.interventions],
        # Why some metric values are NaN, once each ("metrics: ..."), e.g. fewer than 2 action classes.
        "notes": probe.notes() if probe is not None else [],
        "versions": package_versions(),
    }


@contextlib.contextmanager
def stop_on_signals(stop: Any) -> Iterator[list[int]]:
    """SIGINT and SIGTERM request a stop (checkpoint, then stop) instead of killing the process.

    Yields the signals received. Outside the main thread (e.g. some Ray workers) handlers cannot be
    installed and there is no graceful stop.
    """
    received: list[int] = []

    def on_signal(signum: int, frame: Any) -> None:
        received.append(signum)
        stop.request(f"received {signal.Signals(signum).name}")

    previous = {}
    for sig in SIGNAL_EXIT_CODES:
        with contextlib.suppress(ValueError):
            previous[sig] = signal.signal(sig, on_signal)
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
