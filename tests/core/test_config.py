from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from rlplast.config import (
    Config,
    apply_overrides,
    config_from_dict,
    deep_merge,
    dump_config,
    first_difference,
    load_config,
    reference_markdown,
)
from rlplast.errors import UserError, closest
from rlplast.fields import InvalidValue, check_value

REPO = Path(__file__).resolve().parents[2]


def test_defaults_validate():
    cfg = config_from_dict({})
    assert isinstance(cfg, Config)
    assert cfg.agent.learning_rate == 1e-4


def test_unknown_key_names_key_and_nearest():
    with pytest.raises(UserError, match=r"unknown key 'agent.learning_rat'.*did you mean 'learning_rate'"):
        config_from_dict({"agent": {"learning_rat": 0.1}})
    with pytest.raises(UserError, match=r"unknown key 'trian'.*did you mean 'train'"):
        config_from_dict({"trian": {}})


@pytest.mark.parametrize(
    ("typed", "meant"),
    [("lr", "learning_rate"), ("mgn", "max_grad_norm"), ("sws", "stats_window_size"), ("gama", "gamma")],
)
def test_unknown_key_hint_covers_abbreviations(typed, meant):
    with pytest.raises(UserError, match=rf"unknown key 'agent.{typed}' \(did you mean '{meant}'\?\)"):
        load_config(None, [f"agent.{typed}=1"])


def test_no_hint_for_ambiguous_initials_or_prefix_or_a_single_letter():
    assert closest("bs", ["batch_size", "buffer_size"]) == ""
    assert closest("lea", ["learning_rate", "learning_starts"]) == ""
    assert closest("l", ["learning_rate"]) == ""
    assert closest("explo", ["exploration_fraction", "gamma"]) == " (did you mean 'exploration_fraction'?)"


@pytest.mark.parametrize("name", ["../../escape", "sub/run", "..", ".", "a\\b"])
def test_output_name_must_be_a_plain_name(name):
    with pytest.raises(UserError, match=r"output.name: must be a plain directory name"):
        config_from_dict({"output": {"name": name}})
    assert config_from_dict({"output": {"name": "my..run"}}).output.name == "my..run"


def test_first_difference_names_the_dotted_path():
    a = config_from_dict({"interventions": [{"name": "redo", "tau": 0.1}]}).to_dict()
    assert first_difference(a, a) is None
    b = config_from_dict({"interventions": [{"name": "redo", "tau": 0.2}]}).to_dict()
    assert first_difference(a, b) == ("interventions[0].tau", 0.1, 0.2)
    assert first_difference({"x": {"k": 1}}, {"x": {"k": 1.0}}) == ("x.k", 1, 1.0)
    assert first_difference({"x": {}}, {"x": {"k": True}}) == ("x.k", "(missing)", True)
    assert first_difference({"x": [1]}, {"x": [1, 2]}) == ("x", [1], [1, 2])
    assert first_difference({"x": float("nan")}, {"x": float("nan")}) is None


@pytest.mark.parametrize(
    ("data", "pattern"),
    [
        ({"train": {"total_steps": "many"}}, r"train.total_steps: expected an integer"),
        ({"train": {"total_steps": -5}}, r"train.total_steps: must be >= 1"),
        ({"agent": {"learning_rate": 0}}, r"agent.learning_rate: must be > 0"),
        ({"agent": {"gamma": 1.5}}, r"agent.gamma: must be <= 1"),
        ({"train": {"device": "tpu"}}, r"train.device: 'tpu' is not allowed; valid: auto, cpu, cuda"),
        ({"agent": {"net_arch": "64"}}, r"agent.net_arch: expected a list"),
        ({"agent": {"net_arch": [64, 0]}}, r"layer sizes must be positive"),
        ({"metrics": {"enabled": "yes please"}}, r"metrics.enabled: expected true or false"),
        ({"train": []}, r"train: expected a mapping"),
        ({"metrics": {"every_steps": 1500}, "train": {"log_every_steps": 1000}}, r"multiple of"),
        ({"interventions": ["reset"]}, r"interventions\[0\]: expected a mapping"),
    ],
)
def test_bad_values_name_field_and_allowed(data, pattern):
    with pytest.raises(UserError, match=pattern):
        config_from_dict(data)


def test_yaml_scientific_notation_strings_become_floats(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("agent:\n  learning_rate: 1e-4\n  buffer_size: 1e5\n")
    assert yaml.safe_load(p.read_text())["agent"]["learning_rate"] == "1e-4"  # the YAML pitfall
    cfg = load_config(p)
    assert cfg.agent.learning_rate == pytest.approx(1e-4)
    assert cfg.agent.buffer_size == 100000 and isinstance(cfg.agent.buffer_size, int)


def test_overrides_apply_and_are_checked(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  seed: 1\n")
    cfg = load_config(p, ["train.seed=7", "agent.net_arch=[8, 8]", "env.kwargs.steps_per_task=100"])
    assert cfg.train.seed == 7 and cfg.agent.net_arch == [8, 8]
    assert cfg.env.kwargs == {"steps_per_task": 100}
    with pytest.raises(UserError, match="unknown key 'train.sed'"):
        load_config(p, ["train.sed=3"])
    with pytest.raises(UserError, match="--set expects section.key=value"):
        load_config(p, ["train.seed"])
    with pytest.raises(UserError, match="'train.seed' is not a section"):
        apply_overrides({"train": {"seed": 1}}, ["train.seed.x=2"])


def test_env_import_key_round_trips():
    cfg = config_from_dict({"env": {"id": "x/Y-v0", "import": "mypkg.envs"}})
    assert cfg.env.import_module == "mypkg.envs"
    dumped = yaml.safe_load(dump_config(cfg))
    assert dumped["env"]["import"] == "mypkg.envs"
    assert config_from_dict(dumped) == cfg


def test_deep_merge_merges_mappings_and_replaces_lists():
    base = {"agent": {"net_arch": [64, 64], "gamma": 0.9}, "interventions": [{"name": "a"}]}
    out = deep_merge(base, {"agent": {"gamma": 0.5}, "interventions": [{"name": "b"}]})
    assert out == {"agent": {"net_arch": [64, 64], "gamma": 0.5}, "interventions": [{"name": "b"}]}
    assert base["agent"]["gamma"] == 0.9


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(UserError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("agent: [1, 2\n")
    with pytest.raises(UserError, match=r"invalid YAML in .*line"):
        load_config(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(UserError, match="top level must be a mapping"):
        load_config(scalar)


def test_reference_lists_every_field():
    text = reference_markdown()
    for key in (
        "env.import",
        "agent.learning_rate",
        "train.total_steps",
        "metrics.every_steps",
        "output.dir",
    ):
        assert f"`{key}`" in text


def _all_configs():
    return sorted(p for p in (REPO / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("path", _all_configs(), ids=lambda p: str(p.relative_to(REPO / "configs")))
def test_every_shipped_config_loads(path):
    """RL configs and method overlays load on top of the defaults; supervised ones with their loader."""
    if "supervised" in path.parts:
        from rlplast.supervised import load_supervised_config

        assert load_supervised_config(path, []).n_tasks >= 1
        return
    data = yaml.safe_load(path.read_text()) or {}
    cfg = config_from_dict(data)
    assert cfg.train.total_steps >= 1


def test_configuration_doc_is_current():
    """docs/configuration.md embeds `rlplast config-reference`; regenerate it when fields change."""
    doc = (REPO / "docs" / "configuration.md").read_text()
    assert reference_markdown() in doc


# ---------------------------------------------------------------------------------- plugins
PLUGIN = """
from dataclasses import dataclass

from rlplast.fields import config_field
from rlplast.interventions import Intervention, register
from rlplast.metrics.registry import METRICS


@register("cfgtest_noop")
@dataclass
class Noop(Intervention):
    level: int = config_field(1, "a level", min=1)


@METRICS.register("cfgtest_zero")
def zero(ctx):
    return {}
"""


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """A plugin module ``cfgtest_plugin`` on sys.path; its registrations are removed afterwards."""
    from rlplast.interventions import INTERVENTIONS
    from rlplast.metrics import METRICS

    (tmp_path / "cfgtest_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "cfgtest_plugin", raising=False)
    yield "cfgtest_plugin"
    sys.modules.pop("cfgtest_plugin", None)
    INTERVENTIONS.unregister("cfgtest_noop")
    METRICS.unregister("cfgtest_zero")


def test_plugins_are_imported_when_the_config_loads(plugin):
    data = {
        "plugins": [plugin],
        "interventions": [{"name": "cfgtest_noop", "level": "2"}],
        "metrics": {"names": ["cfgtest_zero", "collapse"]},
    }
    cfg = config_from_dict(data)
    assert cfg.plugins == [plugin] and plugin in sys.modules
    assert yaml.safe_load(dump_config(cfg))["plugins"] == [plugin]
    assert list(cfg.to_dict())[0] == "plugins"  # imported first, listed first


def test_a_module_named_in_env_import_registers_names_too(plugin):
    cfg = config_from_dict({"env": {"import": plugin}, "interventions": [{"name": "cfgtest_noop"}]})
    assert cfg.env.import_module == plugin


def test_names_a_plugin_would_register_are_unknown_without_it():
    with pytest.raises(UserError) as err:
        config_from_dict({"interventions": [{"name": "redo"}, {"name": "cfgtest_noop"}]})
    assert str(err.value).startswith("interventions[1]: unknown intervention 'cfgtest_noop'; valid: ")
    assert str(err.value).endswith(
        "; to use your own, list the module that registers it under plugins in the config"
    )
    with pytest.raises(UserError, match=r"^unknown metric 'cfgtest_zero'.*under plugins in the config$"):
        config_from_dict({"metrics": {"names": ["collapse", "cfgtest_zero"]}})
    # metric names are checked only when metrics run
    assert (
        config_from_dict({"metrics": {"enabled": False, "names": ["cfgtest_zero"]}}).metrics.enabled is False
    )


@pytest.mark.parametrize(
    ("plugins", "message"),
    [
        (
            ["no_such_plugin_xyz"],
            "cannot import plugin 'no_such_plugin_xyz': No module named 'no_such_plugin_xyz'",
        ),
        (["mylab envs"], "plugin 'mylab envs' is not a module name (expected e.g. mypkg.plugins)"),
        ("mylab", "plugins: expected a list of str, got 'mylab'"),
        ([3], "plugins[0]: expected a string, got 3"),
    ],
)
def test_bad_plugins_are_one_line_errors(plugins, message):
    with pytest.raises(UserError) as err:
        config_from_dict({"plugins": plugins})
    assert str(err.value) == message


def test_a_plugin_that_raises_names_the_exception_and_where(tmp_path, monkeypatch):
    (tmp_path / "cfgtest_broken.py").write_text("import math\n\nmath.sqrt(-1)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UserError) as err:
        config_from_dict({"plugins": ["cfgtest_broken"]})
    assert str(err.value) == (
        f"cannot import plugin 'cfgtest_broken': ValueError: math domain error ({tmp_path / 'cfgtest_broken.py'}:3)"
    )


def test_an_env_import_that_fails_is_left_to_the_env(tmp_path, monkeypatch):
    """env.import keeps its old behaviour: its errors appear when the env is made, not when loading."""
    assert config_from_dict({"env": {"import": "no_such_env_module_xyz"}}).env.import_module
    (tmp_path / "cfgtest_crash.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert config_from_dict({"env": {"import": "cfgtest_crash"}}).env.import_module == "cfgtest_crash"


# ---------------------------------------------------------------------------------- interventions at load
@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"name": "redoo"}, "interventions[0]: unknown intervention 'redoo' (did you mean 'redo'?)"),
        ({"name": "redo", "taus": 1}, "interventions[0]: unknown parameter 'taus' for intervention 'redo'"),
        ({"name": "redo", "tau": -1}, "interventions[0]: intervention 'redo': tau must be >= 0"),
        (
            {"name": "redo", "tau": "x"},
            "interventions[0]: intervention 'redo': parameter 'tau' must be a number",
        ),
        ({"name": "l2_init", "coef": float("inf")}, "parameter 'coef' must be a finite number, got inf"),
    ],
)
def test_intervention_specs_are_checked_when_the_config_loads(spec, message):
    with pytest.raises(UserError) as err:
        config_from_dict({"interventions": [spec]})
    assert message in str(err.value)


def test_intervention_specs_are_stored_as_written():
    cfg = config_from_dict({"interventions": [{"name": "reset_last_layers", "every_steps": "2e4"}]})
    assert cfg.interventions == [{"name": "reset_last_layers", "every_steps": "2e4"}]


# ---------------------------------------------------------------------------------- the checker
@pytest.mark.parametrize(
    ("tp", "value", "meta", "expected"),
    [
        (int, "1e5", None, 100_000),
        (int, 3.0, {"min": 1}, 3),
        (float, 2, {"max": 2}, 2.0),
        (float, "1e-4", None, 1e-4),
        (int | None, None, None, None),
        (list[int], [1, 2.0], None, [1, 2]),
        (str, "b", {"choices": ["a", "b"]}, "b"),
    ],
)
def test_check_value_coerces_what_fits(tp, value, meta, expected):
    assert check_value(tp, value, meta) == expected


@pytest.mark.parametrize(
    ("tp", "value", "meta", "kind", "message"),
    [
        (int, 1.5, None, "type", "x: expected an integer, got 1.5"),
        (float, "nan", None, "finite", "x: expected a finite number, got 'nan'"),
        (float, 0.0, {"min": 0.0, "exclusive_min": True}, "range", "x: must be > 0.0, got 0.0"),
        (int, 5, {"max": 4}, "range", "x: must be <= 4, got 5"),
        (str | None, "c", {"choices": ["a", None]}, "choice", "x: 'c' is not allowed; valid: a, null"),
        (list[int], [1, "a"], None, "type", "x[1]: expected an integer, got 'a'"),
        (int | None, "a", None, "type", "x: expected int | None, got 'a'"),
    ],
)
def test_check_value_describes_what_does_not(tp, value, meta, kind, message):
    with pytest.raises(InvalidValue) as err:
        check_value(tp, value, meta)
    assert err.value.kind == kind and err.value.for_path("x") == message


def test_check_value_refuses_an_annotation_it_does_not_know():
    with pytest.raises(TypeError, match="unsupported annotation"):
        check_value(tuple[int, int], (1, 2))
