"""Models, data and scenarios shared by the 2-process tests (tests/test_distributed.py) and the
worker each process runs (tests/dist_worker.py): the same seeds give the same data everywhere."""

import torch
from torch import nn
from torch.utils.data import DataLoader, SubsetRandomSampler, TensorDataset

N, D, C = 37, 6, 4  # an odd size: unequal shares, and a last mini-batch of 5


class Net(nn.Module):
    """No BatchNorm and no dropout, so a process group's run can match one process exactly."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(D, 8), nn.Tanh())
        self.fc = nn.Linear(8, C)

    def forward(self, x):
        return self.fc(self.body(x))


def model() -> Net:
    torch.manual_seed(0)
    return Net().double()


def data(n: int = N):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, D, generator=g, dtype=torch.float64), torch.randint(0, C, (n,), generator=g)


def loader():
    """A DataLoader whose sampler names a shuffled subset: the forget set is its samples, sorted."""
    x, y = data(60)
    chosen = torch.randperm(60, generator=torch.Generator().manual_seed(2))[:29].tolist()
    return DataLoader(TensorDataset(x, y), batch_size=7, sampler=SubsetRandomSampler(chosen))


UNLEARN = {
    "imu": dict(method="imu", top_fraction=0.5, epochs=2, batch_size=8),
    "imu_batch": dict(method="imu", refresh="batch", epochs=2, batch_size=8, lr=0.05),
    "ga": dict(method="ga", epochs=2, batch_size=12),  # 37 = 3 x 12 + 1: one process's share of the last is empty
    "npo_adamw": dict(method="npo", epochs=2, batch_size=8, optimizer="adamw", lr=1e-3, momentum=0.9),
}

STOPPED_RUN = dict(method="ga", epochs=5, batch_size=8, lr=0.05)


def stop_criteria():
    import imu_fast

    return imu_fast.StopCriteria(forget_accuracy_at_most=0.1, check_every=1)
