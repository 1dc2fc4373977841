"""StackedReplayBuffer: every member's replay buffer in one set of arrays with a member axis.

Storage and semantics follow stable-baselines3's ``ReplayBuffer`` (``optimize_memory_usage=False``,
``handle_timeout_termination=True``): observations and next observations are both stored, in the
observations' own dtype (MinAtar's uint8 stays uint8); actions as int64; rewards, episode ends
(``dones``: terminated or truncated) and time-limit ends (``timeouts``: truncated and not
terminated) as float32. A sampled transition bootstraps unless it *terminated*:
``dones · (1 − timeouts)``. With ``n_steps > 1`` sampling computes SB3's ``NStepReplayBuffer``
returns (same masks, discounts and wrap-around, including its treatment of the newest transition
as an episode end).

All members advance in lock-step, so one write position serves them all; sampling takes
``(S, B)`` indices (one row per member, drawn from each member's own stream) and gathers with one
``index_select`` per field, on the device, without host synchronisation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from rlplast.errors import UserError

__all__ = [
    "ReplaySamples",
    "StackedReplayBuffer",
    "available_memory_bytes",
    "check_replay_fits",
    "replay_bytes",
]

#: Bytes per stored transition besides the observations: int64 action, float32 reward, done, timeout.
EXTRA_BYTES = 8 + 4 + 4 + 4


def replay_bytes(
    obs_shape: tuple[int, ...], obs_dtype: np.dtype | type, buffer_size: int, n_members: int
) -> int:
    """Bytes the replay buffers of ``n_members`` members take (observations stored twice, as SB3 does).

    Example:
        >>> replay_bytes((4,), np.float32, 100_000, 16)  # CartPole: 2*16 B obs + 20 B per transition
        83200000
    """
    per_obs = int(np.prod(obs_shape, dtype=np.int64)) * np.dtype(obs_dtype).itemsize
    return int(n_members) * int(buffer_size) * (2 * per_obs + EXTRA_BYTES)


def available_memory_bytes(device: torch.device | str) -> int | None:
    """Memory free for new allocations on ``device`` (None if unknown).

    CPU: ``MemAvailable`` from ``/proc/meminfo`` (else free pages from ``os.sysconf``); CUDA:
    ``torch.cuda.mem_get_info``.
    """
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def check_replay_fits(
    obs_shape: tuple[int, ...],
    obs_dtype: np.dtype | type,
    buffer_size: int,
    n_members: int,
    device: torch.device | str,
    available: int | None = None,
) -> int:
    """Raise a one-line :class:`UserError` when the replay buffers would not fit; return their bytes.

    Args:
        available: bytes available (default: :func:`available_memory_bytes` of ``device``).
    """
    need = replay_bytes(obs_shape, obs_dtype, buffer_size, n_members)
    if available is None:
        available = available_memory_bytes(device)
    if available is not None and need > available:
        per_obs = int(np.prod(obs_shape, dtype=np.int64)) * np.dtype(obs_dtype).itemsize
        raise UserError(
            f"population: the replay buffers of {n_members} member{'s' if n_members != 1 else ''} need {_gib(need)} "
            f"({n_members} x {buffer_size} transitions x (2 x {per_obs} B observations + {EXTRA_BYTES} B)), "
            f"more than the {_gib(available)} available on {torch.device(device)}; "
            "lower agent.buffer_size or the number of members"
        )
    return need


def _numpy_row_sum(x: Tensor) -> Tensor:
    """``x.sum(-1, keepdim=True)`` in the order NumPy's pairwise summation adds a short row
    (left to right below 8 terms; 8 running sums, then their pairwise sum and the rest, up to 128),
    so n-step returns equal SB3's bitwise; longer rows use torch's order."""
    n = x.shape[-1]
    if n < 8:
        out = x[..., :1]
        for k in range(1, n):
            out = out + x[..., k : k + 1]
        return out
    if n > 128:
        return x.sum(dim=-1, keepdim=True)
    full = n - n % 8
    r = x[..., :8]
    for i in range(8, full, 8):
        r = r + x[..., i : i + 8]
    out = ((r[..., 0:1] + r[..., 1:2]) + (r[..., 2:3] + r[..., 3:4])) + (
        (r[..., 4:5] + r[..., 5:6]) + (r[..., 6:7] + r[..., 7:8])
    )
    for k in range(full, n):
        out = out + x[..., k : k + 1]
    return out


@dataclass
class ReplaySamples:
    """A batch per member: every field has the member axis first, ``(S, B, ...)``.

    ``discounts`` is None for 1-step replay (the target uses ``gamma``), else ``(S, B, 1)`` as in
    SB3's n-step samples.
    """

    observations: Tensor
    actions: Tensor
    next_observations: Tensor
    dones: Tensor
    rewards: Tensor
    discounts: Tensor | None = None


class StackedReplayBuffer:
    """Replay buffers of ``n_members`` members, stored as arrays with the member axis first.

    Args:
        n_members: S.
        buffer_size: capacity per member (transitions).
        obs_shape: one observation's shape.
        obs_dtype: the observations' torch dtype (kept).
        device: where the arrays live.
        n_steps: n-step returns (1: plain transitions).
        gamma: discount of the n-step returns.
    """

    def __init__(
        self,
        n_members: int,
        buffer_size: int,
        obs_shape: tuple[int, ...],
        obs_dtype: torch.dtype,
        device: torch.device | str,
        n_steps: int = 1,
        gamma: float = 0.99,
    ) -> None:
        self.n_members = int(n_members)
        self.buffer_size = int(buffer_size)
        self.obs_shape = tuple(obs_shape)
        self.device = torch.device(device)
        self.n_steps = int(n_steps)
        self.gamma = float(gamma)
        s, n = self.n_members, self.buffer_size
        self.observations = torch.zeros((s, n, *self.obs_shape), dtype=obs_dtype, device=self.device)
        self.next_observations = torch.zeros_like(self.observations)
        self.actions = torch.zeros((s, n), dtype=torch.int64, device=self.device)
        #: rewards, dones, timeouts: one array so that a step writes them with one copy.
        self.flags = torch.zeros((3, s, n), dtype=torch.float32, device=self.device)
        self.rewards, self.dones, self.timeouts = self.flags.unbind(0)
        self.pos = 0
        self.full = False
        # Flat views for one-op gathers: row i*N + j is member i's transition j.
        self._obs_flat = self.observations.view(s * n, *self.obs_shape)
        self._next_flat = self.next_observations.view(s * n, *self.obs_shape)
        self._actions_flat = self.actions.view(s * n)
        self._flags_flat = self.flags.view(3, s * n)
        self._offsets = (torch.arange(s, device=self.device) * n).view(s, 1)
        self._steps = torch.arange(self.n_steps, device=self.device)
        # gamma ** k as SB3 computes it (NumPy's float32 power; torch's differs in the last bit).
        powers = self.gamma ** np.arange(self.n_steps + 1, dtype=np.float32)
        self._gamma_powers = torch.from_numpy(powers).to(self.device)
        self._discount_powers = self._gamma_powers[: self.n_steps]

    def size(self) -> int:
        """Transitions stored per member."""
        return self.buffer_size if self.full else self.pos

    def add(self, obs: Tensor, next_obs: Tensor, actions: Tensor, flags: Tensor) -> int:
        """Store one transition per member at the write position; return that position.

        Args:
            obs: ``(S, *obs_shape)``.
            next_obs: ``(S, *obs_shape)`` (the true last observation where an episode ended).
            actions: ``(S,)`` int64.
            flags: ``(3, S)`` float32: reward, done (terminated or truncated), timeout
                (truncated and not terminated).

        The inputs are copied (none may require grad).
        """
        pos = self.pos
        self.observations.select(1, pos).copy_(obs)
        self.next_observations.select(1, pos).copy_(next_obs)
        self.actions.select(1, pos).copy_(actions)
        self.flags.select(2, pos).copy_(flags)
        self.pos = pos + 1
        if self.pos == self.buffer_size:
            self.full = True
            self.pos = 0
        return pos

    def indices(self, raw: Tensor) -> Tensor:
        """Map raw non-negative random integers ``(S, B)`` to stored positions (uniform over the
        filled part, as SB3's ``randint(0, size)``)."""
        return raw % self.size()

    @torch.no_grad()
    def sample(self, idx: Tensor, member: int | None = None) -> ReplaySamples:
        """The transitions at positions ``idx`` ``(S, B)`` of each member (see :meth:`indices`).

        With ``member``, ``idx`` is ``(1, B)``: positions in that member's buffer only, and the
        samples have a member axis of 1 (what a member view's ``replay_sample`` reads).
        """
        offsets = self._offsets if member is None else self._offsets[member : member + 1]
        s, b = idx.shape
        flat = (idx + offsets).view(-1)
        obs = self._obs_flat.index_select(0, flat).view(s, b, *self.obs_shape)
        actions = self._actions_flat.index_select(0, flat).view(s, b, 1)
        if self.n_steps == 1:
            rewards, dones, timeouts = self._flags_flat.index_select(1, flat).view(3, s, b, 1).unbind(0)
            next_obs = self._next_flat.index_select(0, flat).view(s, b, *self.obs_shape)
            return ReplaySamples(obs, actions, next_obs, dones * (1 - timeouts), rewards)
        return self._sample_n_step(idx, offsets, obs, actions)

    def _sample_n_step(self, idx: Tensor, offsets: Tensor, obs: Tensor, actions: Tensor) -> ReplaySamples:
        """SB3 2.9's ``NStepReplayBuffer._get_samples`` on the rows of the members at ``offsets``."""
        s, b = idx.shape
        n, size = self.n_steps, self.buffer_size
        # SB3 temporarily marks the newest transition (pos - 1) as truncated unless it is done, so
        # that no n-step return runs across the write position; the same without the mutation.
        last_valid = (self.pos - 1) % size
        seq = (idx.unsqueeze(-1) + self._steps) % size  # (S, B, n)
        seq_flat = (seq + offsets.unsqueeze(-1)).view(-1)
        rewards_seq, dones_seq, timeouts_seq = self._flags_flat.index_select(1, seq_flat).view(3, s, b, n)
        done_b = dones_seq != 0
        truncated = (timeouts_seq != 0) | ((seq == last_valid) & ~done_b)
        done_or_truncated = done_b | truncated
        done_idx = done_or_truncated.to(torch.uint8).argmax(dim=2)  # first True, as NumPy's argmax
        done_idx = torch.where(done_or_truncated.any(dim=2), done_idx, n - 1)
        mask = self._steps <= done_idx.unsqueeze(-1)  # (S, B, n)
        target_q_discounts = self._gamma_powers[mask.sum(dim=2, keepdim=True)]
        discounted = rewards_seq * self._discount_powers * mask
        n_step_returns = _numpy_row_sum(discounted)
        last = (idx + done_idx) % size
        last_flat = (last + offsets).view(-1)
        next_obs = self._next_flat.index_select(0, last_flat).view(s, b, *self.obs_shape)
        next_dones, next_timeouts = self._flags_flat[1:].index_select(1, last_flat).view(2, s, b, 1).unbind(0)
        # The newest transition counts as a timeout here too (SB3 reads its modified timeouts).
        next_timeouts = torch.where(
            (last == last_valid).view(s, b, 1) & (next_dones == 0),
            torch.ones_like(next_timeouts),
            next_timeouts,
        )
        final_dones = next_dones * (1.0 - next_timeouts)
        return ReplaySamples(obs, actions, next_obs, final_dones, n_step_returns, target_q_discounts)

    def state_dict(self) -> dict[str, object]:
        """The stored arrays (on the CPU) and the write position."""
        return {
            "observations": self.observations.cpu(),
            "next_observations": self.next_observations.cpu(),
            "actions": self.actions.cpu(),
            "flags": self.flags.cpu(),
            "pos": self.pos,
            "full": self.full,
        }

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, object]) -> None:
        for name in ("observations", "next_observations", "actions", "flags"):
            getattr(self, name).copy_(state[name])  # type: ignore[arg-type]
        self.pos = int(state["pos"])  # type: ignore[call-overload]
        self.full = bool(state["full"])
