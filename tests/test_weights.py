"""influence_weights follows the paper recipe exactly (IMU_SPEC.md section 2)."""

import math

import numpy as np
import pytest
import torch

from imu_fast import NothingToUnlearnWarning, influence_weights
from imu_fast.weights import dynamic_batch_weights


def recipe(scores, top_fraction=0.1, q=0.93):
    """The recipe written out step by step in plain Python/numpy, as an independent oracle."""
    s = [float(v) for v in scores]
    negative = [i for i, v in enumerate(s) if v < 0]
    keep = max(1, math.floor(top_fraction * len(negative)))
    kept = sorted(negative, key=lambda i: (-abs(s[i]), i))[:keep]
    w = np.sqrt(np.abs([s[i] for i in kept]))
    cap = np.quantile(w, q)  # numpy's default is linear interpolation, like torch.quantile
    out = np.zeros(len(s))
    out[kept] = np.minimum(w, cap)
    return torch.tensor(out)


@pytest.mark.parametrize("n", [1, 2, 3, 17, 100, 1001])
@pytest.mark.parametrize("top_fraction", [0.1, 0.5, 1.0])
def test_matches_recipe_on_random_scores(n, top_fraction):
    g = torch.Generator().manual_seed(n)
    scores = torch.randn(n, dtype=torch.float64, generator=g)
    if not (scores < 0).any():
        scores[0] = -1.0
    w = influence_weights(scores, top_fraction=top_fraction)
    assert torch.allclose(w, recipe(scores, top_fraction), rtol=1e-15, atol=0)


def test_ties_keep_lower_indices_first():
    scores = torch.tensor([-1.0, -2.0, -2.0, 0.5, -2.0, -1.0, -3.0, -2.0, -0.5, -2.0, -1.0])
    w = influence_weights(scores, top_fraction=0.4)  # 10 negatives -> keep 4: index 6, then ties 1, 2, 4
    assert (w > 0).nonzero().flatten().tolist() == [1, 2, 4, 6]
    assert torch.allclose(w.double(), recipe(scores, 0.4))


def test_clipping_at_quantile():
    scores = -torch.tensor([1.0, 4.0, 9.0, 16.0, 100.0], dtype=torch.float64)
    w = influence_weights(scores, top_fraction=1.0, clip_quantile=0.5)
    assert torch.allclose(w, torch.tensor([1.0, 2.0, 3.0, 3.0, 3.0], dtype=torch.float64))


def test_all_positive_scores_warn_and_keep_nothing():
    with pytest.warns(NothingToUnlearnWarning, match="nothing will be unlearned"):
        w = influence_weights(torch.tensor([0.0, 1.0, 2.5]))
    assert not w.any()


def test_single_negative_sample_is_kept():
    w = influence_weights(torch.tensor([3.0, -4.0, 1.0]))
    assert w.tolist() == [0.0, 2.0, 0.0]


@pytest.mark.parametrize(
    "scores,kwargs,err",
    [
        (torch.tensor([]), {}, "non-empty"),
        (torch.ones(2, 2), {}, "1-D"),
        (torch.tensor([1.0, float("nan")]), {}, "NaN"),
        (torch.tensor([-1.0]), {"top_fraction": 0.0}, "top_fraction"),
        (torch.tensor([-1.0]), {"clip_quantile": 1.5}, "clip_quantile"),
    ],
)
def test_bad_arguments(scores, kwargs, err):
    with pytest.raises(ValueError, match=err):
        influence_weights(scores, **kwargs)


def test_dynamic_batch_weights_clip_over_whole_batch():
    scores = torch.tensor([-1.0, 2.0, -4.0, -16.0, 3.0], dtype=torch.float64)
    raw = torch.tensor([1.0, 0.0, 2.0, 4.0, 0.0], dtype=torch.float64)
    cap = torch.quantile(raw, 0.93)
    assert torch.allclose(dynamic_batch_weights(scores), torch.minimum(raw, cap))
