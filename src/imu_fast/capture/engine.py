"""The capture engine: one batched forward and backward that hands each selected parameter's
per-sample gradient term to a callback.

Each target layer's output z is handed to the rest of the model through ``_Tap``, an identity
whose backward records dL/dz = B and which also takes ``anchor``, a scalar leaf, as an input.
One ``torch.autograd.grad(sum_i l_i, anchor)`` then runs the backward through every target layer
(every tap lies on a path to the anchor) without computing any weight gradient, and the tap
costs no copy and no reduction. The tap's backward receives the gradient of the value the layer
produced, so in-place operations after a layer (``ReLU(inplace=True)``) cannot corrupt it.

The batch axis of every tapped output is read from its shape, never assumed: a leading size of N
is per sample; a size of 1 in a batch of N > 1 is an output shared by every sample (position
embeddings called with position ids of shape (1, T)), which is expanded to N before the tap so
that each sample's share of the gradient stays separate; anything else is refused.

A layer's terms are emitted as soon as the gradients of all its calls have arrived, so A and B of
one layer can be freed before the next layer's arrive; a parameter used by several layers (tied
weights) is emitted once all its uses are in, as one combined term.

With ``verify`` (worth it on a pass's first batch) the engine checks that it saw every use of
every selected parameter: the autograd graph must reach each parameter exactly once per captured
call. Where it does not (a functional call such as ``F.linear(x, layer.weight)``), or where the
layer's forward is not the one its rule was written for (a subclass that overrides ``forward``, a
norm matched by class name), the backward also computes those parameters' batch gradients and
the terms must add up to them; a mismatch is an error instead of a silently wrong statistic.
The check costs one graph walk, plus weight gradients only for the parameters in doubt.

A computation that knows a parameter's per-sample gradient better than its layer's rule (the
chunked linear cross-entropy of a vocabulary-sized LM head, which never forms the logits) takes
part through the active session: it ``bypass``es the layer, ``expect``s the parameter in its
forward (taking the anchor as an input) and ``provide``s the term in its backward.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Callable

import torch
from torch import nn

from .combined import combine_uses
from .registry import forward_is_the_rules
from .rules import Call
from .selection import Selection, Target, check_samples_independent

# ||sum_i g_i (terms) - batch gradient (autograd)|| / sum_i ||g_i|| above which verification fails.
VERIFY_TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-3}
HALF_TOLERANCE = 5e-2


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


_ACTIVE: ContextVar["CaptureSession | None"] = ContextVar("imu_fast_capture_session", default=None)


def active_session() -> "CaptureSession | None":
    """The capture session whose forward is running, if any."""
    return _ACTIVE.get()


def _expand_axis(t: torch.Tensor, axis: int, n: int) -> torch.Tensor:
    sizes = list(t.shape)
    sizes[axis] = n
    return t.expand(*sizes)


class CaptureSession:
    """Hooks on every target layer for one forward/backward of a batch of ``n`` samples."""

    def __init__(self, model: nn.Module, selection: Selection, n: int, on_term: Callable[[str, object], None], *,
                 backend: str = "auto", verify: bool = False):
        self.model = model
        self.selection = selection
        self.n = n
        self.on_term = on_term
        self.backend = backend
        self.verify = verify
        self.anchor: torch.Tensor | None = None
        self._calls: dict[int, dict[str, list[Call]]] = {}
        self._pending: dict[int, int] = {}
        self._parts: dict[str, list] = {}
        self._expected: dict[str, int] = {}
        self._checks: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._undo: list[Callable[[], None]] = []
        self._flags: list[tuple[nn.Parameter, bool]] = []
        self._module_calls: dict[int, int] = {}
        self._accumulators: dict[str, object] = {}
        self._doubtful: list[str] = []
        self._bypassed: set[int] = set()
        self._external: dict[str, int] = {}
        self._names = {id(sp.param): name for name, sp in selection.params.items()}
        self._token = None
        self._suspended = False

    def __enter__(self) -> "CaptureSession":
        check_samples_independent(self.model)
        # Outputs of selected layers must carry gradients even if the user froze them, and modules with
        # fused inference paths (MultiheadAttention, TransformerEncoderLayer) must not take them.
        self._flags = [(p, p.requires_grad) for p in self.selection.parameters()]
        try:
            for p, _ in self._flags:
                p.requires_grad_(True)
            for target in self.selection.targets:
                self._undo.append(target.rule.install(target.module, self._tap_for(target)))
                if self.verify:
                    self._undo.append(target.module.register_forward_pre_hook(self._counter(target)).remove)
            if self.verify:  # each parameter's gradient accumulator: the node its uses point to
                self._accumulators = {name: sp.param.view_as(sp.param).grad_fn.next_functions[0][0]
                                      for name, sp in self.selection.params.items()}
        except BaseException:
            self.__exit__()
            raise
        self._token = _ACTIVE.set(self)
        return self

    def __exit__(self, *exc) -> None:
        if self._token is not None:
            _ACTIVE.reset(self._token)
            self._token = None
        while self._undo:
            self._undo.pop()()
        for p, flag in self._flags:
            p.requires_grad_(flag)

    # -- computations that provide their own terms --------------------------------------------

    def _anchor(self, device: torch.device) -> torch.Tensor:
        if self.anchor is None:
            self.anchor = torch.zeros((), device=device, requires_grad=True)
        return self.anchor

    def bypass(self, module: nn.Module) -> None:
        """``module``'s output this pass is not its real one (its parameters' terms come from elsewhere)."""
        self._bypassed.add(id(module))

    def expect(self, param: torch.Tensor) -> torch.Tensor | None:
        """In a forward that will ``provide`` ``param``'s term in its backward: the anchor to take as
        an input, or None if ``param`` is not selected."""
        name = self._names.get(id(param))
        if name is None:
            return None
        self._external[name] = self._external.get(name, 0) + 1
        return self._anchor(param.device)

    def selects_only(self, module: nn.Module) -> bool:
        """Whether every selected parameter is used by ``module`` alone (then nothing upstream of it
        needs a gradient; a weight tied to an earlier layer does)."""
        return all(t.module is module for sp in self.selection.params.values() for t, _ in sp.uses)

    def wants_gradient(self, param: torch.Tensor) -> bool:
        """Whether this backward needs ``param``'s batch gradient (to verify its terms)."""
        return self._names.get(id(param)) in self._doubtful

    @contextmanager
    def suspended(self):
        """A forward pass inside that the capture ignores (no taps, no counts, no provisions)."""
        self._suspended = True
        token = _ACTIVE.set(None)
        try:
            yield
        finally:
            _ACTIVE.reset(token)
            self._suspended = False

    def provide(self, param: torch.Tensor, term) -> None:
        name = self._names.get(id(param))
        if name is not None:
            self._receive(name, term)

    # -- forward ----------------------------------------------------------------------------------

    def _tap_for(self, target: Target):
        key = id(target)
        label = f"{type(target.module).__name__} {target.module_name or '(the model)'!r}"

        def tap(piece: str, x: torch.Tensor, y: torch.Tensor, batch_axis: int = 0) -> torch.Tensor:
            if not isinstance(y, torch.Tensor) or not y.is_floating_point():
                raise TypeError(f"layer {label}: expected it to return one floating-point tensor, got "
                                f"{type(y).__name__}")
            if self._suspended or id(target.module) in self._bypassed:
                return y
            size = y.shape[batch_axis] if y.dim() > batch_axis else None
            if size != self.n:
                if size != 1 or x.dim() <= batch_axis or x.shape[batch_axis] != 1:
                    raise ValueError(
                        f"layer {label} produced an output of shape {tuple(y.shape)} in a batch of {self.n} samples: its "
                        f"batch axis {batch_axis} is neither {self.n} (one row per sample) nor 1 (shared by every "
                        "sample), so per-sample gradients are undefined for it; select other layers")
                y, x = _expand_axis(y, batch_axis, self.n), _expand_axis(x, batch_axis, self.n)
            self._anchor(y.device)
            call = Call(x.detach().movedim(batch_axis, 0), y.movedim(batch_axis, 0).shape, y.dtype)
            self._calls.setdefault(key, {}).setdefault(piece, []).append(call)
            self._pending[key] = self._pending.get(key, 0) + 1
            return _Tap.apply(y, self.anchor, lambda grad: self._arrived(target, call, grad.movedim(batch_axis, 0)))

        return tap

    def _counter(self, target: Target):
        def count(module, args):
            if not self._suspended:
                self._module_calls[id(target)] = self._module_calls.get(id(target), 0) + 1

        return count

    def _in_doubt(self, losses: torch.Tensor) -> list[str]:
        """Selected parameters whose uses the capture may not have seen in full (see the module doc)."""
        edges = dict.fromkeys(self._accumulators, 0)
        by_node = {node: name for name, node in self._accumulators.items()}
        seen, stack = set(), [losses.grad_fn]
        while stack:
            node = stack.pop()
            if node is None or node in seen:
                continue
            seen.add(node)
            for child, _ in node.next_functions:
                if child is not None:
                    if child in by_node:
                        edges[by_node[child]] += 1
                    stack.append(child)
        doubtful = []
        for name, sp in self.selection.params.items():
            calls = sum(self._module_calls.get(id(target), 0) for target, _ in sp.uses)
            trusted = all(forward_is_the_rules(target.module) for target, _ in sp.uses)
            if edges[name] != calls or not trusted:
                doubtful.append(name)
        return doubtful

    # -- backward ---------------------------------------------------------------------------------

    def _arrived(self, target: Target, call: Call, grad: torch.Tensor) -> None:
        call.grad = grad.detach()
        key = id(target)
        self._pending[key] -= 1
        if self._pending[key] == 0:
            self._emit(target)

    def _emit(self, target: Target) -> None:
        calls = self._calls.pop(id(target))
        self._pending.pop(id(target), None)
        for local, term in target.rule.terms(target.module, calls, list(target.params)).items():
            self._receive(target.params[local], term)

    def _receive(self, name: str, term) -> None:
        """One use's term of ``name``; the parameter's term is delivered once every use is in."""
        if self._expected[name] == 1:
            self._deliver(name, term)
            return
        parts = self._parts.setdefault(name, [])
        parts.append(term)
        if len(parts) == self._expected[name]:
            del self._parts[name]
            self._deliver(name, combine_uses(parts, self.selection.params[name].param.shape))

    def _deliver(self, name: str, term) -> None:
        if name in self._doubtful:
            self._checks[name] = (term.grad_sum().detach(), term.norm_sq(self.backend).clamp_min(0).sqrt().sum())
        self.on_term(name, term)

    def backward(self, losses: torch.Tensor) -> None:
        """Backpropagates sum_i l_i through every target layer, emitting every selected term."""
        by_key = {id(t): t for t in self.selection.targets}
        for name, sp in self.selection.params.items():
            self._expected[name] = (sum(1 for target, _ in sp.uses if id(target) in self._calls)
                                    + self._external.get(name, 0))
        silent = [name for name, count in self._expected.items() if count == 0]
        if silent:
            layers = sorted({t.module_name or "(the model)" for name in silent
                             for t, _ in self.selection.params[name].uses})
            raise RuntimeError(f"layers {layers} were not called by the loss function, so parameters {silent} get "
                               "no per-sample gradient; select layers the forward pass uses")
        if self.verify and losses.requires_grad:
            self._doubtful = self._in_doubt(losses)
        params = [self.selection.params[name].param for name in self._doubtful]
        grads = [None] * len(params)
        if self.anchor is not None and losses.requires_grad:
            found = torch.autograd.grad(losses.sum(), [self.anchor, *params], allow_unused=True)
            grads = list(found[1:])
        for key in list(self._calls):  # outputs the loss never reached: their gradients are zero
            self._emit(by_key[key])
        self._check_sums(grads)

    def _check_sums(self, grads: list) -> None:
        for name, grad in zip(self._doubtful, grads):
            sp = self.selection.params[name]
            summed, scale = self._checks[name]
            grad = torch.zeros_like(summed) if grad is None else grad.reshape(summed.shape).to(summed.dtype)
            tol = VERIFY_TOLERANCE.get(sp.param.dtype, HALF_TOLERANCE)
            err = float((summed.double() - grad.double()).norm() / scale.double().clamp_min(1e-300))
            if err > tol:
                places = ", ".join(f"{type(t.module).__name__} {t.module_name!r}" for t, _ in sp.uses)
                raise RuntimeError(
                    f"the per-sample gradients of parameter {name!r} (through {places}) do not add up to its batch "
                    f"gradient (relative error {err:.2e} > {tol:.0e}): the model uses it outside the layers whose "
                    "forward this package understands (a functional call such as F.linear(x, layer.weight), or a "
                    "subclass that changes forward); select other parameters")


def capture_terms(model: nn.Module, selection: Selection, compute_losses: Callable[[], torch.Tensor], n: int,
                  on_term: Callable[[str, object], None], *, backend: str = "auto", verify: bool = False
                  ) -> torch.Tensor:
    """Runs ``compute_losses()`` (the forward of one batch of ``n`` samples) under capture, then the
    backward; ``on_term(name, term)`` gets each selected parameter's term. Returns the losses."""
    with CaptureSession(model, selection, n, on_term, backend=backend, verify=verify) as session, \
            torch.enable_grad():
        losses = compute_losses()
        session.backward(losses)
    return losses.detach()
