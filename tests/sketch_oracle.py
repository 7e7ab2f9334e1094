"""Float64 references for sketches: per-sample gradients by batch-of-one autograd, split by
parameter, then projected with a sketch set's own factors (or the dense JL reference)."""

from __future__ import annotations

import math

import torch
from oracle import classification_loss, one, per_sample_grads

from imu_fast.ops import jl_project_ref
from imu_fast.ops.philox import ROLE_JL
from imu_fast.sketch.layout import stream_of


def grads_by_name(model, samples, names, loss=classification_loss) -> dict[str, torch.Tensor]:
    """{name: (N, *shape)} exact per-sample gradients of the named parameters (aliases allowed)."""
    named = dict(model.named_parameters(remove_duplicate=False))
    params = [named[n] for n in names]
    g = per_sample_grads(model, [one(s) for s in samples], params, loss=loss)
    out, start = {}, 0
    for name, p in zip(names, params):
        out[name] = g[:, start:start + p.numel()].reshape(len(samples), *p.shape)
        start += p.numel()
    return out


def exact_sketches(sketch_set, grads: dict[str, torch.Tensor]) -> torch.Tensor:
    """The N x K sketches of exact gradients: Kronecker blocks P_out^T g_i P_in with the set's
    factors, JL blocks with the dense float64 reference, exact blocks as they are."""
    pieces = []
    for block in sketch_set.layout.blocks:
        g = grads[block.name].double()
        n = g.shape[0]
        if block.kind == "kronecker":
            rows, cols = block.matrix
            p_in, p_out = sketch_set.projection(block.name)
            pieces.append((p_out.T @ g.reshape(n, rows, cols) @ p_in).reshape(n, -1))
        elif block.kind == "jl":
            pieces.append(jl_project_ref(g.reshape(n, -1), k=block.width, seed=sketch_set.config.seed,
                                         stream=stream_of(block.name), role=ROLE_JL))
        else:
            pieces.append(g.reshape(n, -1))
    return sum(pieces) if sketch_set.layout.shared else torch.cat(pieces, dim=1)


def jl_bound(k: int) -> float:
    """Standard deviation of ||R g||^2 / ||g||^2 for a k-row Rademacher JL matrix (at most sqrt(2/k))."""
    return math.sqrt(2.0 / k)
