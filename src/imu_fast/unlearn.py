"""``imu_fast.unlearn``: one call for a whole unlearning run."""

from __future__ import annotations

from torch import nn

from .config import PRESETS, UnlearnConfig
from .forget_data import iterate_batches, model_device, ordered_loader
from .head import check_head, find_head
from .methods.weighted_ascent import run_weighted_ascent
from .modes import preserved_modes
from .report import UnlearnReport


def _resolve_head(model: nn.Module, forget, head: nn.Module | None) -> nn.Module:
    if head is None:
        loader = ordered_loader(forget, 2)
        with preserved_modes(model):
            model.eval()
            _, x, _ = next(iterate_batches(loader, model, model_device(model)))
            head = find_head(model, x)
    check_head(head)
    return head


def unlearn(
    model: nn.Module,
    forget,
    *,
    method: str = "imu",
    config: UnlearnConfig | None = None,
    head: nn.Module | None = None,
    **settings,
) -> UnlearnReport:
    """Unlearn ``forget`` from ``model`` in place and report what was done.

    ``method`` names a preset: ``"imu"`` (the paper's recipe: head-only, influence-weighted),
    ``"ga"`` (gradient ascent on all parameters, uniform weights) or ``"imu-uniform"`` (IMU's loop
    with uniform weights, the ablation). ``config`` replaces the preset; keyword ``settings``
    override single fields, e.g. ``unlearn(model, forget, refresh="batch", epochs=5)``.
    """
    if method not in PRESETS:
        raise ValueError(f"unknown method {method!r}; choose one of {sorted(PRESETS)}")
    cfg = (config or PRESETS[method]).replace(**settings) if settings else (config or PRESETS[method])
    head = _resolve_head(model, forget, head)
    return run_weighted_ascent(model, forget, head, cfg, method)
