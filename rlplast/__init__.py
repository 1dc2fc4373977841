"""rlplast: a reinforcement-learning plasticity testbed.

DQN agents (built on stable-baselines3) train on shifting environments with interventions
(last-layer reset, a neural-collapse regularizer, standard baselines) while a metric module
tracks neural collapse and plasticity on the agent's device.
"""

from __future__ import annotations

import os as _os

__version__ = "0.1.0"

# `agents/` and `envs/` install as `rlplast.agents` / `rlplast.envs` (see pyproject's package-dir).
# When the source tree's `rlplast/` is imported directly (repo root first on sys.path with a
# non-editable install), extend the package path so the mapped subpackages are still found.
_root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
for _sub in ("agents", "envs"):
    if _os.path.isfile(_os.path.join(_root, _sub, "__init__.py")) and _root not in __path__:
        __path__.append(_root)
        break
