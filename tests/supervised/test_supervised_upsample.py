"""The ``image_size`` option of the supervised track: the digits upsampled (bilinear) to a larger input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rlplast.errors import UserError
from rlplast.supervised import load_supervised_config
from rlplast.supervised.data import load_digits_data, task_permutation, upsample_images
from rlplast.supervised.track import run_continual

REPO = Path(__file__).resolve().parents[2]


def test_image_size_8_is_the_digits_as_shipped():
    torch.testing.assert_close(load_digits_data(50, 8).x, load_digits_data(50).x, rtol=0, atol=0)


def test_upsampled_digits_keep_labels_range_and_mean():
    small, big = load_digits_data(200), load_digits_data(200, 28)
    assert big.x.shape == (200, 784) and big.x.dtype == torch.float32
    assert torch.equal(big.y, small.y)
    assert float(big.x.min()) >= 0.0 and float(big.x.max()) <= 1.0  # convex combinations of pixels
    # bilinear upsampling by a non-integer factor keeps each image's mean brightness closely
    torch.testing.assert_close(big.x.mean(dim=1), small.x.mean(dim=1), rtol=0, atol=0.03)
    torch.testing.assert_close(load_digits_data(200, 28).x, big.x, rtol=0, atol=0)  # deterministic


def test_upsample_images_known_answer():
    # a 2x2 image to 4x4 (align_corners=False): the corners keep their pixels, the centre is the mean
    x = torch.tensor([[0.0, 1.0, 1.0, 0.0]])
    out = upsample_images(x, 2, 4).reshape(4, 4)
    assert out[0, 0] == 0.0 and out[0, 3] == 1.0 and out[3, 0] == 1.0 and out[3, 3] == 0.0
    torch.testing.assert_close(out[1:3, 1:3].mean(), torch.tensor(0.5))
    with pytest.raises(ValueError, match="only enlarges"):
        upsample_images(torch.zeros(1, 16), 4, 2)
    with pytest.raises(ValueError, match="flattened"):
        upsample_images(torch.zeros(1, 15), 4, 8)


def test_image_size_is_validated():
    for bad in ("image_size=4", "image_size=65", "image_size=x"):
        with pytest.raises(UserError, match="image_size"):
            load_supervised_config(None, [bad])


def test_a_continual_run_on_upsampled_digits_permutes_all_pixels():
    cfg = load_supervised_config(
        None, ["n_tasks=2", "n_samples=100", "image_size=28", "hidden=[16]", "metrics.n_min=2"]
    )
    rows = run_continual(cfg, progress=None)
    assert [r["task"] for r in rows] == [0, 1]
    assert all(0.0 <= r["online_acc"] <= 1.0 for r in rows)
    assert sorted(task_permutation(cfg.seed, 1, 784).tolist()) == list(range(784))


def test_the_large_permuted_digits_preset_loads():
    cfg = load_supervised_config(REPO / "configs/supervised/permuted_digits_large.yaml", [])
    assert cfg.mode == "continual" and cfg.n_tasks >= 100 and cfg.image_size == 28
    assert cfg.batch_size == 1 and cfg.epochs_per_task == 1
