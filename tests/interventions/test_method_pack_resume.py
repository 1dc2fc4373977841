"""The method pack resumes exactly: an agent pickled with its interventions (as a checkpoint does)
continues bit for bit like the uninterrupted agent."""

from __future__ import annotations

from typing import Any

import cloudpickle
import pytest
import torch

from rlplast.checkpoint import rng_state, set_rng_state
from rlplast.interventions import build_intervention

#: Parameters that make each intervention act before and after the checkpoint.
SPECS: dict[str, dict[str, Any]] = {
    "plasticity_injection": {"every_steps": 150, "when": "both"},
    "weight_clipping": {"kappa": 0.5},
    "hare_tortoise": {"every_steps": 150, "when": "both", "alpha": 0.05},
    "continual_backprop": {"replacement_rate": 0.02, "maturity_threshold": 10},
    "cchain": {"warmup_updates": 20, "window": 40},
}


def _continue(model) -> None:
    model.learn(200, reset_num_timesteps=False)
    model.notify_task_switch(1)
    model.learn(200, reset_num_timesteps=False)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_a_pickled_agent_continues_bitwise(make_dqn, name):
    model = make_dqn([build_intervention({"name": name, **SPECS[name]})])
    model.learn(300)
    blob = cloudpickle.dumps((model, rng_state()))
    _continue(model)
    restored, rng = cloudpickle.loads(blob)
    set_rng_state(rng)
    _continue(restored)

    for (n, a), (_, b) in zip(model.q_net.named_parameters(), restored.q_net.named_parameters(), strict=True):
        assert torch.equal(a, b), n
    for (n, a), (_, b) in zip(model.q_net.named_buffers(), restored.q_net.named_buffers(), strict=True):
        assert torch.equal(a, b), n
    assert model.pop_train_stats() == restored.pop_train_stats()
    (ours,), (theirs,) = model.interventions, restored.interventions
    assert ours.state_dict().keys() == theirs.state_dict().keys()
