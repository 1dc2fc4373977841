"""The supervised continual track: data, SGD paths, metrics, options, CLI and report files."""

from __future__ import annotations

import copy
import csv
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from rlplast.cli import main
from rlplast.errors import UserError
from rlplast.interventions.nc_regularizer import NCRegularizer
from rlplast.metrics.collapse import collapse_metrics, nc1
from rlplast.supervised import (
    build_mlp,
    load_digits_data,
    load_supervised_config,
    run_continual,
    sgd_minibatch,
    sgd_online_single,
    shrink_perturb,
    task_permutation,
)
from rlplast.supervised.data import _TAG_INIT, epoch_order, torch_seed_for
from rlplast.supervised.report import OUTPUT_FILES
from rlplast.supervised.track import NC_KEYS

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs" / "supervised"
TINY = ["n_tasks=3", "n_samples=240", "metrics.n_min=5"]


def _tiny(*extra: str) -> list[str]:
    return [*TINY, *extra]


# ------------------------------------------------------------------------------------ data
def test_permutation_is_a_pure_function_of_seed_and_task() -> None:
    assert torch.equal(task_permutation(3, 0), torch.arange(64))
    p = task_permutation(3, 5)
    assert torch.equal(p, task_permutation(3, 5))
    assert torch.equal(torch.sort(p).values, torch.arange(64))
    assert not torch.equal(p, task_permutation(3, 6))
    assert not torch.equal(p, task_permutation(4, 5))
    # Calling other streams in between changes nothing (no hidden global state).
    torch.manual_seed(123)
    epoch_order(3, 100, 5, 0)
    assert torch.equal(task_permutation(3, 5), p)


def test_digits_are_scaled_to_unit_interval() -> None:
    data = load_digits_data()
    assert data.x.shape == (1797, 64) and data.x.dtype == torch.float32
    assert float(data.x.min()) == 0.0 and float(data.x.max()) == 1.0
    assert sorted(set(data.y.tolist())) == list(range(10))


# ------------------------------------------------------------------------------------ SGD
def _reference_online(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, lr: float) -> int:
    """Slow autograd reference: predict, then one SGD step, sample by sample."""
    params = list(net.parameters())
    correct = 0
    for i in range(x.shape[0]):
        for p in params:
            p.requires_grad_(True)
        logits = net(x[i : i + 1])
        correct += int(logits.argmax(1).item() == y[i].item())
        grads = torch.autograd.grad(F.cross_entropy(logits, y[i : i + 1]), params)
        with torch.no_grad():
            for p, g in zip(params, grads, strict=True):
                p.sub_(g, alpha=lr)
    return correct


def test_fast_single_sample_sgd_matches_autograd_reference() -> None:
    data = load_digits_data(120)
    net = build_mlp([64, 100, 100, 100, 10], 0)
    ref, mini = copy.deepcopy(net), copy.deepcopy(net)
    fast_correct = sgd_online_single(net, data.x, data.y, 0.05)
    ref_correct = _reference_online(ref, data.x, data.y, 0.05)
    mini_correct, nc1s = sgd_minibatch(mini, data.x, data.y, 0.05, 1, None)
    assert fast_correct == ref_correct == mini_correct
    assert nc1s == []
    for a, b, c in zip(net.parameters(), ref.parameters(), mini.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(a, c, atol=1e-5, rtol=1e-4)


def test_online_accuracy_is_taken_before_the_update() -> None:
    # The same sample twice: the untrained net gets it wrong, one huge step makes it right.
    net = build_mlp([4, 8, 3], 1)
    x = torch.tensor([[1.0, 0.5, 0.25, 0.75]])
    with torch.no_grad():
        wrong = int(net(x).argmin())
    assert int(net(x).argmax()) != wrong
    xs, ys = x.repeat(2, 1), torch.tensor([wrong, wrong])
    assert sgd_online_single(net, xs, ys, 50.0) == 1  # first prediction wrong, second right
    with torch.no_grad():
        assert int(net(x).argmax()) == wrong
    # With lr 0 online accuracy is the plain accuracy of the fixed network.
    net0 = build_mlp([4, 8, 3], 1)
    assert sgd_online_single(net0, xs, ys, 0.0) == 0


# ------------------------------------------------------------------------------------ metrics
@pytest.mark.parametrize("global_mean", ["classes", "samples"])
def test_task_nc_metrics_equal_collapse_metrics_on_the_same_features(global_mean: str) -> None:
    cfg = load_supervised_config(
        None,
        ["n_tasks=1", "n_samples=300", "metrics.n_min=5", "seed=2", f"metrics.nc_global_mean={global_mean}"],
    )
    (row,) = run_continual(cfg, progress=None)
    assert set(NC_KEYS) <= set(row) and "nc3_etf_error" in NC_KEYS
    data = load_digits_data(300)
    net = build_mlp([64, 100, 100, 100, 10], torch_seed_for(2, _TAG_INIT))
    order = epoch_order(2, 300, 0, 0)
    correct = sgd_online_single(net, data.x[order], data.y[order], cfg.lr)
    assert row["online_acc"] == pytest.approx(correct / 300)
    with torch.no_grad():
        acts, _ = net.forward_all(data.x)
        direct = collapse_metrics(acts[-1], data.y, net.head.weight, net.head.bias, 10, 5, global_mean)
    for key in NC_KEYS:
        assert row[key] == pytest.approx(float(direct[key]), rel=1e-9, abs=1e-12), key
    assert 0.0 <= row["dormant_fraction"] <= 1.0 and row["srank"] >= 1


# ------------------------------------------------------------------------------------ options
def test_regularizer_gradient_raises_batch_nc1() -> None:
    data = load_digits_data(64)
    net = build_mlp([64, 32, 32, 10], 0)
    params = [p for layer in net.layers[:-1] for p in layer.parameters()]  # the term ignores the head
    reg = NCRegularizer(coef=1.0, cap=200.0, variant="pinv", n_min=2)
    with torch.no_grad():
        before = float(nc1(net.forward_all(data.x)[0][-1], data.y, 10, 2))
    for p in params:
        p.requires_grad_(True)
    term = reg.term(net.forward_all(data.x)[0][-1], data.y, 10)
    grads = torch.autograd.grad(term, params)
    with torch.no_grad():
        for p, g in zip(params, grads, strict=True):
            p.sub_(g, alpha=1e-3)
        after = float(nc1(net.forward_all(data.x)[0][-1], data.y, 10, 2))
    assert after > before


def test_regularizer_changes_training_and_raises_nc1() -> None:
    base = ["n_tasks=2", "n_samples=400", "metrics.n_min=5", "batch_size=16", "lr=0.1", "epochs_per_task=3"]
    off = run_continual(load_supervised_config(None, base), progress=None)
    on = run_continual(load_supervised_config(None, [*base, "regularizer.coef=0.05"]), progress=None)
    assert all(r["nc1_batch"] != r["nc1_batch"] for r in off)  # NaN without the regularizer
    assert all(r["nc1_batch"] > 0 for r in on)
    assert on[-1]["online_acc"] != off[-1]["online_acc"]
    assert sum(r["nc1"] for r in on) > sum(r["nc1"] for r in off)


def test_shrink_perturb_formula() -> None:
    sizes = [64, 20, 10]
    net = build_mlp(sizes, 0)
    old = [p.clone() for p in net.parameters()]
    shrink_perturb(net, 0.6, 0.01, seed=7)
    fresh = build_mlp(sizes, 7)  # the same reset_parameters draws from the same seed
    for p, p0, pf in zip(net.parameters(), old, fresh.parameters(), strict=True):
        torch.testing.assert_close(p, 0.6 * p0 + 0.01 * pf)
    same = build_mlp(sizes, 0)
    shrink_perturb(same, 1.0, 0.0, seed=7)
    for p, p0 in zip(same.parameters(), build_mlp(sizes, 0).parameters(), strict=True):
        assert torch.equal(p, p0)


def test_shrink_perturb_fires_at_task_switches_only() -> None:
    rows = run_continual(
        load_supervised_config(None, [*TINY, "shrink_perturb.shrink=0.6", "shrink_perturb.perturb=0.01"]),
        progress=None,
    )
    assert [r["shrink_perturbed"] for r in rows] == [0, 1, 1]


# ------------------------------------------------------------------------------------ config + CLI
@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_supervised_config_loads(path: Path) -> None:
    cfg = load_supervised_config(path)
    assert cfg.n_tasks >= 100 or cfg.mode == "warm_start"


def test_overlay_configs_extend_the_base() -> None:
    reg = load_supervised_config(CONFIGS / "continual_digits_ncreg.yaml")
    assert reg.regularizer.coef == 0.05 and reg.batch_size >= 2 and reg.n_tasks == 100
    sp = load_supervised_config(CONFIGS / "continual_digits_shrink_perturb.yaml")
    assert (sp.shrink_perturb.shrink, sp.shrink_perturb.perturb, sp.batch_size) == (0.6, 0.01, 1)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("n_taks=3", "unknown key 'n_taks'"),
        ("lr=fast", "lr: expected a number"),
        ("regularizer.coef=0.05", "needs batch_size >= 2"),
        ("regularizer.variant=svd", "not allowed"),
        ("batch_size=0", "must be >= 1"),
        ("mode=warm_start", "test_fraction > 0"),
        ("n_samples=5000", "n_samples: must be between 10 and 1797"),
        ("n_samples=1798", "n_samples: must be between 10 and 1797"),
        ("bad", "--set expects key=value, e.g. n_tasks=20"),
        ("=3", "--set expects key=value"),
    ],
)
def test_bad_config_exits_2_with_one_line(override: str, message: str, capsys, tmp_path: Path) -> None:
    code = main(
        [
            "supervised",
            str(CONFIGS / "continual_digits.yaml"),
            "--set",
            override,
            "--out",
            str(tmp_path / "o"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("rlplast: error:") and message in err
    assert not (tmp_path / "o").exists()


def test_set_format_error_does_not_ask_for_sections(capsys, tmp_path: Path) -> None:
    code = main(
        ["supervised", str(CONFIGS / "continual_digits.yaml"), "--set", "n_tasks", "--out", str(tmp_path)]
    )
    assert code == 2 and "section" not in capsys.readouterr().err


def test_all_digits_is_the_most_n_samples_can_be() -> None:
    assert load_supervised_config(None, ["n_samples=1797"]).n_samples == 1797


@pytest.mark.parametrize("where", ["/proc/x/y", "afile", "afile/sub"])
def test_out_that_cannot_be_created_exits_2(where: str, capsys, tmp_path: Path) -> None:
    if where.startswith("/proc") and not Path("/proc/self").is_dir():
        pytest.skip("needs /proc")
    afile = tmp_path / "afile"
    afile.write_text("keep me\n")
    out = where if where.startswith("/") else str(tmp_path / where)
    argv = ["supervised", str(CONFIGS / "continual_digits.yaml"), "--out", out, "--quiet"]
    assert main([*argv, *(x for s in TINY for x in ("--set", s))]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"rlplast: error: cannot create report directory {out}: "), err
    assert afile.read_text() == "keep me\n"


def test_load_errors_are_user_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("extends: missing.yaml\n")
    with pytest.raises(UserError, match="config file not found"):
        load_supervised_config(bad)


def test_tiny_run_writes_every_report_file_and_is_deterministic(tmp_path: Path, capsys) -> None:
    args = ["supervised", str(CONFIGS / "continual_digits.yaml"), "--seeds", "2", "--quiet"]
    for o in ("a", "b"):
        assert main([*args, "--out", str(tmp_path / o), *(x for s in TINY for x in ("--set", s))]) == 0
    expected = {"config.yaml", "run.json", "tasks.csv", "summary.csv", "correlations.csv", "report.md"}
    expected |= {"accuracy_nc1.png", "acc_vs_nc1.png", "metrics.png"}
    assert expected <= {p.name for p in (tmp_path / "a").iterdir()}
    assert expected <= set(OUTPUT_FILES)
    assert (tmp_path / "a" / "tasks.csv").read_bytes() == (tmp_path / "b" / "tasks.csv").read_bytes()
    rows = list(csv.DictReader((tmp_path / "a" / "tasks.csv").open()))
    assert len(rows) == 6 and {r["seed"] for r in rows} == {"0", "1"}
    assert "Accuracy vs NC1" in (tmp_path / "a" / "report.md").read_text()
    # An existing directory is kept unless --overwrite.
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "a"), *(x for s in TINY for x in ("--set", s))]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (
        main([*args, "--out", str(tmp_path / "a"), "--overwrite", *(x for s in TINY for x in ("--set", s))])
        == 0
    )


def test_tiny_warm_start_writes_its_report(tmp_path: Path) -> None:
    sets = ["n_samples=300", "metrics.n_min=5", "warm_start.warmup_epochs=4", "warm_start.checkpoint_every=2"]
    sets += ["warm_start.finetune_epochs=1", "warm_start.early_epochs=2"]
    out = tmp_path / "w"
    argv = [
        "supervised",
        str(CONFIGS / "warm_start_digits.yaml"),
        "--out",
        str(out),
        "--seeds",
        "2",
        "--quiet",
    ]
    assert main(argv + [x for s in sets for x in ("--set", s)]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"checkpoints.csv", "summary.csv", "correlations.csv", "report.md"} <= names
    assert {"final_acc_vs_epoch.png", "final_acc_vs_nc1.png"} <= names
    rows = list(csv.DictReader((out / "checkpoints.csv").open()))
    assert [r["epoch"] for r in rows] == ["0", "2", "4"] * 2
    assert all(0.0 <= float(r["final_test_acc"]) <= 1.0 for r in rows)


def test_every_config_key_is_in_the_reference_table_of_the_docs() -> None:
    import dataclasses
    import typing

    from rlplast.supervised.config import SupervisedConfig

    doc = (REPO / "docs" / "supervised.md").read_text()

    def keys(cls: type, prefix: str) -> list[str]:
        out = []
        for f in dataclasses.fields(cls):
            tp = typing.get_type_hints(cls)[f.name]
            out += keys(tp, f"{prefix}{f.name}.") if dataclasses.is_dataclass(tp) else [prefix + f.name]
        return out

    missing = [k for k in keys(SupervisedConfig, "") if f"| `{k}` |" not in doc]
    assert not missing, f"add rows for {missing} to the config reference of docs/supervised.md"
