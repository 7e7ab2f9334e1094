import os

# Triton kernels run on CPU only in the interpreter, which must be on before they are decorated.
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

# Tiny test models gain nothing from intra-op threads, and on a busy 2-core machine thread
# oversubscription slows them by orders of magnitude.
torch.set_num_threads(1)

# The kernel backends that can run here (Triton in the interpreter), for tests parametrised over them.
from imu_fast import backends  # noqa: E402

BACKENDS = [name for name in ("torch", "cpu", "triton") if backends()[name]["available"]]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|, the error measure used throughout the tests."""
    a, b = a.double(), b.double()
    scale = b.abs().max().clamp_min(1e-300)
    return float((a - b).abs().max() / scale)


def mismatch(a: torch.Tensor, b: torch.Tensor, tol: float) -> str:
    """A readable message naming the worst mismatching indices."""
    diff = (a.double() - b.double()).abs().flatten()
    worst = diff.topk(min(5, diff.numel())).indices
    return f"rel err {rel_err(a, b):.3e} > {tol}; worst flat indices {worst.tolist()}: {a.flatten()[worst].tolist()} vs {b.flatten()[worst].tolist()}"


class SmallNet(nn.Module):
    """Backbone with BatchNorm and dropout, then a linear head (optionally without bias)."""

    def __init__(self, d_in: int, width: int, classes: int, head_bias: bool = True):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(d_in, width), nn.BatchNorm1d(width), nn.ReLU(), nn.Dropout(0.5))
        self.fc = nn.Linear(width, classes, bias=head_bias)

    def forward(self, x):
        return self.fc(self.body(x))


class SmallCNN(nn.Module):
    def __init__(self, classes: int):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout2d(0.2),
                                  nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.head = nn.Linear(16, classes)

    def forward(self, x):
        return self.head(self.conv(x))


def warmed(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Gives BatchNorm non-trivial running statistics, then leaves the model in train mode."""
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(x)
    return model


@pytest.fixture
def rng():
    return torch.Generator().manual_seed(1234)
