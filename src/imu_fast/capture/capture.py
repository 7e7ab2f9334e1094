"""Hooks that record each target layer's inputs A and output gradients B in one batched pass.

Each target layer's output z is handed to the rest of the model through ``_Tap``, an identity
whose backward records dL/dz = B and which also takes ``anchor``, a scalar leaf, as an input.
One ``torch.autograd.grad(sum_i l_i, anchor)`` then runs the backward through every target layer
(every tap lies on a path to the anchor) without computing any weight gradient, and the tap
costs no copy and no reduction. The tap's backward receives the gradient of the value the layer
produced, so in-place operations after a layer (``ReLU(inplace=True)``) cannot corrupt it.

Gradient terms are handed to ``on_term(name, term)`` as soon as a layer's B arrives (for a layer
called once per forward), so A and B of one layer can be freed before the next layer's arrive:
peak memory stays near that of a plain forward and backward.
"""

from __future__ import annotations

from typing import Callable

import torch

from .selection import Target


class _Tap(torch.autograd.Function):
    """Identity on ``z`` whose backward hands dL/dz to ``arrived``; ``anchor`` only links it to the
    tensor the backward is asked for (its gradient, zero, is never used)."""

    @staticmethod
    def forward(ctx, z, anchor, arrived):
        ctx.arrived = arrived
        return z.detach()  # shares z's storage: no copy

    @staticmethod
    def backward(ctx, grad):
        ctx.arrived(grad)
        return grad, grad.new_zeros(()), None


class LayerCapture:
    def __init__(self, targets: list[Target], on_term: Callable[[str, object], None]):
        self.targets = targets
        self.on_term = on_term
        self.inputs: dict[int, list[torch.Tensor]] = {}
        self.grads: dict[int, list[torch.Tensor | None]] = {}
        self.anchor: torch.Tensor | None = None
        self._handles = []
        self._by_key = {id(t.module): t for t in targets}

    def __enter__(self) -> "LayerCapture":
        for target in self.targets:
            for p in target.module.parameters(recurse=False):
                p.requires_grad_(True)  # outputs must carry gradients even for frozen layers
            self._handles.append(target.module.register_forward_hook(self._forward_hook(target)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _forward_hook(self, target: Target):
        key = id(target.module)

        def hook(module, args, output):
            if not args or not isinstance(args[0], torch.Tensor):
                raise TypeError(f"{target.module_name}: expected a tensor as the first input")
            if not isinstance(output, torch.Tensor) or not output.is_floating_point():
                raise TypeError(f"{target.module_name}: expected the layer to return one floating-point tensor")
            calls = self.inputs.setdefault(key, [])
            grads = self.grads.setdefault(key, [])
            slot = len(calls)
            calls.append(args[0].detach())
            grads.append(None)
            if not output.requires_grad:
                return None
            if self.anchor is None:
                self.anchor = torch.zeros((), device=output.device, requires_grad=True)
            return _Tap.apply(output, self.anchor, lambda grad, slot=slot: self._arrived(key, slot, grad))

        return hook

    def _arrived(self, key: int, slot: int, grad: torch.Tensor) -> None:
        grads = self.grads[key]
        grads[slot] = grad.detach()
        if len(grads) == 1:  # the usual case: one call, so this layer's terms are complete now
            self._emit(key)

    def _emit(self, key: int) -> None:
        target = self._by_key[key]
        inputs, grads = self.inputs.pop(key), self.grads.pop(key)
        grads = [g if g is not None else self._zero_grad(target, x) for g, x in zip(grads, inputs)]
        for local, term in target.rule.terms(target.module, inputs, grads, list(target.params)).items():
            self.on_term(target.params[local], term)

    @staticmethod
    def _zero_grad(target: Target, x: torch.Tensor) -> torch.Tensor:
        # An output the loss does not depend on gets a zero gradient of the output's shape.
        with torch.no_grad():
            return torch.zeros_like(target.module(x))

    def backward(self, losses: torch.Tensor) -> None:
        """Backpropagates sum_i l_i through every target layer, emitting every selected term."""
        missing = [t.module_name for t in self.targets if id(t.module) not in self.inputs]
        if missing:
            raise RuntimeError(f"layers {missing} were not called by the loss function")
        if self.anchor is not None:
            torch.autograd.grad(losses.sum(), [self.anchor], allow_unused=True)
        for key in list(self.inputs):  # layers called several times, or not reached by the loss
            self._emit(key)
