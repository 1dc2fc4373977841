"""The ``rlplast`` command line: ``train``, ``envs``, ``compare``, ``report``, ``config-reference``.

Bad input of any kind ends with one line on stderr (``rlplast: error: …``) and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from rlplast.errors import TrainingStopped, UserError


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line and exit code 2 like every other bad input."""

    def error(self, message: str) -> None:  # type: ignore[override]
        # main() prints "rlplast: error: ..."; name the sub-command only ("train: ...").
        command = self.prog.removeprefix("rlplast").strip()
        raise UserError(f"{command}: {message}" if command else message)


def _add_common_overrides(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config value (repeatable), e.g. --set agent.learning_rate=1e-3",
    )


def build_parser() -> argparse.ArgumentParser:
    from rlplast import __version__

    parser = _Parser(prog="rlplast", description="Reinforcement-learning plasticity testbed.")
    parser.add_argument("--version", action="version", version=f"rlplast {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("train", help="train one PlasticDQN run from a YAML config")
    p.add_argument("config", nargs="?", help="YAML config file (see configs/); omit with --resume")
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue RUN_DIR from its latest valid checkpoint (its own config.yaml is used)",
    )
    p.add_argument(
        "--total-steps",
        type=int,
        metavar="N",
        help="with --resume: train RUN_DIR, finished or not, up to N env steps in all",
    )
    p.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="with --resume: load the checkpoint even if this user's key did not sign it (another "
        "user's run, or rlplast's previous format); loading it can run code: only for runs you trust",
    )
    _add_common_overrides(p)
    p.add_argument(
        "--method",
        help="a method overlay merged onto CONFIG: NAME (methods/NAME.yaml beside CONFIG) or a .yaml path",
    )
    p.add_argument(
        "--out", help="the run directory itself (default: output.dir/<config stem>[-<method>]-s<seed>)"
    )
    p.add_argument("--seed", type=int, help="shortcut for --set train.seed=N")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="shortcut for --set train.device=…")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    from rlplast.methods import DEFAULT_METHODS

    p = sub.add_parser("compare", help="run a methods × seeds sweep in parallel, then report")
    p.add_argument("config", help="base YAML config; methods are overlays in methods/ beside it")
    p.add_argument(
        "--methods",
        help="comma-separated method names (methods/<name>.yaml) or .yaml paths "
        f"(default: {','.join(DEFAULT_METHODS)})",
    )
    p.add_argument(
        "--seeds", type=int, default=5, help="number of seeds, 0..S-1 (default 5); sets each run's train.seed"
    )
    p.add_argument("--workers", type=int, help="parallel runs (default: os.cpu_count())")
    p.add_argument(
        "--backend", choices=["local", "ray"], default="local", help="local worker processes or Ray tasks"
    )
    p.add_argument(
        "--ray-address", help="address of a running Ray cluster (needs --backend ray; default: a local Ray)"
    )
    p.add_argument(
        "--engine",
        choices=["single", "population"],
        help="single: one process per run; population: each method's seeds in one process "
        "(rlplast.population); default: the config's train.engine (single)",
    )
    p.add_argument("--out", help="sweep directory (default: sweeps/<config stem>)")
    p.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="continue unfinished runs from checkpoints this user's key did not sign (a sweep from "
        "elsewhere); loading them can run code: only for sweeps you trust",
    )
    _add_common_overrides(p)
    p.add_argument("--quiet", action="store_true", help="no progress lines")

    p = sub.add_parser("report", help="aggregate a sweep directory into tables and plots")
    p.add_argument(
        "sweep_dir", help="a directory written by `rlplast compare`, or a folder of `rlplast train` run dirs"
    )
    p.add_argument("--out", help="output folder (default: SWEEP_DIR/report)")
    p.add_argument(
        "--reference",
        help="the 'from scratch' method of the continual-learning scores (normalised scores, forward "
        "transfer; default: from_scratch when the sweep has it)",
    )

    p = sub.add_parser(
        "supervised", help="run the supervised permuted-digits track (or warm start) and report"
    )
    p.add_argument("config", help="YAML config (see configs/supervised/)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value (repeatable), e.g. --set n_tasks=20 --set regularizer.coef=0.05",
    )
    p.add_argument("--out", help="report directory (default: runs/supervised/<config stem>)")
    p.add_argument("--seeds", type=int, default=1, help="number of seeds, seed..seed+N-1 (default 1)")
    p.add_argument(
        "--overwrite", action="store_true", help="replace the files of an existing report directory"
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines")

    sub.add_parser("envs", help="list the registered rlplast environment ids")
    sub.add_parser("config-reference", help="print every config key as a Markdown table")
    return parser


def cmd_train(args: argparse.Namespace) -> int:
    from rlplast.config import load_config, read_yaml
    from rlplast.train import default_run_dir, resume_training, run_training

    if args.resume:
        given = [
            flag
            for flag, value in (
                ("CONFIG", args.config),
                ("--set", args.overrides),
                ("--method", args.method),
                ("--out", args.out),
                ("--seed", args.seed),
                ("--device", args.device),
                ("--overwrite", args.overwrite),
            )
            if value not in (None, [], False)
        ]
        if given:
            raise UserError(f"--resume continues a run with its own config; drop {', '.join(given)}")
        summary = resume_training(
            args.resume,
            quiet=args.quiet,
            total_steps=args.total_steps,
            trust_checkpoint=args.trust_checkpoint,
        )
        return _report_done(summary, Path(args.resume))
    if args.trust_checkpoint:
        raise UserError(
            "--trust-checkpoint applies to the checkpoint of --resume RUN_DIR; drop it for a new run"
        )
    if args.total_steps is not None:
        raise UserError(
            "--total-steps continues a run: use it with --resume RUN_DIR "
            f"(for a new run: --set train.total_steps={args.total_steps})"
        )
    if not args.config:
        raise UserError("train needs a CONFIG file (or --resume RUN_DIR)")
    from rlplast.methods import refuse_overlay_as_config, resolve_method

    if Path(args.config).is_file():  # a missing file is reported by load_config
        refuse_overlay_as_config(args.config, "train")
    overlays = []
    if args.method:
        _, overlay_path = resolve_method(args.config, args.method)
        overlays.append(read_yaml(overlay_path))
    overrides = list(args.overrides)
    if args.seed is not None:
        overrides.append(f"train.seed={args.seed}")
    if args.device is not None:
        overrides.append(f"train.device={args.device}")
    cfg = load_config(args.config, overrides, overlays)
    run_dir = Path(args.out) if args.out else default_run_dir(cfg, args.config, args.method)
    return _report_done(run_training(cfg, run_dir, overwrite=args.overwrite, quiet=args.quiet), run_dir)


def _report_done(summary: dict, run_dir: Path) -> int:
    final = summary["final_return"]
    print(
        f"done: {summary['steps']} steps in {summary['wall_time_s']:.1f} s "
        f"({summary['steps_per_s']:.0f} steps/s), final mean return {final:.1f}; run directory: {run_dir}"
    )
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from rlplast.methods import parse_methods
    from rlplast.sweep import run_compare

    result = run_compare(
        args.config,
        parse_methods(args.methods) if args.methods is not None else None,
        seeds=args.seeds,
        overrides=list(args.overrides),
        out=args.out,
        workers=args.workers,
        backend=args.backend,
        ray_address=args.ray_address,
        quiet=args.quiet,
        engine=args.engine,
        trust_checkpoint=args.trust_checkpoint,
    )
    failed = f", {len(result.failed)} failed ({', '.join(result.failed)})" if result.failed else ""
    report = f"; report: {result.report_dir}" if result.report_dir else ""
    print(
        f"compare: {result.done} runs done, {result.skipped} skipped (already done){failed} "
        f"in {result.wall_time_s:.1f} s; sweep: {result.out}{report}"
    )
    return 1 if result.failed else 0


def cmd_report(args: argparse.Namespace) -> int:
    from rlplast.analysis import write_report

    if args.reference is None:
        out = write_report(args.sweep_dir, args.out)
    else:
        out = write_report(args.sweep_dir, args.out, reference=args.reference, require_reference=True)
    print(f"report written to {out}")
    return 0


def cmd_supervised(args: argparse.Namespace) -> int:
    from rlplast.supervised import load_supervised_config, run_supervised

    cfg = load_supervised_config(args.config, list(args.overrides))
    out = Path(args.out) if args.out else Path("runs") / "supervised" / Path(args.config).stem
    quiet = {"progress": None} if args.quiet else {}  # default: progress lines on stderr
    info = run_supervised(cfg, out, seeds=args.seeds, overwrite=args.overwrite, **quiet)
    print(
        f"supervised ({cfg.mode}): {len(info['seeds'])} seed(s) in {info['train_seconds']:.1f} s; report: {out}"
    )
    return 0


def cmd_envs(args: argparse.Namespace) -> int:
    from rlplast.envs import format_env_table

    print(format_env_table())
    return 0


def cmd_config_reference(args: argparse.Namespace) -> int:
    from rlplast.config import reference_markdown

    print(reference_markdown(), end="")
    return 0


COMMANDS = {
    "train": cmd_train,
    "compare": cmd_compare,
    "report": cmd_report,
    "supervised": cmd_supervised,
    "envs": cmd_envs,
    "config-reference": cmd_config_reference,
}


def _check_set_values(argv: Sequence[str]) -> None:
    """``--set KEY VALUE`` (a space for the ``=``) would be misread by argparse: say what to write."""
    for i, arg in enumerate(argv[:-2]):
        key, value = argv[i + 1], argv[i + 2]
        if arg == "--set" and "=" not in key and not key.startswith("-") and not value.startswith("--"):
            raise UserError(f"--set takes KEY=VALUE with '=': write --set {key}={value}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rlplast`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        _check_set_values(argv)
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exc:  # --help, --version
            return exc.code if isinstance(exc.code, int) else 0
        return COMMANDS[args.command](args)
    except UserError as exc:
        print(f"rlplast: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except TrainingStopped as exc:
        print(f"rlplast: stopped: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("rlplast: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
