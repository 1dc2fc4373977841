"""Network surgery shared by the interventions: in-place re-initialisation done right.

Every helper here changes parameters *in place* (``copy_`` under ``no_grad``) so the optimizer keeps
tracking the same tensors; none of them replaces a module.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import nn


def linear_layers(net: nn.Module) -> list[tuple[str, nn.Linear]]:
    """All ``nn.Linear`` modules of ``net`` in module order, with their qualified names."""
    return [(name, m) for name, m in net.named_modules() if isinstance(m, nn.Linear)]


def reinitialise(module: nn.Module) -> None:
    """Re-draw ``module``'s own parameters in place with its initialiser (``reset_parameters``)."""
    module.reset_parameters()  # type: ignore[operator]


def resettable_modules(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules that own an initialiser (``reset_parameters``), in module order."""
    return [(name, m) for name, m in net.named_modules() if callable(getattr(m, "reset_parameters", None))]


@torch.no_grad()
def copy_module_to_target(online: nn.Module, target: nn.Module, names: Iterable[str]) -> None:
    """Copy the parameters and buffers of the named submodules of ``online`` into ``target``."""
    online_modules = dict(online.named_modules())
    target_modules = dict(target.named_modules())
    for name in names:
        src, dst = online_modules[name], target_modules[name]
        for p_dst, p_src in zip(dst.parameters(recurse=False), src.parameters(recurse=False), strict=True):
            p_dst.copy_(p_src)
        for b_dst, b_src in zip(dst.buffers(recurse=False), src.buffers(recurse=False), strict=True):
            b_dst.copy_(b_src)


def drop_optimizer_state(optimizer: torch.optim.Optimizer, params: Iterable[torch.Tensor]) -> int:
    """Forget the optimizer state (Adam moments and step) of exactly ``params``; return how many had one."""
    dropped = 0
    for p in params:
        if optimizer.state.pop(p, None) is not None:
            dropped += 1
    return dropped


class FreshInit:
    """A private scratch copy of a network that re-draws a fresh initialisation on demand.

    The copy lives outside the model (no new modules in the network, nothing new in the optimizer).
    :meth:`draw` calls ``reset_parameters`` on the copy's modules in module order, drawing from the
    global torch RNG, and returns ``{parameter name: fresh tensor}``.

    Args:
        net: the network whose initialisers to use.
    """

    def __init__(self, net: nn.Module) -> None:
        self.scratch = copy.deepcopy(net)
        for p in self.scratch.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def draw(self) -> dict[str, torch.Tensor]:
        """Re-initialise the scratch copy and return its parameters by qualified name."""
        for _, module in resettable_modules(self.scratch):
            reinitialise(module)
        return dict(self.scratch.named_parameters())


def covered_parameter_names(net: nn.Module) -> set[str]:
    """Qualified names of the parameters that some module's ``reset_parameters`` re-initialises."""
    names: set[str] = set()
    for mod_name, module in resettable_modules(net):
        prefix = f"{mod_name}." if mod_name else ""
        names.update(prefix + n for n, _ in module.named_parameters(recurse=False))
    return names
