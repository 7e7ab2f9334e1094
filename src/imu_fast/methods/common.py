"""Pieces shared by the unlearning loops: which parameters train, the optimiser, train mode."""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from ..modes import preserved_modes

BATCHNORM_DRIFTS = "train-mode forwards: BatchNorm running statistics were updated (the authors' default)"
BATCHNORM_FROZEN = "BatchNorm layers kept in eval mode: running statistics unchanged (freeze_batchnorm=True)"


def parameter_names(model: nn.Module, params: list[nn.Parameter]) -> list[str]:
    names = {}
    for name, p in model.named_parameters():
        names.setdefault(id(p), name)
    return [names.get(id(p), "<not a parameter of the model>") for p in params]


def trainable(model: nn.Module, params: list[nn.Parameter], method: str) -> tuple[list[nn.Parameter], list[str]]:
    """``(parameters to train, names of the selected ones the user froze)``: a frozen parameter is
    never trained; if every selected one is frozen there is nothing to do, which is an error."""
    unique = list({id(p): p for p in params}.values())
    trained = [p for p in unique if p.requires_grad]
    frozen = parameter_names(model, [p for p in unique if not p.requires_grad])
    if not trained:
        raise ValueError(f"method {method!r} would train {frozen[:8]}{' ...' if len(frozen) > 8 else ''}, but every one "
                         "of them is frozen (requires_grad=False); unfreeze the parameters to unlearn with, or choose "
                         "others (head=, targets=, scope=)")
    return trained, frozen


@contextmanager
def training_scope(model: nn.Module, trained: list[nn.Parameter]):
    """Only ``trained`` require gradients inside (others are switched off, never on), and every
    flag, mode and ``.grad`` is restored on exit."""
    chosen = {id(p) for p in trained}
    grads = [(p, p.grad) for p in model.parameters()]
    with preserved_modes(model):
        for p in model.parameters():
            if id(p) not in chosen:
                p.requires_grad_(False)
        try:
            yield
        finally:
            for p, grad in grads:
                p.grad = grad


@contextmanager
def restored_on_error(model: nn.Module, trained: list[nn.Parameter]):
    """A run that fails (bad data found in a later batch, an interrupt) leaves the model as it was:
    the trained parameters and every buffer (BatchNorm statistics) are put back. The copies are
    kept in CPU memory."""
    saved = [(t, t.detach().to("cpu", copy=True)) for t in [*trained, *model.buffers()]]
    try:
        yield
    except BaseException:
        with torch.no_grad():
            for t, value in saved:
                t.copy_(value)
        raise


def make_optimizer(trained: list[nn.Parameter], cfg) -> torch.optim.Optimizer:
    """SGD with momentum (the authors' vision recipe) or AdamW (their language-model runs)."""
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(trained, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(trained, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def train_mode(model: nn.Module, freeze_batchnorm: bool) -> None:
    model.train()
    if freeze_batchnorm:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def has_training_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for m in model.modules())


def batchnorm_note(model: nn.Module, freeze_batchnorm: bool) -> str:
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return "no BatchNorm layers"
    return BATCHNORM_FROZEN if freeze_batchnorm else BATCHNORM_DRIFTS
