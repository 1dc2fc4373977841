"""C-CHAIN: continual churn approximated reduction (Tang, Obando-Ceron, Castro, Courville, Berseth, ICML 2025)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor
from torch.func import functional_call
from torch.nn import functional as F

from rlplast.errors import UserError
from rlplast.fields import config_field
from rlplast.interventions.base import Intervention, register

if TYPE_CHECKING:
    from stable_baselines3.common.type_aliases import ReplayBufferSamples

    from rlplast.agents.dqn import PlasticDQN


class _RunningMean:
    """The mean of the last ``window`` recorded 0-dim values, kept on the device (float64).

    A ring of the values and their running sum (``sum += new − oldest``), so recording and
    reading cost a few device operations and no host synchronisation.
    """

    def __init__(self, window: int, device: torch.device | str | None) -> None:
        self.ring = torch.zeros(window, dtype=torch.float64, device=device)
        self.sum = torch.zeros((), dtype=torch.float64, device=device)
        self.count = 0  # values recorded so far (the mean covers the last min(count, window))

    def record(self, value: Tensor) -> None:
        pos = self.count % self.ring.numel()
        value = value.detach().to(torch.float64)
        self.sum += value - self.ring[pos]
        self.ring[pos] = value
        self.count += 1

    def mean(self) -> Tensor:
        return self.sum / min(self.count, self.ring.numel())

    def state_dict(self) -> dict[str, Any]:
        return {"ring": self.ring.clone(), "sum": self.sum.clone(), "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["ring"].shape != self.ring.shape:
            raise ValueError(f"running mean of {state['ring'].numel()} values, expected {self.ring.numel()}")
        self.ring = state["ring"].detach().clone().to(self.ring.device)
        self.sum = state["sum"].detach().clone().to(self.ring.device)
        self.count = int(state["count"])


@register("cchain")
@dataclass
class CChain(Intervention):
    """Churn reduction: keep the Q-values of a second replay batch close to the previous network's.

    Every update adds ``λ · L_churn`` to the TD loss, with

        ``L_churn = mean_{s ∈ B_ref, a} (Q_θ(s, a) − Q_θ_prev(s, a))²``

    where ``B_ref`` is a fresh *reference batch* of replay states (``batch_size`` of them, the
    training batch's size by default) and ``θ_prev`` is the online network before the *previous*
    update — what the C-CHAIN code's ``reg_his_idx = 2`` selects: the term penalises the churn the
    last update caused on states outside its batch (against a detached copy of the current network
    the term's gradient would be zero). The first update has no ``θ_prev`` and no term.

    **The coefficient** (``auto: true``, the paper's automatic one): ``λ = coef`` for the first
    ``warmup_updates`` updates, then after every update

        ``λ = target_ratio · mean|L_TD| / (mean L_churn + 1e-8)``

    with running means over the last ``window`` updates (both recorded from the first update
    on; ``L_churn`` from the second), used from the next update — the C-CHAIN DQN code's rule
    (``target_rel_loss_scale`` = 0.01, ``reg_coef`` 50 before 10 000 updates, windows of 50 000),
    so the churn term stays about ``target_ratio`` times the TD loss. Difference: ``L_TD`` is this
    agent's TD loss, SB3's Huber loss (C-CHAIN's DQN uses the squared error); it is recomputed in
    :meth:`loss` with the agent's ``td_target`` (one more target-network pass per update).
    ``auto: false`` fixes ``λ = coef`` (CHAIN's non-automatic variant) and skips that pass.

    **Random numbers**: the reference states are drawn uniformly (with replacement) with the
    intervention's own ``numpy`` generator (seeded by ``seed``) through the agent's
    ``replay_size()`` / ``replay_states(normalize=True)``, so the global NumPy generator — and
    with it the training batches — is untouched: a run with ``cchain`` differs from one without
    it only through the added term. A population member samples its own replay the same way;
    with ``auto: true`` the instance needs the agent's ``td_target`` (:attr:`model_needs`), which
    population member views offer, so both forms run per member.
    Cost per update: one replay gather and two forward passes on ``B_ref`` (one without
    gradient), and the backward pass through one of them.

    Logs ``train/cchain_churn`` (mean ``L_churn`` since the last log) and ``train/cchain_coef``
    (``λ`` of the latest update).

    Example:
        >>> from rlplast.interventions import build_intervention
        >>> cchain = build_intervention({"name": "cchain", "target_ratio": 0.01})
    """

    coef: float = config_field(
        50.0, "λ: the fixed weight of the churn term, or with auto the λ of the warm-up", min=0.0
    )
    auto: bool = config_field(True, "the paper's automatic λ after warmup_updates (see target_ratio)")
    target_ratio: float = config_field(
        0.01,
        "β: the automatic λ keeps the churn term at β × the TD loss (running means)",
        min=0.0,
        exclusive_min=True,
    )
    warmup_updates: int = config_field(10_000, "updates before the automatic λ takes over", min=0)
    window: int = config_field(50_000, "updates in the running means of |L_TD| and L_churn", min=1)
    batch_size: int | None = config_field(
        None, "reference states per update; null: the training batch size", min=1
    )
    seed: int = config_field(0, "seed of the generator that draws the reference states", min=0)

    def __post_init__(self) -> None:
        if self.coef < 0.0:
            raise UserError(f"intervention '{self.name}': coef must be >= 0, got {self.coef}")
        if not self.target_ratio > 0.0:
            raise UserError(f"intervention '{self.name}': target_ratio must be > 0, got {self.target_ratio}")
        if self.warmup_updates < 0:
            raise UserError(
                f"intervention '{self.name}': warmup_updates must be >= 0, got {self.warmup_updates}"
            )
        if self.window < 1:
            raise UserError(f"intervention '{self.name}': window must be >= 1, got {self.window}")
        if self.batch_size is not None and self.batch_size < 1:
            raise UserError(f"intervention '{self.name}': batch_size must be >= 1, got {self.batch_size}")
        if self.seed < 0:
            raise UserError(f"intervention '{self.name}': seed must be >= 0, got {self.seed}")
        self.rng = np.random.default_rng(self.seed)
        self.updates = 0
        self._prev: list[Tensor] | None = None
        self._coef: Tensor | float = self.coef
        self._churn_sum: Tensor | float = 0.0
        self._churn_count = 0

    @property
    def model_needs(self) -> tuple[str, ...]:
        """Agent methods this instance needs beyond the helpers (a population checks them up front)."""
        return ("td_target",) if self.auto else ()

    def setup(self, model: PlasticDQN) -> None:
        super().setup(model)
        if self.auto and not callable(getattr(model, "td_target", None)):
            raise UserError(
                f"intervention '{self.name}': the automatic coefficient (auto: true) needs the agent's TD "
                f"targets (td_target), which {type(model).__name__} does not offer; set auto: false for a "
                "fixed coef"
            )
        self._names = [name for name, _ in self.online_net.named_parameters()]
        device = next(self.online_net.parameters()).device
        self._td = _RunningMean(self.window, device)
        self._churn = _RunningMean(self.window, device)

    # ------------------------------------------------------------------ the term
    def reference_states(self, n: int) -> Any:
        """``n`` replay observations drawn with :attr:`rng` (as the network sees them in training);
        None when the replay buffer is empty."""
        model = self.model
        upper = model.replay_size()
        if upper == 0:
            return None
        idx = self.rng.integers(0, upper, size=n)
        env_idx = self.rng.integers(0, model.n_envs, size=n)
        obs, _ = model.replay_states(idx, env_idx, normalize=True)
        return obs

    def coefficient(self) -> Tensor | float:
        """``λ`` for the update under way (a device tensor once the automatic one is on)."""
        if self.auto and self.updates >= self.warmup_updates and self._td.count and self._churn.count:
            return self.target_ratio * self._td.mean() / (self._churn.mean() + 1e-8)
        return self.coef

    def loss(self, batch: ReplayBufferSamples, features: Tensor, q_values: Tensor) -> Tensor | None:
        params = self.parameters_for_loss()
        if self.auto:  # |L_TD| of this update, for the automatic coefficient
            with torch.no_grad():
                taken = torch.gather(q_values, 1, batch.actions.long())
                self._td.record(F.smooth_l1_loss(taken, self.model.td_target(batch)))
        term: Tensor | None = None
        obs = None if self._prev is None else self.reference_states(self.batch_size or q_values.shape[0])
        if obs is not None:
            assert self._prev is not None
            coef = self.coefficient()
            with torch.no_grad():
                q_prev = functional_call(
                    self.online_net, dict(zip(self._names, self._prev, strict=True)), (obs,)
                )
            q_now = functional_call(self.online_net, dict(zip(self._names, params, strict=True)), (obs,))
            churn = F.mse_loss(q_now, q_prev)
            term = coef * churn
            self._churn.record(churn)
            self._churn_sum = self._churn_sum + churn.detach()
            self._churn_count += 1
            self._coef = coef.detach() if isinstance(coef, Tensor) else coef
        with torch.no_grad():
            now = [p.detach() for p in params]
            if self._prev is None:
                self._prev = [p.clone() for p in now]
            else:
                torch._foreach_copy_(self._prev, now)
        self.updates += 1
        return term

    # ------------------------------------------------------------------ logging and state
    def log_values(self) -> dict[str, float]:
        values = {"train/cchain_coef": float(self._coef)}
        if self._churn_count:
            values["train/cchain_churn"] = float(self._churn_sum) / self._churn_count
            self._churn_sum, self._churn_count = 0.0, 0
        return values

    def state_dict(self) -> dict[str, Any]:
        return {
            "rng": self.rng.bit_generator.state,
            "updates": self.updates,
            "prev": None if self._prev is None else [t.clone() for t in self._prev],
            "coef": float(self._coef),
            "td": self._td.state_dict() if "_td" in self.__dict__ else None,
            "churn": self._churn.state_dict() if "_churn" in self.__dict__ else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.updates = int(state["updates"])
        prev = state["prev"]
        device = next(self.online_net.parameters()).device if "model" in self.__dict__ else None
        self._prev = None if prev is None else [t.detach().clone().to(device) for t in prev]
        self._coef = float(state["coef"])
        for key in ("td", "churn"):
            running = self.__dict__.get(f"_{key}")
            if running is not None and state[key] is not None:
                running.load_state_dict(state[key])
