"""The retain-using references: FT (fine-tune on D_r) and Retrain (train from scratch on D_r).

Both minimise plain cross-entropy over the retain set, L = mean_{i∈B} CE(f_θ(x_i), y_i), with
``cfg``'s optimiser settings; Retrain first re-initialises the model. Neither reads a single forget
sample: the forget set only supplies its size for the report, and ``epoch_forget_loss`` is NaN
(not measured). Like every method behind ``unlearn``, both change the given model in place, and
parameters the user froze keep their values (Retrain re-initialises only the trainable ones).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..config import UnlearnConfig
from ..forget_set import ForgetSet
from ..model_io import model_device
from ..report import UnlearnReport
from ._descent import run_descent
from .loop import RunControl

InitFn = Callable[[nn.Module], "nn.Module | None"]


def run_finetune(model: nn.Module, retain: ForgetSet, trained: list[nn.Parameter], cfg: UnlearnConfig,
                 report: UnlearnReport, control: RunControl | None = None) -> UnlearnReport:
    """FT: continue training the model on the retain set (catastrophic forgetting of D_f, if any).
    L = mean CE on each retain batch; no forget sample is read."""

    def step(out, batch):
        return out.losses.mean(), None  # None: these batches are not forget data

    return run_descent(model, retain, trained, cfg, report, step, control=control)


def reinitialise(model: nn.Module, init_fn: InitFn | None = None, seed: int = 0) -> None:
    """Re-initialises ``model`` in place, seeded by ``seed`` (the caller's RNG state is kept).

    ``init_fn(model)`` either re-initialises the model in place and returns None, or returns a
    freshly built module whose ``state_dict`` is loaded into ``model``. Without it, every submodule
    with a ``reset_parameters()`` method calls it (PyTorch's own initialisation; BatchNorm also
    resets its running statistics); a submodule that owns parameters but has no such method is an
    error, since part of the model would silently keep its trained weights.
    """
    device = model_device(model)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        if init_fn is not None:
            fresh = init_fn(model)
            if isinstance(fresh, nn.Module) and fresh is not model:
                model.load_state_dict(fresh.state_dict())
            elif fresh is not None and fresh is not model:
                raise TypeError(f"init_fn must re-initialise the model in place (return None) or return an "
                                f"nn.Module, got {type(fresh).__name__}")
            return
        stuck = [name or "<model>" for name, m in model.named_modules()
                 if next(m.parameters(recurse=False), None) is not None
                 and not callable(getattr(m, "reset_parameters", None))]
        if stuck:
            raise ValueError(f"cannot re-initialise submodules without reset_parameters(): {stuck[:5]}; "
                             "pass init_fn=<function that re-initialises the model>")
        for m in model.modules():
            if callable(getattr(m, "reset_parameters", None)):
                m.reset_parameters()


def run_retrain(model: nn.Module, retain: ForgetSet, cfg: UnlearnConfig, report: UnlearnReport,
                init_fn: InitFn | None = None, control: RunControl | None = None) -> UnlearnReport:
    """Retrain: re-initialise the model (seeded by ``cfg.seed``), then train it on the retain set.

    The gold standard of the evaluation protocol when ``cfg`` repeats the original training recipe.
    """
    if cfg.scope != "all":
        raise ValueError("retrain trains every parameter from scratch; it cannot use scope='head'")
    frozen = [(p, p.detach().clone()) for p in model.parameters() if not p.requires_grad]
    reinitialise(model, init_fn, cfg.seed)
    with torch.no_grad():  # what the user froze keeps its values: only the trainable part starts afresh
        for p, value in frozen:
            p.copy_(value)
    return run_finetune(model, retain, [p for p in model.parameters() if p.requires_grad], cfg, report, control)
