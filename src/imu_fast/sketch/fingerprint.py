"""A fingerprint of a model's state, to tell whether saved sketches belong to the model at hand."""

from __future__ import annotations

import hashlib

import torch
from torch import nn


def model_fingerprint(model: nn.Module) -> str:
    """SHA-256 (first 128 bits) of every parameter's and buffer's name, dtype, shape and bytes, in
    state_dict order."""
    digest = hashlib.sha256()
    for name, t in model.state_dict(keep_vars=False).items():
        if not isinstance(t, torch.Tensor):
            continue
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        flat = t.detach().reshape(-1)
        if flat.numel():
            digest.update(memoryview(flat.cpu().contiguous().view(torch.uint8).numpy()))  # no copy
    return digest.hexdigest()[:32]
