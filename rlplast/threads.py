"""CPU thread settings shared by every rlplast entry point."""

from __future__ import annotations

import torch


def set_cpu_threads(n: int) -> None:
    """Use ``n`` CPU threads in torch *and* in NumPy's BLAS; ``0`` leaves both libraries' defaults.

    torch's setting does not reach the BLAS that NumPy links (OpenBLAS); left alone, that BLAS
    starts one thread per core for the NC regularizer's small products and its idle threads spin,
    which on a 2-core machine cost several times the products' own CPU time and slow parallel
    sweeps. The limit stays in force for the rest of the process.
    """
    if n <= 0:
        return
    torch.set_num_threads(n)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=n, user_api="blas")
