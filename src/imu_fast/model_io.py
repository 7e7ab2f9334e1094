"""How the package talks to a user's model: its device, calling it on a batch, reading its logits."""

from __future__ import annotations

import torch
from torch import nn


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); CPU for a model with neither."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def logits_of(output) -> torch.Tensor:
    """The logits tensor of a model output: a tensor, an object with ``.logits``, or a tuple's first item."""
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"cannot find logits in a model output of type {type(output).__name__}")


def call_model(model: nn.Module, inputs):
    """``model(**inputs)`` for a dict of keyword inputs (the Hugging Face convention), else ``model(inputs)``."""
    if isinstance(inputs, dict):
        return model(**inputs)
    return model(inputs)


def module_name(model: nn.Module, module: nn.Module) -> str:
    """The name of ``module`` inside ``model`` (``"<model>"`` for the model itself)."""
    for name, m in model.named_modules(remove_duplicate=False):
        if m is module:
            return name or "<model>"
    raise ValueError(f"the module {type(module).__name__} is not a submodule of the model "
                     f"{type(model).__name__}; pass a module of the model being scored")


def has_embedding(model: nn.Module) -> bool:
    """True if the model has a layer that takes integer ids (nn.Embedding or nn.EmbeddingBag)."""
    return any(isinstance(m, (nn.Embedding, nn.EmbeddingBag)) for m in model.modules())
