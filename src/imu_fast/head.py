"""Finding a model's classifier head and capturing what flows into it.

The fast head path needs the head's input h_i and its output z_i = logits. It is exact only if
the head's output *is* the model's output, so that is what we check (by tensor identity), both
when we search for the head and when the user names one.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn


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


def module_name(model: nn.Module, module: nn.Module) -> str:
    for name, m in model.named_modules():
        if m is module:
            return name or "<model>"
    raise ValueError(f"the head module {type(module).__name__} is not a submodule of the model")


@dataclass
class HeadCapture:
    """Records the last input and output of one module."""

    inputs: torch.Tensor | None = None
    outputs: torch.Tensor | None = None

    def hook(self, module, args, output):
        self.inputs = args[0]
        self.outputs = output


@contextmanager
def capture(module: nn.Module):
    rec = HeadCapture()
    handle = module.register_forward_hook(rec.hook)
    try:
        yield rec
    finally:
        handle.remove()


def find_head_and_features(model: nn.Module, x: torch.Tensor) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """``(head, head input, logits)`` from one forward pass: the head is the ``nn.Linear`` (or
    subclass) whose output is the model's logits. The pass's features are returned so that the
    caller need not run the batch again."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("the model has no nn.Linear layer to act as the classifier head; pass head=<module>")
    seen: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def record(i):
        return lambda mod, args, out: seen.__setitem__(i, (args[0], out))

    handles = [m.register_forward_hook(record(i)) for i, m in enumerate(linears)]
    try:
        with torch.no_grad():
            logits = logits_of(model(x))
    finally:
        for h in handles:
            h.remove()
    hits = [i for i, (_, out) in seen.items() if out is logits]
    if len(hits) == 1:
        return linears[hits[0]], seen[hits[0]][0], logits
    names = [module_name(model, m) for m in linears]
    raise ValueError(
        "could not identify the classifier head: no nn.Linear produces the model's output directly "
        f"(linear layers: {names[-5:]}). The fast path needs logits = head(features); pass head=<module> "
        "naming that layer, and make the model return its output unchanged"
    )


def find_head(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """The ``nn.Linear`` whose output is the model's logits, found on one batch."""
    return find_head_and_features(model, x)[0]


def check_head(head: nn.Module) -> None:
    if not isinstance(head, nn.Linear):
        raise TypeError(
            f"the head must be an nn.Linear (or a subclass), got {type(head).__name__}; "
            "other layers are supported through targets= (per-layer capture)"
        )
