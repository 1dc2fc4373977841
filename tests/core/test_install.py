"""`agents/` and `envs/` install as `rlplast.agents` / `rlplast.envs`, editable or not."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROBE = "import rlplast.agents, rlplast.envs; print(rlplast.agents.__file__); print(rlplast.envs.__file__)"


def _run(code: str, cwd: Path, env: dict[str, str] | None = None) -> list[str]:
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, env=env, check=True
    )
    return proc.stdout.split()


def test_installed_package_imports_from_another_directory(tmp_path):
    """The development (editable) install used by the tests resolves the mapped subpackages."""
    agents, envs = _run(PROBE, tmp_path)
    assert Path(agents) == REPO / "agents" / "__init__.py"
    assert Path(envs) == REPO / "envs" / "__init__.py"


def test_regular_wheel_install_imports_from_another_directory(tmp_path):
    """A regular (non-editable) wheel carries rlplast/agents and rlplast/envs inside the package."""
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
            str(REPO),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("rlplast-*.whl")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    agents, envs = _run(PROBE, tmp_path, env)
    assert Path(agents) == site / "rlplast" / "agents" / "__init__.py"
    assert Path(envs) == site / "rlplast" / "envs" / "__init__.py"
    assert (site / "rlplast" / "py.typed").is_file()
