"""`rlplast compare` bad input: one line on stderr, exit code 2, no worker started, nothing lost.

Every case here is rejected before any run starts, so no test trains anything.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from rlplast.cli import main
from rlplast.sweep import Progress

REPO = Path(__file__).resolve().parents[2]
BASE = """\
env:
  id: rlplast/PermutedCartPole-v0
  kwargs: {steps_per_task: 200, n_tasks: 2}
train: {total_steps: 400}
output: {tensorboard: false, save_model: false}
"""


@pytest.fixture
def setup(tmp_path: Path) -> Path:
    (tmp_path / "methods").mkdir()
    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "methods" / "vanilla.yaml").write_text("{}\n")
    (tmp_path / "methods" / "badint.yaml").write_text("interventions:\n  - {name: reset_everything}\n")
    (tmp_path / "methods" / "badarg.yaml").write_text("interventions:\n  - {name: reset_last_layers, x: 1}\n")
    return tmp_path


def _compare(setup: Path, *args: str) -> list[str]:
    return ["compare", str(setup / "base.yaml"), *args]


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.startswith("rlplast: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------ config errors: nothing starts
@pytest.mark.parametrize(
    ("args", "message"),
    [
        # found by `rlplast train` before it writes; compare used to run them and record failures
        (["--methods", "badint"], "method 'badint' ("),
        (["--methods", "badint"], "unknown intervention 'reset_everything'"),
        (["--methods", "badarg"], "unknown parameter 'x' for intervention 'reset_last_layers'"),
        (["--methods", "vanilla", "--set", "metrics.names=[nc9]"], "--set: unknown metric 'nc9'"),
        (["--methods", "vanilla", "--set", "env={id: Pendulum-v1}"], "Box action space; DQN needs"),
        (["--methods", "vanilla", "--set", "env.id=NoSuchEnv-v0"], "--set: unknown env id 'NoSuchEnv-v0'"),
        (["--methods", "vanilla", "--set", "agent.policy=CnnPolicy"], "--set: agent.policy: CnnPolicy needs"),
        # refused when the intervention is set up on the network: compare builds each setting's agent once
        (
            [
                "--methods",
                "vanilla",
                "--set",
                "agent.activation=crelu",
                "--set",
                "interventions=[{name: redo}]",
            ],
            "intervention 'redo': the Q-network has no hidden linear layer",
        ),
        (
            ["--methods", "vanilla", "--set", "interventions=[{name: plasticity_injection, n_layers: 5}]"],
            "intervention 'plasticity_injection': n_layers=5",
        ),
        # blame the --set, not the method overlay
        (["--methods", "vanilla", "--set", "agent.gamma=2"], "--set: agent.gamma: must be <= 1.0"),
        # the per-run seeds would silently replace it
        (["--methods", "vanilla", "--set", "train.seed=7"], "use --seeds"),
        (["--methods", "vanilla", "--set", "train={seed: 7}"], "use --seeds"),
        (["--methods", "vanilla", "--ray-address", "127.0.0.1:6379"], "--ray-address needs --backend ray"),
        # without --methods the defaults run; here methods/reset.yaml is missing
        (["--seeds", "1"], "unknown method 'reset'"),
        (["--seeds", "1"], "(no --methods given: the default is vanilla, reset, ncreg)"),
    ],
)
def test_bad_config_is_rejected_before_any_run(setup: Path, capsys, args: list[str], message: str):
    out = setup / "sweep"
    assert main([*_compare(setup, *args), "--out", str(out)]) == 2
    err = _one_line_error(capsys)
    assert message in err
    assert not out.exists()  # no sweep directory, no worker


def test_set_errors_do_not_blame_the_method(setup: Path, capsys):
    assert main([*_compare(setup, "--methods", "vanilla", "--set", "agent.gamma=2", "--out", "x")]) == 2
    err = _one_line_error(capsys)
    assert "vanilla" not in err and "methods/" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is available")
def test_cuda_without_a_gpu_is_rejected_before_any_run(setup: Path, capsys):
    out = setup / "sweep"
    assert (
        main([*_compare(setup, "--methods", "vanilla", "--set", "train.device=cuda"), "--out", str(out)]) == 2
    )
    assert "train.device: 'cuda' requested but no CUDA device is available" in _one_line_error(capsys)
    assert not out.exists()


def test_invalid_yaml_config_is_reported_before_the_methods(tmp_path: Path, capsys):
    (tmp_path / "bad.yaml").write_text("env: [1\n")  # and no methods/ folder beside it
    assert main(["compare", str(tmp_path / "bad.yaml"), "--methods", "vanilla"]) == 2
    err = _one_line_error(capsys)
    assert "invalid YAML in" in err and "unknown method" not in err


def test_base_config_errors_name_the_config(setup: Path, capsys):
    (setup / "pendulum.yaml").write_text("env: {id: Pendulum-v1}\n")
    out = setup / "sweep"
    assert main(["compare", str(setup / "pendulum.yaml"), "--methods", "vanilla", "--out", str(out)]) == 2
    err = _one_line_error(capsys)
    assert f"{setup / 'pendulum.yaml'}: env 'Pendulum-v1' has a Box action space" in err
    assert not out.exists()


def test_an_env_module_that_crashes_stays_a_run_failure_not_bad_input(setup: Path, monkeypatch):
    """Only UserErrors are bad input: a RuntimeError while importing env.import is the run's failure."""
    from rlplast.sweep import check_runs, plan_sweep

    (setup / "crash_on_import_b.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(setup))
    (setup / "methods" / "crash.yaml").write_text("env:\n  import: crash_on_import_b\n")
    _, specs = plan_sweep(setup / "base.yaml", ["crash"], seeds=1, out=setup / "sweep")
    check_runs(setup / "base.yaml", specs)  # does not raise


# ------------------------------------------------------------------ unusable --out
@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc")
def test_out_that_cannot_be_created(setup: Path, capsys):
    assert main([*_compare(setup, "--methods", "vanilla"), "--out", "/proc/x/y"]) == 2
    assert "cannot create sweep directory /proc/x/y: " in _one_line_error(capsys)


def test_out_is_a_file_or_below_a_file(setup: Path, capsys):
    afile = setup / "afile"
    afile.write_text("keep me\n")
    for out in (afile, afile / "sub"):
        assert main([*_compare(setup, "--methods", "vanilla"), "--out", str(out)]) == 2
        assert f"cannot create sweep directory {out}: " in _one_line_error(capsys)
    assert afile.read_text() == "keep me\n"


def test_out_holding_a_train_run_is_refused(setup: Path, capsys):
    run = setup / "runs" / "base-s0"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("train: {seed: 0}\n")
    (run / "summary.json").write_text("{}\n")
    before = _snapshot(run)
    assert main([*_compare(setup, "--methods", "vanilla"), "--out", str(run)]) == 2
    assert "holds a training run (config.yaml, summary.json)" in _one_line_error(capsys)
    assert _snapshot(run) == before


# ------------------------------------------------------------------ corrupt sweep files
@pytest.mark.parametrize("text", ["[1, 2]", '"x"', '{"runs": [1]}', '{"runs": {"vanilla-s0": 3}}', "{bad"])
def test_corrupt_manifest_is_named(setup: Path, capsys, text: str):
    out = setup / "sweep"
    out.mkdir()
    (out / "manifest.json").write_text(text)
    before = _snapshot(out)
    assert main([*_compare(setup, "--methods", "vanilla"), "--out", str(out)]) == 2
    assert f"cannot read sweep manifest {out / 'manifest.json'}: " in _one_line_error(capsys)
    assert _snapshot(out) == before


def _done_sweep(setup: Path, summary: str) -> Path:
    """A sweep whose run vanilla-s0 is marked done, with ``summary`` as its summary.json."""
    out = setup / "sweep"
    run = out / "runs" / "vanilla-s0"
    run.mkdir(parents=True)
    (run / "summary.json").write_text(summary)
    (run / "metrics.csv").write_text("step\n100\n")
    entry = {"method": "vanilla", "seed": 0, "run_dir": "runs/vanilla-s0", "state": "done"}
    (out / "manifest.json").write_text(json.dumps({"config": "base.yaml", "runs": {"vanilla-s0": entry}}))
    return out


@pytest.mark.parametrize("summary", ["{bad json", "[1]", ""])
def test_corrupt_summary_of_a_done_run_is_named_and_kept(setup: Path, capsys, summary: str):
    out = _done_sweep(setup, summary)
    before = _snapshot(out)
    assert main([*_compare(setup, "--methods", "vanilla", "--seeds", "2"), "--out", str(out)]) == 2
    err = _one_line_error(capsys)
    summary_path = out / "runs" / "vanilla-s0" / "summary.json"
    assert f"cannot read run summary {summary_path}: " in err
    assert f"delete {out / 'runs' / 'vanilla-s0'} to rerun it" in err
    assert _snapshot(out) == before  # nothing rerun, nothing deleted, vanilla-s1 not started


# ------------------------------------------------------------------ docs
def test_eta_is_what_docs_compare_md_says(capsys):
    progress = Progress(total=10, already=0, quiet=False)
    progress.start -= 90.0  # started 90 s ago; 3 runs finish now
    for _ in range(3):
        progress.update("r", ok=True, wall=50.0)
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.endswith("[3/10] r done in 50.0 s; elapsed 90 s, ETA 210 s")
    doc = re.sub(r"\s+", " ", (REPO / "docs" / "compare.md").read_text())
    assert "ETA = elapsed ÷ runs finished in this invocation × runs left" in doc
    assert "90 s ÷ 3 × 7 = 210 s" in doc
