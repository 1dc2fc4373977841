"""Network helpers shared by the interventions, the metrics and the supervised track.

Every helper that changes a network does it *in place* (``copy_`` / ``mul_`` under ``no_grad``, or
the modules' own ``reset_parameters``), so an optimizer keeps tracking the same tensors; none of
them replaces a module. Nothing here knows SB3, the agent or the CLI: the helpers take plain
``nn.Module`` objects, parameters and optimizers.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from rlplast.nets import FreshInit, last_linear, linear_layers, reinitialise, shrink_perturb_
    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> [name for name, _ in linear_layers(net)], last_linear(net) is net[2]
    (['0', '2'], True)
    >>> fresh = FreshInit(net).draw(seed=0)  # a fresh initialisation; ``net`` is untouched
    >>> shrink_perturb_(net.parameters(), [fresh[n] for n, _ in net.named_parameters()], 0.6, 0.01)
    >>> _ = reinitialise(net[2])  # re-draw the output layer in place
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "FreshInit",
    "copy_parameters",
    "covered_parameter_names",
    "drop_optimizer_state",
    "hidden_pairs",
    "last_linear",
    "linear_layers",
    "reinitialise",
    "resettable_modules",
    "shrink_perturb_",
    "zero_adam_moments",
]


# ------------------------------------------------------------------------------------ finding layers
def linear_layers(net: nn.Module) -> list[tuple[str, nn.Linear]]:
    """All ``nn.Linear`` modules of ``net`` in module order, with their qualified names.

    Args:
        net: any module (for an SB3 ``QNetwork``: the features extractor's layers, then the head's).

    Returns:
        ``[(name, layer), ...]`` in ``net.named_modules()`` order (a shared layer appears once).
    """
    return [(name, m) for name, m in net.named_modules() if isinstance(m, nn.Linear)]


def hidden_pairs(net: nn.Module) -> list[tuple[nn.Linear, nn.Linear]]:
    """Consecutive ``nn.Linear`` layers of ``net`` whose first's units are the second's inputs.

    The hidden layers whose units a unit-level method (ReDo, continual backprop) can score and
    replace: a layer followed by one that reads each of its units once. A CReLU network (each
    unit feeds the next layer twice) or a convolutional trunk's flatten has none such.
    """
    layers = [m for _, m in linear_layers(net)]
    return [(a, b) for a, b in zip(layers[:-1], layers[1:], strict=True) if a.out_features == b.in_features]


def last_linear(net: nn.Module) -> nn.Linear:
    """The output layer: ``net.q_net[-1]`` for SB3 ``QNetwork``-like modules, else the last ``nn.Linear``.

    The input of this layer is what the metrics and the NC regularizer call the penultimate
    features; its ``weight``/``bias`` are the ``W``/``b`` of the NC metrics.

    Args:
        net: the network.

    Returns:
        The layer (the same object the network uses, not a copy).

    Raises:
        TypeError: if the network has no ``nn.Linear``.
    """
    head = getattr(net, "q_net", None)
    if isinstance(head, nn.Sequential) and len(head) and isinstance(head[-1], nn.Linear):
        return head[-1]
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise TypeError(f"{type(net).__name__} has no nn.Linear output layer")
    return linears[-1]


def resettable_modules(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules of ``net`` (itself included) that own an initialiser (``reset_parameters``), in module order.

    Args:
        net: the network.

    Returns:
        ``[(name, module), ...]`` in ``net.named_modules()`` order; the root's name is ``""``.
    """
    return [(name, m) for name, m in net.named_modules() if callable(getattr(m, "reset_parameters", None))]


def covered_parameter_names(net: nn.Module) -> set[str]:
    """Qualified names of the parameters that some module's ``reset_parameters`` re-initialises.

    A parameter registered directly on a module without an initialiser (e.g. a bare
    ``nn.Parameter`` on a container) is not covered: :func:`reinitialise` leaves it unchanged.

    Args:
        net: the network.

    Returns:
        Names as in ``net.named_parameters()``.
    """
    names: set[str] = set()
    for mod_name, module in resettable_modules(net):
        prefix = f"{mod_name}." if mod_name else ""
        names.update(prefix + n for n, _ in module.named_parameters(recurse=False))
    return names


# ------------------------------------------------------------------------------------ re-initialising
@torch.no_grad()
def reinitialise(module: nn.Module) -> nn.Module:
    """Re-initialise ``module`` in place with its own initialisers; return ``module``.

    The one contract: every module of ``module.modules()`` (``module`` itself first, then its
    submodules in module order, each shared submodule once) that defines ``reset_parameters`` has
    it called, drawing from the global torch RNG. For a single layer (``nn.Linear``,
    ``nn.Conv2d``) that re-draws the layer; for a whole network it is a full re-initialisation,
    draw for draw the same as calling the layers' ``reset_parameters`` in module order. Tensors
    keep their identity (an optimizer keeps tracking them) and no module is replaced.
    Parameters no initialiser covers (see :func:`covered_parameter_names`) are left unchanged.
    A module whose own ``reset_parameters`` also resets its children has them drawn twice (once
    by it, once on their own), the cost of never skipping a child.

    Args:
        module: a layer or a whole network.

    Returns:
        ``module``, for chaining (``reinitialise(copy.deepcopy(net))``).
    """
    for _, m in resettable_modules(module):
        m.reset_parameters()  # type: ignore[operator]
    return module


class FreshInit:
    """A private scratch copy of a network that draws fresh initialisations on demand.

    The copy lives outside the model (no new modules in the network, nothing new in an optimizer).
    :meth:`draw` re-initialises the copy with :func:`reinitialise` and returns its parameters.

    Args:
        net: the network whose architecture and initialisers to use (deep-copied once).

    Example:
        >>> from torch import nn
        >>> fresh = FreshInit(nn.Linear(3, 2)).draw(seed=1)
        >>> sorted(fresh), tuple(fresh["weight"].shape)
        (['bias', 'weight'], (2, 3))
    """

    def __init__(self, net: nn.Module) -> None:
        self.scratch = copy.deepcopy(net)
        for p in self.scratch.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def draw(self, seed: int | None = None) -> dict[str, Tensor]:
        """Re-initialise the scratch copy and return its parameters by qualified name.

        Args:
            seed: None draws from the global torch RNG (advancing it); an int draws inside
                ``torch.random.fork_rng`` seeded with it, so the result depends on ``seed`` alone
                and the global RNG streams are untouched.

        Returns:
            ``{name: tensor}`` as in ``net.named_parameters()``. The tensors belong to the scratch
            copy and are overwritten by the next draw: use them before drawing again. Parameters
            that no initialiser covers keep the values ``net`` had when the copy was made.
        """
        if seed is None:
            reinitialise(self.scratch)
        else:
            with torch.random.fork_rng(devices=_cuda_devices(self.scratch)):
                torch.manual_seed(seed)
                reinitialise(self.scratch)
        return dict(self.scratch.named_parameters())


def _cuda_devices(net: nn.Module) -> list[int]:
    """CUDA device indices holding ``net``'s parameters (the RNG streams ``fork_rng`` must save)."""
    return sorted(
        {
            p.device.index if p.device.index is not None else torch.cuda.current_device()
            for p in net.parameters()
            if p.device.type == "cuda"
        }
    )


@torch.no_grad()
def shrink_perturb_(params: Iterable[Tensor], fresh: Iterable[Tensor], shrink: float, perturb: float) -> None:
    """Shrink-and-perturb (Ash & Adams 2020) in place: ``θ ← shrink·θ + perturb·θ_fresh``.

    The one definition of the map, used by the ``shrink_perturb`` intervention (online and target
    network) and by the supervised track. Each tensor is updated as ``θ.mul_(shrink)`` then
    ``θ.add_(θ_fresh, alpha=perturb)``, so the result is the same whatever order the pairs come in.

    Args:
        params: the tensors to change (e.g. ``net.parameters()``).
        fresh: as many fresh-initialisation tensors, pairwise of the same shape (e.g. from
            :meth:`FreshInit.draw`).
        shrink: λ, the factor on the current values.
        perturb: σ, the factor on the fresh values.

    Raises:
        ValueError: if the two sequences differ in length.
    """
    for p, f in zip(params, fresh, strict=True):
        p.mul_(shrink).add_(f, alpha=perturb)


# ------------------------------------------------------------------------------------ online → target
@torch.no_grad()
def copy_parameters(source: nn.Module, target: nn.Module, module_names: Iterable[str] | None = None) -> None:
    """Copy parameters and buffers of ``source`` into the same tensors of ``target`` (in place).

    Args:
        source: e.g. the online Q-network.
        target: a network of the same architecture (e.g. the target Q-network).
        module_names: None copies the whole network; otherwise the qualified names of submodules
            (as in ``named_modules()``) whose *own* parameters and buffers are copied.

    Raises:
        KeyError: a name that is not a submodule.
        ValueError: the two networks' tensors do not pair up.
    """
    if module_names is None:
        pairs = [(source, target)]
        recurse = True
    else:
        src_modules, dst_modules = dict(source.named_modules()), dict(target.named_modules())
        pairs = [(src_modules[n], dst_modules[n]) for n in module_names]
        recurse = False
    for src, dst in pairs:
        for p_dst, p_src in zip(dst.parameters(recurse), src.parameters(recurse), strict=True):
            p_dst.copy_(p_src)
        for b_dst, b_src in zip(dst.buffers(recurse), src.buffers(recurse), strict=True):
            b_dst.copy_(b_src)


def drop_optimizer_state(optimizer: torch.optim.Optimizer, params: Iterable[Tensor]) -> int:
    """Forget the optimizer state (e.g. Adam's moments and step) of exactly ``params``.

    Args:
        optimizer: the optimizer.
        params: the parameters whose state to drop (others keep theirs).

    Returns:
        How many of them had a state.
    """
    dropped = 0
    for p in params:
        if optimizer.state.pop(p, None) is not None:
            dropped += 1
    return dropped


def zero_adam_moments(state: Any, param: Tensor, mask: Tensor) -> None:
    """Zero Adam's moments of ``param`` (``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``) where
    ``mask`` (broadcastable to it) is True; its step count stays (what ReDo and continual backprop
    do to the rows and columns they reinitialise).

    Args:
        state: the optimizer's ``state`` mapping (a ``torch.optim.Adam().state``, or a population
            member's view of it).
        param: the parameter.
        mask: where to zero.
    """
    slots = state.get(param)
    if not slots:
        return
    for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
        moment = slots.get(key)
        if isinstance(moment, Tensor) and moment.shape == param.shape:
            moment.masked_fill_(mask, 0.0)
