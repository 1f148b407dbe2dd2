"""The near-copy check of the model cards (ddpm_lib.metrics.nearest_distance)."""

from __future__ import annotations

import pytest
import torch

from ddpm_lib.metrics import nearest_distance


def test_nearest_distance_matches_a_brute_force_search():
    g = torch.Generator().manual_seed(0)
    reference = torch.rand(50, 1, 8, 8, generator=g) * 2 - 1                # (50, 1, 8, 8)
    images = torch.rand(7, 1, 8, 8, generator=g) * 2 - 1
    images[3] = reference[17]                                               # an exact copy
    got = nearest_distance(images, reference, chunk=3)                      # chunks of 3, 3 and 1
    want = torch.stack([min(float((img - ref).pow(2).sum().sqrt()) for ref in reference) * torch.ones(())
                        for img in images])
    assert got.shape == (7,) and got[3] == 0
    assert torch.allclose(got, want.float(), rtol=1e-6, atol=1e-6)
    assert torch.equal(got, nearest_distance(images, reference, chunk=256))


def test_nearest_distance_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="one image shape"):
        nearest_distance(torch.zeros(2, 1, 8, 8), torch.zeros(3, 1, 4, 4))
