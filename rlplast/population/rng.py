"""Per-member random streams, drawn on the host in blocks and read on the device column by column.

Every member owns one NumPy ``Generator`` per purpose (exploration, replay sampling), seeded from
the member's seed and the purpose alone (``SeedSequence(seed, spawn_key=(purpose,))``). A member's
draws therefore depend on nothing but its seed: member 1 of a population with seeds ``[0, 1, 2]``
draws exactly what member 0 of a population with seeds ``[1]`` draws.

Draws are made ``block`` steps at a time, one generator call per member (a short loop every
``block`` steps, never per step), and moved to the device in one transfer; each step then reads
one column of the block, a view, without touching the host.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["EXPLORATION", "INTERVENTIONS", "REPLAY", "BlockStream", "member_generator"]

#: Purpose keys of the members' generators (part of their seeds: never renumber).
EXPLORATION = 1
REPLAY = 2
#: The seed of a member's intervention generator (rlplast.population.interventions.MemberStream).
INTERVENTIONS = 3

#: Upper bound (exclusive) of the raw integers the replay stream draws; indices are taken modulo
#: the filled size of the buffer, a bias below 1e-11 for any realistic buffer.
RAW_HIGH = 2**62


def member_generator(seed: int, purpose: int) -> np.random.Generator:
    """The generator of one member for one purpose (depends only on ``seed`` and ``purpose``)."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(int(seed), spawn_key=(purpose,))))


class BlockStream:
    """Blocks of per-member draws on the device, consumed one column per call of :meth:`take`.

    Args:
        seeds: one seed per member.
        purpose: :data:`EXPLORATION` or :data:`REPLAY` (selects independent generators).
        draw: ``draw(generator, block)`` → a tuple of arrays whose first axis has length
            ``block`` (one entry per step); called once per member per block.
        block: steps per block.
        device: where the blocks live.
    """

    def __init__(
        self,
        seeds: Sequence[int],
        purpose: int,
        draw: Callable[[np.random.Generator, int], tuple[np.ndarray, ...]],
        block: int,
        device: torch.device | str,
    ) -> None:
        self.generators = [member_generator(s, purpose) for s in seeds]
        self.draw = draw
        self.block = int(block)
        self.device = torch.device(device)
        self.column = self.block  # empty: the first take() draws
        self.arrays: tuple[Tensor, ...] = ()

    def _refill(self) -> None:
        per_member = [self.draw(g, self.block) for g in self.generators]
        fields = zip(*per_member, strict=True)
        # (S, block, ...) per field, then block-major so that one column is contiguous.
        self.arrays = tuple(
            torch.from_numpy(np.ascontiguousarray(np.stack(f, axis=1))).to(self.device) for f in fields
        )
        self.column = 0

    def take(self) -> tuple[Tensor, ...]:
        """The next column of every field: tensors of shape ``(S, ...)`` on the device."""
        if self.column == self.block:
            self._refill()
        col = self.column
        self.column = col + 1
        return tuple(a[col] for a in self.arrays)

    def state_dict(self) -> dict[str, Any]:
        """Generator states, the current block and the read position (for exact resume)."""
        return {
            "generators": [g.bit_generator.state for g in self.generators],
            "arrays": [a.cpu() for a in self.arrays],
            "column": self.column,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for g, s in zip(self.generators, state["generators"], strict=True):
            g.bit_generator.state = s
        self.arrays = tuple(a.to(self.device) for a in state["arrays"])
        self.column = int(state["column"])
