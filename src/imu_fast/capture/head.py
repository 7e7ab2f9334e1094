"""Finding a model's classifier head and reading each sample's head input and logits row.

The closed-form head path needs, for every sample, the head's input h_i and its output row z_i,
which must be the model's logits for that sample. The head's output may be the logits themselves,
or a tensor of rows from which the model picks one per sample: sequence classifiers pool the head's
output at the last non-padding position (``LlamaForSequenceClassification``). Which row was picked
is read off by exact equality with the returned logits, since pooling copies rows. Any other
relation (a scaled or otherwise transformed head output) has no closed form; ``targets=`` has.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from ..model_io import call_model, logits_of, module_name

NO_CLOSED_FORM = ("The closed form needs logits = head(features), or rows of the head's output picked per sample; "
                  "pass targets=[<head module>] (with loss_fn= if needed) to score through any layers instead")


@contextmanager
def _recording(modules: list[nn.Module]):
    """Records the (input, output) of each module's last call."""
    seen: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def record(i):
        return lambda mod, args, out: seen.__setitem__(i, (args[0] if args else None, out))

    handles = [m.register_forward_hook(record(i)) for i, m in enumerate(modules)]
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


def check_head(model: nn.Module, head: nn.Module) -> str:
    """The head's name in ``model``; it must be an ``nn.Linear`` (or a subclass) of the model."""
    if not isinstance(head, nn.Linear):
        raise TypeError(f"the head must be an nn.Linear (or a subclass), got {type(head).__name__}; other layers are "
                        "supported through targets= (per-layer capture)")
    return module_name(model, head)


def head_rows(head_in, head_out, logits: torch.Tensor, label: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(h, z)``: one head input and one logits row per sample, or None if the logits are not rows
    of the head's output. ``label`` names the head in errors."""
    if not isinstance(head_in, torch.Tensor) or not isinstance(head_out, torch.Tensor) or logits.dim() != 2:
        return None
    if head_out is logits:
        if head_in.dim() != 2:
            raise ValueError(f"the head {label}'s input has shape {tuple(head_in.shape)}; the head path needs one feature "
                             "vector per sample. Layers with token axes are handled through targets=")
        return head_in, logits
    n, c = logits.shape
    if head_out.dim() < 3 or head_out.shape[0] != n or head_out.shape[-1] != c:
        return None
    rows_out = head_out.reshape(n, -1, c)
    rows_in = head_in.reshape(n, rows_out.shape[1], -1)
    match = (rows_out == logits[:, None, :]).all(-1)  # (N, T): positions whose row is the sample's logits
    if not match.any(1).all():
        return None
    ramp = torch.arange(1, match.shape[1] + 1, device=match.device)
    pos = (match * ramp).argmax(1)  # the last matching position
    picked = torch.arange(n, device=pos.device)
    h = rows_in[picked, pos]
    same_input = (rows_in == h[:, None, :]).all(-1)
    if (match & ~same_input).any():
        bad = (match & ~same_input).any(1).nonzero().flatten()[:10].tolist()
        raise ValueError(f"the logits of batch rows {bad} equal several rows of the head {label}'s output that come from "
                         "different inputs, so which one the model picked is ambiguous. " + NO_CLOSED_FORM)
    return h, rows_out[picked, pos]


def head_forward(model: nn.Module, head: nn.Linear, inputs, label: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(h, z)`` for one batch from one forward pass (no gradients)."""
    with _recording([head]) as seen, torch.no_grad():
        logits = logits_of(call_model(model, inputs))
    if 0 not in seen:
        raise ValueError(f"the head {label} was not called by the model's forward pass. " + NO_CLOSED_FORM)
    rows = head_rows(*seen[0], logits, label)
    if rows is None:
        raise ValueError(f"the head {label} did not produce the model's output (logits of shape "
                         f"{tuple(logits.shape)}). " + NO_CLOSED_FORM)
    return rows


def find_head(model: nn.Module, inputs) -> tuple[nn.Linear, torch.Tensor, torch.Tensor]:
    """``(head, h, z)`` from one forward pass: the head is the ``nn.Linear`` whose output holds the
    model's logits (the rows are returned too, so the batch need not run again)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("the model has no nn.Linear layer to act as the classifier head; pass head=<module>, or "
                         "targets= to score through other layers")
    with _recording(linears) as seen, torch.no_grad():
        logits = logits_of(call_model(model, inputs))
    exact = [i for i, (_, out) in seen.items() if out is logits]
    candidates = exact or list(seen)
    found = []
    for i in candidates:
        rows = head_rows(*seen[i], logits, module_name(model, linears[i]))
        if rows is not None:
            found.append((i, rows))
    if len(found) == 1:
        i, (h, z) = found[0]
        return linears[i], h, z
    names = [module_name(model, linears[i]) for i, _ in found] or [module_name(model, m) for m in linears[-5:]]
    raise ValueError(f"could not identify the classifier head: {'several' if found else 'no'} nn.Linear layers "
                     f"({names}) produce the model's logits. Pass head=<module> naming the layer. " + NO_CLOSED_FORM)
