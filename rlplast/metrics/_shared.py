"""Shared float64 passes over a feature matrix (internal; not a registered metric).

Every ``N×D``-sized piece of work the metrics need — the float64 cast, per-class sums, per-sample
squared norms, the ``D×D`` Gram of the ranks, the column ``|h|`` sums of the dormant score — is done
here in as few passes as possible and shared across labelings and metrics.

CPU: the features are processed in row blocks of ≈ 2 MiB of float64. A fresh ``N×D`` float64
temporary above glibc's mmap threshold (32 MiB at most) is page-faulted in on every call, which
costs as much as the matmuls that use it; small blocks are recycled by the allocator and stay
in cache across the several products taken of each block. The
loop runs over a fixed number of memory blocks (never over classes or samples) and every block
result is accumulated in float64. On other devices the whole matrix is one block.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from rlplast.metrics.registry import MetricContext

__all__ = [
    "FeaturePass",
    "SuitePass",
    "blocks64",
    "feature_pass",
    "project",
    "row_blocks",
    "same_tensor",
    "suite_pass",
]

_DT = torch.float64
_BLOCK_BYTES = 2 << 20  # float64 bytes per row block on CPU (stays in cache across the ops)
_MIN_BLOCK_ROWS = 256
# From this many classes the suite's CPU pass scatter-adds class sums instead of a one-hot product.
_INDEX_ADD_MIN_CLASSES = 8


def row_blocks(x: Tensor) -> list[Tensor]:
    """Row blocks of ``x`` (views) sized so that a float64 copy of one block is ≈ 2 MiB (CPU only)."""
    n = x.shape[0]
    if x.device.type != "cpu" or n <= _MIN_BLOCK_ROWS:
        return [x]
    rows = max(_MIN_BLOCK_ROWS, _BLOCK_BYTES // (8 * max(math.prod(x.shape[1:]), 1)))
    return [x] if n <= rows else list(x.split(rows))


@dataclass
class FeaturePass:
    """Float64 summaries of ``h`` (``N×D``) from one pass; absent pieces are None.

    Attributes:
        sums: ``(K, D)`` ``Yᵀh`` for the stacked one-hot columns ``Y`` (``N×K``).
        class_sq: ``(K,)`` ``Yᵀ‖h‖²`` (per-column sums of squared sample norms).
        gram: ``(D, D)`` ``hᵀh``, **lower triangle only** (blocks above the diagonal strips are
            0): what ``torch.linalg.eigvalsh`` (``UPLO="L"``) reads.
        abs_sum: ``(D,)`` column sums of ``|h|``.
    """

    sums: Tensor | None = None
    class_sq: Tensor | None = None
    gram: Tensor | None = None
    abs_sum: Tensor | None = None


def blocks64(x: Tensor, graph: bool = False) -> Iterator[tuple[Tensor, bool]]:
    """Yield ``(block, scratch)``: the row blocks of ``x`` in float64.

    With several blocks and no autograd graph, every block is copied into ONE reused float64
    buffer (``scratch=True``: the caller may modify it in place, and must not keep it past the
    next iteration): a fresh buffer per block would be returned to the OS and page-faulted in
    again, which made the cast several times slower than the copy itself. Otherwise the block is
    ``block.to(float64)`` (``scratch=False``: may be ``x`` itself, never modify it).

    Args:
        x: the tensor (rows = dim 0).
        graph: an autograd graph may save the blocks (e.g. a product with a tensor that requires
            grad); ``x.requires_grad`` under grad mode counts as such too. No buffer reuse then.
    """
    blocks = row_blocks(x)
    if len(blocks) == 1 or (torch.is_grad_enabled() and (graph or x.requires_grad)):
        for b in blocks:
            yield b.to(_DT), False
        return
    buf = torch.empty(blocks[0].shape, dtype=_DT, device=x.device)
    for b in blocks:
        view = buf[: b.shape[0]]
        view.copy_(b)
        yield view, True


def _add(acc: Tensor | None, x: Tensor) -> Tensor:
    return x if acc is None else acc + x


def feature_pass(
    h: Tensor,
    onehot: Tensor | None,
    gram: bool = False,
    abs_sum: bool = False,
    index: list[Tensor] | None = None,
) -> FeaturePass:
    """One pass over ``h`` (any float dtype, cast to float64 block by block; differentiable).

    Args:
        h: ``(N, D)`` features.
        onehot: ``(N, K)`` float64 class indicators (several labelings may be stacked), or None.
        gram: also accumulate ``hᵀh``.
        abs_sum: also accumulate the column sums of ``|h|``.
        index: instead of the one-hot product, per labeling the ``(N,)`` int64 class of each row in
            ``[0, C]`` (``C`` = no class), with ``onehot`` the ``(N, L·C)`` one-hot they encode
            (used for its shape only). ``index_add_`` costs ``O(N·D)`` per labeling instead of
            ``O(N·D·C)``; for the CPU suite pass (on CUDA it would add in a nondeterministic order).
    """
    out = FeaturePass()
    blocks = row_blocks(h)
    n_blocks = len(blocks)
    y_blocks: list[Tensor | None] = [None] * n_blocks
    i_blocks: list[list[Tensor]] = [[] for _ in range(n_blocks)]
    sums_l: list[Tensor] = []
    sq_l: list[Tensor] = []
    c = 0
    if index is not None:
        assert onehot is not None
        c = onehot.shape[1] // max(len(index), 1)
        sums_l = [torch.zeros(c + 1, h.shape[1], dtype=_DT, device=h.device) for _ in index]
        sq_l = [torch.zeros(c + 1, dtype=_DT, device=h.device) for _ in index]
        per_label = [row_blocks_like(i, blocks) for i in index]
        i_blocks = [list(t) for t in zip(*per_label, strict=True)] if index else i_blocks
    elif onehot is not None:
        y_blocks = list(row_blocks_like(onehot, blocks))
    d = h.shape[1]
    # The Gram's lower triangle only (all that eigvalsh reads), by column strips: with k strips
    # (k = 4 from D = 256, 2 from D = 128) the products take (k + 1)/(2k) of the full flops.
    n_strips = 4 if d >= 256 else 2 if d >= 128 else 1
    bounds = [d * i // n_strips for i in range(n_strips + 1)]
    if gram:
        out.gram = torch.zeros(d, d, dtype=_DT, device=h.device)
    for (h64, scratch), yb, ibs in zip(blocks64(h), y_blocks, i_blocks, strict=True):
        if yb is not None or ibs:
            # A norm is one fused reduction (an einsum "ij,ij->i" becomes N tiny batched dots).
            sq = torch.linalg.vector_norm(h64, dim=1).square()
            if yb is not None:
                out.sums = _add(out.sums, yb.T @ h64)
                out.class_sq = _add(out.class_sq, sq @ yb)
            for sums, sqs, ib in zip(sums_l, sq_l, ibs, strict=True):
                sums.index_add_(0, ib, h64)
                sqs.index_add_(0, ib, sq)
        if out.gram is not None:
            for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
                out.gram[lo:, lo:hi].addmm_(h64[:, lo:].T, h64[:, lo:hi])
        if abs_sum:  # last use of the block: take |h| in place where it is our scratch copy
            out.abs_sum = _add(out.abs_sum, (h64.abs_() if scratch else h64.abs()).sum(0))
    if index is not None:
        out.sums = torch.cat([x[:c] for x in sums_l])
        out.class_sq = torch.cat([x[:c] for x in sq_l])
    return out


def row_blocks_like(x: Tensor, blocks: list[Tensor]) -> list[Tensor]:
    """Split ``x`` along rows like ``blocks`` (same row counts)."""
    if len(blocks) == 1:
        return [x]
    return list(x.split([b.shape[0] for b in blocks]))


def project(h: Tensor, mats: list[Tensor], fuse: bool = False) -> list[Tensor]:
    """``[h @ mᵀ for m in mats]`` in float64 (each ``(N, K_m)``, contiguous), one cast per block.

    ``fuse=True`` takes one wider product per block (cheaper); ``False`` keeps one product per
    matrix, so the result for a matrix does not depend on which others are projected with it.
    Differentiable.
    """
    sizes = [m.shape[0] for m in mats]
    both = torch.cat(mats) if fuse and len(mats) > 1 else None
    n = h.shape[0]
    graph = torch.is_grad_enabled() and (h.requires_grad or any(m.requires_grad for m in mats))
    if len(row_blocks(h)) > 1 and not graph:
        # No graph: write each block's products straight into the outputs (no final cat).
        outs = [torch.empty(n, k, dtype=_DT, device=h.device) for k in sizes]
        start = 0
        for h64, _ in blocks64(h):
            stop = start + h64.shape[0]
            if both is None:
                for o, m in zip(outs, mats, strict=True):
                    torch.mm(h64, m.T, out=o[start:stop])
            else:
                for o, part in zip(outs, (h64 @ both.T).split(sizes, dim=1), strict=True):
                    o[start:stop] = part
            start = stop
        return outs
    parts: list[list[Tensor]] = [[] for _ in mats]
    for h64, _ in blocks64(h, graph=graph):
        prods = [h64 @ m.T for m in mats] if both is None else (h64 @ both.T).split(sizes, dim=1)
        for part, o in zip(parts, prods, strict=True):
            part.append(o)
    return [p[0].contiguous() if len(p) == 1 else torch.cat(p) for p in parts]


@dataclass
class SuitePass:
    """The shared feature pass of one evaluation (see :func:`suite_pass`).

    Attributes:
        labels: labeling name (``greedy``, ``taken``) → ``(N,)`` int64 labels (empty without
            ``collapse``).
        onehots: ``(N, C)`` float64 one-hot labels per labeling, all classes, in ``labels`` order.
        features: the :class:`FeaturePass` (class sums over ``torch.cat(onehots, 1)``).
    """

    labels: dict[str, Tensor]
    onehots: list[Tensor]
    features: FeaturePass


def suite_pass(ctx: MetricContext) -> SuitePass:
    """The shared feature pass of one :class:`MetricContext`, computed once and cached in ``ctx.cache``.

    It serves every selected metric at once: the class sums of both labelings (``collapse``), the
    Gram (``rank``) and the ``|h|`` column sums of the features (``dormant``, when the features are
    one of the recorded activations). With ``ctx.metric_names`` empty (a hand-built context) every
    piece is computed.
    """
    cached = ctx.cache.get("suite_pass")
    if isinstance(cached, SuitePass):
        return cached
    names = set(ctx.metric_names)
    everything = not names
    h = ctx.features.flatten(1)
    labels: dict[str, Tensor] = {}
    onehot = None
    if everything or "collapse" in names:
        labels["greedy"] = ctx.q_values.argmax(1)
        if ctx.taken_actions is not None:
            labels["taken"] = ctx.taken_actions.reshape(-1).to(device=h.device, dtype=torch.long)
        classes = torch.arange(ctx.num_classes, device=h.device)
        onehots = [(y[:, None] == classes[None, :]).to(_DT) for y in labels.values()]
        onehot = torch.cat(onehots, 1)
    want_abs = (everything or "dormant" in names) and any(
        a.dim() == 2 and _same_tensor(a, h) for a in ctx.activations.values()
    )
    index = None
    if onehot is not None and h.device.type == "cpu" and ctx.num_classes >= _INDEX_ADD_MIN_CLASSES:
        # Scatter-add the class sums: O(N·D) per labeling instead of the one-hot product's O(N·D·C).
        c = ctx.num_classes
        index = [torch.where((y >= 0) & (y < c), y, c) for y in labels.values()]
    fp = feature_pass(h, onehot, gram=everything or "rank" in names, abs_sum=want_abs, index=index)
    out = SuitePass(labels=labels, onehots=onehots if onehot is not None else [], features=fp)
    ctx.cache["suite_pass"] = out
    return out


def _same_tensor(a: Tensor, b: Tensor) -> bool:
    return (
        a.shape == b.shape
        and a.dtype == b.dtype
        and a.device == b.device
        and a.stride() == b.stride()
        and a.data_ptr() == b.data_ptr()
    )


def same_tensor(a: Tensor, b: Tensor) -> bool:
    """Whether ``a`` and ``b`` view the same memory with the same layout (host metadata only)."""
    return _same_tensor(a, b)
