"""One small rule per layer type: captured (input, output gradient) -> per-sample gradient terms.

Most layers are tapped at their output, with their first input recorded (``OutputRule``). Every
rule flattens a call's extra axes into a token axis T and concatenates repeated calls of the same
module along T, since a module applied twice has g_i = sum over both calls.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .registry import register, register_if
from .terms import EmbeddingTerm, OuterTerm, VectorTerm


@dataclass
class Call:
    """One call of a captured piece: its input and the gradient of its output, both batch-first."""

    x: torch.Tensor
    out_shape: torch.Size
    out_dtype: torch.dtype
    grad: torch.Tensor | None = None

    def output_grad(self) -> torch.Tensor:
        # An output the loss does not depend on has a zero gradient.
        if self.grad is None:
            return torch.zeros(self.out_shape, dtype=self.out_dtype, device=self.x.device)
        return self.grad


def _tokens(x: torch.Tensor, width: int) -> torch.Tensor:
    """(N, ..., width) -> (N, T, width)."""
    if x.dim() < 2:
        raise ValueError(f"expected a batched input (N, ..., {width}), got shape {tuple(x.shape)}")
    return x.reshape(x.shape[0], -1, width)


def _cat_tokens(parts: list[torch.Tensor]) -> torch.Tensor:
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


def first_input(args: tuple, kwargs: dict):
    if args:
        return args[0]
    return next(iter(kwargs.values()), None)


class OutputRule:
    """Taps the module's output; the recorded input is its first argument."""

    def install(self, module: nn.Module, tap):
        def hook(module, args, kwargs, output):
            x = first_input(args, kwargs)
            if not isinstance(x, torch.Tensor):
                raise TypeError(f"{type(module).__name__}: expected a tensor as the first input, got {type(x).__name__}")
            return tap("out", x, output)

        return module.register_forward_hook(hook, with_kwargs=True).remove

    def terms(self, module, calls, wanted):
        calls = calls["out"]
        return self.call_terms(module, [c.x for c in calls], [c.output_grad() for c in calls], wanted)

    def call_terms(self, module, inputs, grads, wanted) -> dict:
        raise NotImplementedError


class _OuterWithBias(OutputRule):
    """Shared shape of Linear-like rules: weight = outer term, bias = summed output gradients."""

    def param_names(self, module):
        return [n for n in ("weight", "bias") if getattr(module, n, None) is not None]

    def activations(self, module, x) -> torch.Tensor:
        raise NotImplementedError

    def backprops(self, module, g) -> torch.Tensor:
        raise NotImplementedError

    def weight_term(self, a: torch.Tensor, b: torch.Tensor, module) -> OuterTerm:
        return OuterTerm(a, b, module.weight.shape)  # weight stored (d_out, d_in): g_i = B_i^T A_i

    def call_terms(self, module, inputs, grads, wanted):
        a = _cat_tokens([self.activations(module, x) for x in inputs])
        b = _cat_tokens([self.backprops(module, g) for g in grads]).to(a.dtype)
        out = {}
        if "weight" in wanted:
            out["weight"] = self.weight_term(a, b, module)
        if "bias" in wanted:
            out["bias"] = VectorTerm(b.sum(1), module.bias.shape)
        return out


@register(nn.Linear)
class LinearRule(_OuterWithBias):
    name = "Linear"

    def activations(self, module, x):
        return _tokens(x, module.in_features)

    def backprops(self, module, g):
        return _tokens(g, module.out_features)


def _is_hf_conv1d(module: nn.Module) -> bool:
    weight = getattr(module, "weight", None)
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf") and weight is not None and weight.dim() == 2


@register_if(_is_hf_conv1d)
class HFConv1DRule(_OuterWithBias):
    """GPT-2's Conv1D: y = x @ W + b with W stored as (d_in, d_out)."""

    name = "Conv1D (Hugging Face GPT-2)"
    fixed_forward = True  # transformers' Conv1D is always addmm(bias, x, weight)

    def weight_term(self, a, b, module):
        return OuterTerm(b, a, module.weight.shape)  # weight stored (d_in, d_out): g_i = A_i^T B_i

    def activations(self, module, x):
        return _tokens(x, module.weight.shape[0])

    def backprops(self, module, g):
        return _tokens(g, module.weight.shape[1])


@register(nn.Conv2d)
class Conv2dRule(_OuterWithBias):
    """Conv2d as a linear map applied at every output position (positions are tokens)."""

    name = "Conv2d"

    def _check(self, module):
        if module.groups != 1:
            raise NotImplementedError(f"Conv2d with groups={module.groups} is not supported yet (groups=1 only)")
        if module.padding_mode != "zeros":
            raise NotImplementedError(f"Conv2d with padding_mode={module.padding_mode!r} is not supported (zeros only)")
        if isinstance(module.padding, str):
            raise NotImplementedError("Conv2d with string padding ('same'/'valid') is not supported; give integers")

    def activations(self, module, x):
        self._check(module)
        if x.dim() != 4:
            raise ValueError(f"Conv2d input must be batched (N, C, H, W), got shape {tuple(x.shape)}")
        cols = F.unfold(x, module.kernel_size, module.dilation, module.padding, module.stride)
        return cols.mT  # N x L x (C_in kh kw)

    def backprops(self, module, g):
        return g.reshape(g.shape[0], g.shape[1], -1).mT  # N x L x C_out


@register(nn.Embedding)
class EmbeddingRule(OutputRule):
    name = "Embedding"

    def param_names(self, module):
        return ["weight"]

    def call_terms(self, module, inputs, grads, wanted):
        if module.max_norm is not None or module.scale_grad_by_freq:
            raise NotImplementedError("Embedding with max_norm or scale_grad_by_freq is not supported")
        idx = _cat_tokens([x.reshape(x.shape[0], -1) for x in inputs])
        b = _cat_tokens([_tokens(g, module.embedding_dim) for g in grads])
        if module.padding_idx is not None:
            # torch gives the padding row no gradient; drop those tokens the same way.
            b = b * (idx != module.padding_idx).unsqueeze(-1)
        return {"weight": EmbeddingTerm(idx, b, module.num_embeddings, module.weight.shape)}


class _ElementwiseAffine(OutputRule):
    """y = weight * xhat (+ bias) over the trailing normalised axes: g_i(weight) = sum_t xhat * b."""

    def param_names(self, module):
        return [n for n in ("weight", "bias") if getattr(module, n, None) is not None]

    def normalized(self, module, x) -> torch.Tensor:
        raise NotImplementedError

    def call_terms(self, module, inputs, grads, wanted):
        width = module.weight.numel()
        xhat = _cat_tokens([_tokens(self.normalized(module, x), width) for x in inputs])
        b = _cat_tokens([_tokens(g, width) for g in grads]).to(xhat.dtype)
        out = {}
        if "weight" in wanted:
            out["weight"] = VectorTerm((xhat * b).sum(1), module.weight.shape)
        if "bias" in wanted:
            out["bias"] = VectorTerm(b.sum(1), module.bias.shape)
        return out


@register(nn.LayerNorm)
class LayerNormRule(_ElementwiseAffine):
    name = "LayerNorm"

    def normalized(self, module, x):
        return F.layer_norm(x, module.normalized_shape, None, None, module.eps)


def _rms_eps(module, x):
    eps = getattr(module, "eps", None)
    if eps is None:
        eps = getattr(module, "variance_epsilon", None)
    return torch.finfo(x.dtype).eps if eps is None else eps


def _rms_normalized(module, x, compute_dtype):
    """x / rms(x) computed the way the layer itself computes it, so the gradient matches exactly."""
    dims = tuple(range(-len(module.weight.shape), 0))
    xc = x.to(compute_dtype)
    return (xc * torch.rsqrt(xc.pow(2).mean(dims, keepdim=True) + _rms_eps(module, x))).to(x.dtype)


if hasattr(nn, "RMSNorm"):

    @register(nn.RMSNorm)
    class RMSNormRule(_ElementwiseAffine):
        name = "RMSNorm"

        def normalized(self, module, x):
            # torch's RMSNorm works in the input dtype, upcasting half precision.
            half = x.dtype in (torch.float16, torch.bfloat16)
            return _rms_normalized(module, x, torch.float32 if half else x.dtype)


def _is_rmsnorm_style(module: nn.Module) -> bool:
    weight = getattr(module, "weight", None)
    return type(module).__name__.endswith("RMSNorm") and isinstance(weight, torch.Tensor) and (
        hasattr(module, "variance_epsilon") or hasattr(module, "eps")
    )


@register_if(_is_rmsnorm_style)
class RMSNormStyleRule(_ElementwiseAffine):
    """RMSNorm layers of other libraries (e.g. LlamaRMSNorm): y = weight * x / rms(x), where the
    normalisation runs in float32 whatever the input dtype, as Hugging Face's layers do."""

    name = "RMSNorm-style (class name ending in RMSNorm)"

    def normalized(self, module, x):
        return _rms_normalized(module, x, torch.float32)
