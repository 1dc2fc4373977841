from __future__ import annotations

import torch
from threadpoolctl import threadpool_info, threadpool_limits

from rlplast.threads import set_cpu_threads


def _blas_threads() -> list[int]:
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


def test_sets_torch_and_numpy_blas_threads():
    before_torch = torch.get_num_threads()
    with threadpool_limits(limits=2, user_api="blas"):  # restores the process' limits afterwards
        assert _blas_threads(), "NumPy's BLAS is not visible to threadpoolctl"
        set_cpu_threads(1)
        try:
            assert torch.get_num_threads() == 1
            assert set(_blas_threads()) == {1}
        finally:
            torch.set_num_threads(before_torch)


def test_zero_leaves_the_libraries_alone():
    before_torch = torch.get_num_threads()
    with threadpool_limits(limits=2, user_api="blas"):
        before_blas = _blas_threads()
        set_cpu_threads(0)
        assert torch.get_num_threads() == before_torch
        assert _blas_threads() == before_blas
