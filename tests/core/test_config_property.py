"""Property: any YAML document and any --set override gives a valid config or a one-line error."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import tempfile
from pathlib import Path
from unittest import mock

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlplast import cli
from rlplast.config import Config, load_config
from rlplast.errors import UserError

KEYS = [
    *(f.name for f in dataclasses.fields(Config)),
    "id",
    "kwargs",
    "import",
    "learning_rate",
    "total_steps",
    "seed",
    "device",
    "net_arch",
    "every_steps",
    "names",
    "dir",
    "name",
    "policy",
    "enabled",
    "n_min",
    "keep",
    "batch_size",
    "gamma",
    "x",
    "",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["1e-4", "cpu", "cuda", "auto", "CartPole-v1", "all", "relu", "-1", "nan", "inf"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=6)), inner, max_size=4),
    ),
    max_leaves=12,
)
documents = st.one_of(
    st.dictionaries(st.sampled_from(KEYS), values, max_size=5).map(lambda d: yaml.safe_dump(d)),
    values.map(lambda v: yaml.safe_dump(v)),
    st.text(max_size=60),  # arbitrary text, often not YAML at all
)
overrides = st.lists(
    st.one_of(
        st.builds(
            lambda path, v: f"{path}={v}",
            st.lists(st.sampled_from(KEYS), min_size=1, max_size=3).map(".".join),
            st.one_of(st.text(max_size=10), scalars.map(lambda s: yaml.safe_dump(s).split("\n")[0])),
        ),
        st.text(max_size=15),
    ),
    max_size=3,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=documents, sets=overrides)
def test_loader_gives_config_or_one_line_error(text, sets):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.yaml"
        path.write_text(text)
        try:
            cfg = load_config(path, sets)
        except UserError as exc:
            message = str(exc)
            assert message and "\n" not in message
        else:
            assert isinstance(cfg, Config)


@settings(max_examples=60, deadline=None)
@given(text=documents, sets=overrides)
def test_cli_exit_code_2_without_traceback(text, sets):
    """Through the CLI: exit code 2 and one line for bad input; valid configs reach training."""
    reached = []

    def fake_run(cfg, run_dir, overwrite=False, quiet=False):
        reached.append(cfg)
        return {"final_return": 0.0, "steps": 0, "wall_time_s": 1.0, "steps_per_s": 0.0}

    err = io.StringIO()
    with tempfile.TemporaryDirectory() as tmp, mock.patch("rlplast.train.run_training", fake_run):
        path = Path(tmp) / "c.yaml"
        path.write_text(text)
        argv = ["train", str(path), "--out", str(Path(tmp) / "out"), "--quiet"]
        for s in sets:
            argv += ["--set", s]
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = cli.main(argv)
    if reached:
        assert code == 0
    else:
        assert code == 2
        lines = err.getvalue().strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("rlplast: error:"), err.getvalue()
