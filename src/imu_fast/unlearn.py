"""``imu_fast.unlearn``: one call for a whole unlearning run."""

from __future__ import annotations

from torch import nn

from .config import PRESETS, UnlearnConfig
from .forget_data import iterate_batches, model_device, ordered_loader
from .head import check_head, find_head
from .methods.finetune import InitFn, run_finetune, run_retrain
from .methods.npo import run_npo
from .methods.random_labels import run_random_labels
from .methods.weighted_ascent import run_weighted_ascent
from .modes import preserved_modes
from .report import UnlearnReport

WEIGHTED_ASCENT = ("imu", "ga", "imu-uniform")
RETAIN_FREE = ("imu", "ga", "imu-uniform", "npo", "rl")
RETAIN_USING = ("ft", "retrain")
# Settings only the influence-weighted ascent loop reads: the other methods refuse a change to them
# rather than silently ignore it (e.g. config=IMU_PAPER with method="npo" would carry alpha=0.2).
_ASCENT_ONLY = ("alpha", "damping", "top_fraction", "clip_quantile", "refresh", "weighting", "backend")


def _resolve_head(model: nn.Module, forget, head: nn.Module | None) -> nn.Module:
    if head is None:
        loader = ordered_loader(forget, 2)
        with preserved_modes(model):
            model.eval()
            _, x, _ = next(iterate_batches(loader, model, model_device(model)))
            head = find_head(model, x)
    check_head(head)
    return head


def _check_settings_used(method: str, cfg: UnlearnConfig) -> None:
    preset = PRESETS[method]
    unused = () if method in WEIGHTED_ASCENT else _ASCENT_ONLY
    unused += () if method == "npo" else ("npo_beta",)
    changed = [f"{name}={getattr(cfg, name)!r}" for name in unused if getattr(cfg, name) != getattr(preset, name)]
    if changed:
        raise ValueError(f"method {method!r} does not use {', '.join(changed)}; leave those settings at their "
                         f"defaults (or pick the method that uses them)")


def unlearn(
    model: nn.Module,
    forget,
    *,
    method: str = "imu",
    config: UnlearnConfig | None = None,
    head: nn.Module | None = None,
    retain=None,
    init_fn: InitFn | None = None,
    **settings,
) -> UnlearnReport:
    """Unlearn ``forget`` from ``model`` in place and report what was done.

    ``method`` names a preset: ``"imu"`` (the paper's recipe: head-only, influence-weighted),
    ``"ga"`` (gradient ascent on all parameters, uniform weights) or ``"imu-uniform"`` (IMU's loop
    with uniform weights, the ablation); the other baselines of the evaluation protocol:
    ``"npo"`` (negative preference optimisation, β = ``npo_beta``) and ``"rl"`` (descent on random
    wrong labels), both retain-free; ``"ft"`` (fine-tune on ``retain``) and ``"retrain"`` (train a
    re-initialised model on ``retain``; ``init_fn`` re-initialises it, else every submodule's
    ``reset_parameters()``), which need ``retain=`` and never read the forget set's samples.
    The retain-free methods refuse ``retain=`` (so nobody believes it was used), and only
    ``"retrain"`` takes ``init_fn``.

    ``config`` replaces the preset; keyword ``settings`` override single fields, e.g.
    ``unlearn(model, forget, refresh="batch", epochs=5)``. ``head`` names the classifier head
    (found automatically if omitted); the baselines only need it with ``scope="head"``.
    """
    if method not in PRESETS:
        raise ValueError(f"unknown method {method!r}; choose one of {sorted(PRESETS)}")
    if retain is not None and method in RETAIN_FREE:
        raise ValueError(f"method {method!r} uses only the forget set and does not take retain=; "
                         f"the methods that train on retain data are {list(RETAIN_USING)}")
    if retain is None and method in RETAIN_USING:
        raise ValueError(f"method {method!r} trains on the retain set: pass retain=<the retain set D_r>")
    if init_fn is not None and method != "retrain":
        raise ValueError(f"init_fn applies to method 'retrain' only, not {method!r}")
    cfg = (config or PRESETS[method]).replace(**settings) if settings else (config or PRESETS[method])
    _check_settings_used(method, cfg)
    if method in WEIGHTED_ASCENT:
        # Plain GA (all parameters, uniform weights, no L1 term) needs no classifier head.
        needs_head = cfg.scope == "head" or cfg.weighting == "influence" or cfg.alpha > 0
        if needs_head or head is not None:
            head = _resolve_head(model, forget, head)
        return run_weighted_ascent(model, forget, head, cfg, method)
    if method == "retrain":
        return run_retrain(model, forget, retain, None, cfg, init_fn)
    if cfg.scope == "head" or head is not None:
        # FT finds the head on retain data so that it never reads a forget sample.
        head = _resolve_head(model, retain if method == "ft" else forget, head)
    if method == "npo":
        return run_npo(model, forget, head, cfg)
    if method == "rl":
        return run_random_labels(model, forget, head, cfg)
    return run_finetune(model, forget, retain, head, cfg)
