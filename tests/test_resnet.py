"""Quick checks of the CIFAR ResNet-18 used by the benchmarks, and of the fast head path on it."""

import pytest
import torch
from torch import nn

import imu_fast
from imu_fast.resnet import ResNet18, resnet18


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


@pytest.mark.parametrize("classes", [10, 100])
def test_output_shape_and_head(classes):
    torch.manual_seed(0)
    model = resnet18(num_classes=classes).eval()
    assert isinstance(model, ResNet18)
    assert isinstance(model.linear, nn.Linear)
    assert (model.linear.in_features, model.linear.out_features) == (512, classes)
    seen = {}
    handle = model.linear.register_forward_hook(lambda m, a, out: seen.setdefault("out", out))
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    handle.remove()
    assert out.shape == (2, classes)
    assert out is seen["out"]  # the head's output is returned unchanged
    assert model.features(torch.randn(2, 3, 32, 32)).shape == (2, 512)


def test_parameter_count():
    n = sum(p.numel() for p in resnet18(num_classes=10).parameters())
    assert n == 11_173_962  # the standard CIFAR ResNet-18 (~11.2M)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in resnet18().modules()) == 20
    assert sum(isinstance(m, nn.Conv2d) for m in resnet18().modules()) == 20  # 17 3x3 + 3 1x1 shortcuts


def test_influence_fast_path_matches_oracle_float64():
    torch.manual_seed(0)
    model = resnet18(num_classes=10).double()
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):  # non-trivial running stats
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 2.0)
    model.train()  # both paths must switch to eval mode themselves, and restore this
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(5, 3, 32, 32, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 10, (5,), generator=gen)

    fast = imu_fast.influence_scores(model, (x, y))
    ref = imu_fast.influence_scores_ref(model, (x, y), list(model.linear.parameters()))

    assert fast.head == "linear"
    assert fast.scores.shape == (5,) and fast.scores.dtype == torch.float64
    assert _rel_err(fast.scores, ref) <= 1e-7, (fast.scores, ref)
    assert model.training and all(m.training for m in model.modules())  # modes restored
