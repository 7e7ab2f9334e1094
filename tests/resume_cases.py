"""A small run that exercises every random state a checkpoint must carry (dropout, BatchNorm, a
DataLoader's seed draws, shuffling), shared by tests/test_checkpoint.py and the child process it
kills: ``python resume_cases.py CHECKPOINT_DIR KILL_AT_FORWARD``."""

import os
import signal
import sys

import torch
from torch import nn
from torch.utils.data import Dataset


class Samples(Dataset):
    """A map-style dataset, so that every epoch builds a DataLoader (which draws from torch's RNG)."""

    def __init__(self, n=45):
        g = torch.Generator().manual_seed(3)
        self.x, self.y = torch.randn(n, 5, generator=g), torch.randint(0, 3, (n,), generator=g)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


class Net(nn.Module):
    def __init__(self, kill_at: int = 0):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(5, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3))
        self.fc = nn.Linear(16, 3)
        self.kill_at, self.train_forwards = kill_at, 0

    def forward(self, x):
        if self.training:
            self.train_forwards += 1
            if self.train_forwards == self.kill_at:  # killed at any point: here, in the middle of an epoch
                os.kill(os.getpid(), signal.SIGKILL)
        return self.fc(self.body(x))


def model(kill_at: int = 0) -> Net:
    torch.manual_seed(0)
    net = Net(kill_at)
    net.train()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        net(torch.randn(64, 5))
    net.train_forwards = 0
    return net


SETTINGS = dict(method="ga", epochs=3, batch_size=8, lr=0.02)


def run(checkpoint_dir=None, kill_at: int = 0, every: int = 2):
    torch.manual_seed(11)  # the caller's RNG state at the call: irrelevant once a checkpoint exists
    net = model(kill_at)
    import imu_fast

    report = imu_fast.unlearn(net, Samples(), checkpoint_dir=checkpoint_dir, checkpoint_every=every, **SETTINGS)
    return net, report


if __name__ == "__main__":
    torch.set_num_threads(1)
    run(sys.argv[1], kill_at=int(sys.argv[2]))
