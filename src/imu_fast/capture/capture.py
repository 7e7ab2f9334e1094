"""Hooks that record each target layer's inputs A and output gradients B in one batched pass.

Forward hooks keep every call's input and output; one ``torch.autograd.grad`` of sum_i l_i with
respect to those outputs delivers the output gradients, so no weight gradient is computed. If an
in-place operation rewrote an output after its layer (e.g. ``ReLU(inplace=True)``), the tensor
no longer holds the value the layer produced; ``InPlaceOutput`` is raised and the caller repeats
the pass with ``copy_outputs=True``, where each hook hands the rest of the model a copy of the
output and the original stays untouched.
"""

from __future__ import annotations

import torch

from .selection import Target


class InPlaceOutput(RuntimeError):
    """A target layer's output was modified in place after the layer ran."""


class LayerCapture:
    def __init__(self, targets: list[Target], *, copy_outputs: bool = False):
        self.targets = targets
        self.copy_outputs = copy_outputs
        self.inputs: dict[int, list[torch.Tensor]] = {}
        self.grads: dict[int, list[torch.Tensor | None]] = {}
        self.outputs: list[tuple[torch.Tensor, int, int]] = []  # (output, its version, module key)
        self._handles = []

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
            if not isinstance(output, torch.Tensor):
                raise TypeError(f"{target.module_name}: expected the layer to return one tensor")
            self.inputs.setdefault(key, []).append(args[0].detach())
            self.outputs.append((output, output._version, key))
            return output.clone() if self.copy_outputs else None

        return hook

    def backward(self, losses: torch.Tensor) -> None:
        """Backpropagates sum_i l_i to the captured outputs and keeps their gradients."""
        if not self.outputs:
            raise RuntimeError("no target layer took part in the loss: check the selected parameters")
        if any(out._version != version for out, version, _ in self.outputs):
            raise InPlaceOutput("a target layer's output was modified in place")
        outs = [out for out, *_ in self.outputs]
        for (out, _, key), grad in zip(self.outputs, torch.autograd.grad(losses.sum(), outs, allow_unused=True)):
            # An output the loss does not depend on has a zero gradient.
            self.grads.setdefault(key, []).append(torch.zeros_like(out) if grad is None else grad.detach())

    def terms(self) -> dict[str, object]:
        """Full parameter name -> per-sample gradient term, for every selected parameter."""
        out = {}
        for target in self.targets:
            key = id(target.module)
            if key not in self.inputs:
                raise RuntimeError(f"layer {target.module_name!r} was not called by the loss function")
            for local, term in target.rule.terms(target.module, self.inputs[key], self.grads[key],
                                                 list(target.params)).items():
                out[target.params[local]] = term
        return out
