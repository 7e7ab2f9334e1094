"""Pieces shared by the unlearning loops."""

from __future__ import annotations

from torch import nn
from torch.utils.data import Dataset


class IndexedDataset(Dataset):
    """Yields ``(x, y, i)`` so the loop can look up each sample's weight after shuffling."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        x, y = self.dataset[i]
        return x, y, i


def train_mode(model: nn.Module, freeze_batchnorm: bool) -> None:
    model.train()
    if freeze_batchnorm:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
