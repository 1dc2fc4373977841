"""Agents: PlasticDQN, a stable-baselines3 DQN with intervention seams.

* :mod:`rlplast.agents.dqn` — :class:`PlasticDQN`: SB3's ``train()`` with the two marked seams,
  the interventions' hooks, public accessors and ``learn`` with the ``on_iteration_end`` event;
* :mod:`rlplast.agents.speed` — the speed layer underneath (same results as SB3, less work);
* :mod:`rlplast.agents.layers` — the Q head's options (LayerNorm before each hidden activation,
  CReLU) and the policies that build them;
* :mod:`rlplast.agents.trac` — TRAC, the parameter-free scale tuner around Adam / AdamW;
* :mod:`rlplast.agents.minatar_cnn` — the small CNN for MinAtar's 10×10 grids.

This package is the only code that touches stable-baselines3 internals.
"""

from rlplast.agents.dqn import PlasticDQN

__all__ = ["PlasticDQN"]
