"""``imu_fast.unlearn``: one call for a whole unlearning run."""

from __future__ import annotations

from torch import nn

from . import checks, distributed
from .capture.head import check_head, find_head
from .config import PRESETS, UnlearnConfig
from .forget_set import ForgetSet, as_forget_set, check_same_set, prepare_classification
from .methods.checkpoint import Checkpoints
from .methods.common import batchnorm_note, parameter_names, restored_on_error, trainable
from .methods.finetune import InitFn, run_finetune, run_retrain
from .methods.influence_params import InfluenceParams
from .methods.loop import RunControl
from .methods.npo import run_npo
from .methods.random_labels import run_random_labels
from .methods.weighted_ascent import run_weighted_ascent
from .model_io import model_device
from .modes import preserved_modes
from .report import UnlearnReport
from .sketch.config import SketchConfig
from .stages import forget_fingerprint, function_name, model_fingerprint
from .stop import StopCriteria

WEIGHTED_ASCENT = ("imu", "ga", "imu-uniform")
RETAIN_FREE = ("imu", "ga", "imu-uniform", "npo", "rl")
RETAIN_USING = ("ft", "retrain")
# Methods that work with any per-sample loss (loss_fn=, e.g. language models); the others need
# (x, y) classification data.
ANY_LOSS = ("imu", "ga", "imu-uniform", "npo")
# Settings only the influence-weighted ascent loop reads: the other methods refuse a change to them
# rather than silently ignore it (e.g. config=IMU_PAPER with method="npo" would carry alpha=0.2).
_ASCENT_ONLY = ("alpha", "damping", "top_fraction", "clip_quantile", "refresh", "weighting", "backend")


def _resolve_head(model: nn.Module, data: ForgetSet, head: nn.Module | None) -> nn.Module:
    if head is None:
        with preserved_modes(model):
            model.eval()
            batch = next(iter(data.batches()))
            head = find_head(model, prepare_classification(model, batch, model_device(model), data.what).inputs)[0]
    check_head(model, head)
    return head


def _check_settings_used(method: str, cfg: UnlearnConfig) -> None:
    preset = PRESETS[method]
    unused = () if method in WEIGHTED_ASCENT else _ASCENT_ONLY
    unused += () if method == "npo" else ("npo_beta",)
    changed = [f"{name}={getattr(cfg, name)!r}" for name in unused if getattr(cfg, name) != getattr(preset, name)]
    if changed:
        raise ValueError(f"method {method!r} does not use {', '.join(changed)}; leave those settings at their "
                         f"defaults (or pick the method that uses them)")


def _check_sketch(sketch, method: str, cfg: UnlearnConfig) -> None:
    if sketch is None:
        return
    if not isinstance(sketch, SketchConfig):
        raise TypeError(f"sketch must be an imu_fast.SketchConfig, got {type(sketch).__name__}")
    if method not in WEIGHTED_ASCENT or cfg.weighting != "influence":
        raise ValueError(f"sketch= sets how influence weights are computed; method {method!r} with weighting "
                         f"{cfg.weighting!r} computes none")
    if distributed.active():
        raise ValueError("unlearn(sketch=) inside a torch.distributed process group is not supported yet (sketch "
                         "influence is not sharded); run it in one process or leave sketch= out")


def _influence_params(model, data: ForgetSet, cfg: UnlearnConfig, method: str, head, targets, loss_fn,
                      needed: bool, sketch=None):
    """theta_c for this run, or None where the method needs neither a head nor target layers."""
    if targets is not None:
        return InfluenceParams(targets=targets, loss_fn=loss_fn, sketch=sketch)
    if not needed and head is None:
        return None
    if loss_fn is not None:
        raise ValueError(f"method {method!r} with loss_fn= needs targets= (the influence parameters): the "
                         "classifier-head path applies to (x, y) classification data")
    # FT finds the head on retain data so that it never reads a forget sample.
    return InfluenceParams(head=_resolve_head(model, data, head), sketch=sketch)


def _check_stop(stop, method: str, loss_fn) -> StopCriteria | None:
    if stop is None:
        return None
    if not isinstance(stop, StopCriteria):
        raise TypeError(f"stop must be an imu_fast.StopCriteria, got {type(stop).__name__}")
    if stop.reads_forget_set and method in RETAIN_USING:
        raise ValueError(f"method {method!r} never reads the forget set, so it cannot stop on forget accuracy or loss; "
                         "only max_steps applies to it")
    if stop.forget_accuracy_at_most is not None and loss_fn is not None:
        raise ValueError("forget_accuracy_at_most needs classification data; with loss_fn= stop on "
                         "forget_loss_at_least (or max_steps) instead")
    return stop


def _checkpoints(directory, every, model, forget: ForgetSet, retain: ForgetSet | None, method: str,
                 cfg: UnlearnConfig, theta, loss_fn, stop, init_fn, sketch) -> Checkpoints | None:
    """The run's checkpoints, keyed by everything that determines its result."""
    if directory is None:
        return None
    config = {k: v for k, v in vars(cfg).items() if k != "progress"}  # progress bars do not change the run
    settings = {"method": method, "config": config, "theta": None if theta is None else theta.names(model),
                "loss_fn": function_name(loss_fn), "stop": None if stop is None else stop.as_dict(),
                "init_fn": function_name(init_fn), "processes": distributed.world_size(),
                "sketch": None if sketch is None else sketch.to_dict()}
    prints = {"model": model_fingerprint(model)}
    # Retain-using methods never read a forget sample: only its size is part of their run.
    prints["forget"] = {"n": len(forget)} if retain is not None else forget_fingerprint(forget)
    if retain is not None:
        prints["retain"] = forget_fingerprint(retain)
    checkpoints = Checkpoints(directory, every, settings, prints)
    checkpoints.load()
    return checkpoints


def unlearn(
    model: nn.Module,
    forget,
    *,
    method: str = "imu",
    config: UnlearnConfig | None = None,
    head: nn.Module | None = None,
    targets=None,
    loss_fn=None,
    retain=None,
    init_fn: InitFn | None = None,
    stop: StopCriteria | None = None,
    checkpoint_dir=None,
    checkpoint_every: int = 100,
    sketch=None,
    **settings,
) -> UnlearnReport:
    """Unlearn ``forget`` from ``model`` in place and report what was done.

    ``method`` names a preset: ``"imu"`` (the paper's recipe: influence-weighted, updating only
    the influence parameters theta_c), ``"ga"`` (gradient ascent on all parameters, uniform
    weights) or ``"imu-uniform"`` (IMU's loop with uniform weights, the ablation); the other
    baselines of the evaluation protocol: ``"npo"`` (negative preference optimisation, β =
    ``npo_beta``) and ``"rl"`` (descent on random wrong labels), both retain-free; ``"ft"``
    (fine-tune on ``retain``) and ``"retrain"`` (train a re-initialised model on ``retain``;
    ``init_fn`` re-initialises it, else every submodule's ``reset_parameters()``), which need
    ``retain=`` and never read the forget set's samples. The retain-free methods refuse
    ``retain=`` (so nobody believes it was used), and only ``"retrain"`` takes ``init_fn``.

    theta_c is the classifier head (``head``, found automatically if omitted) or, with
    ``targets`` (parameter names, parameters or modules), chosen layers such as a language
    model's attention projections; then ``loss_fn(model, batch)`` gives the per-sample losses
    (e.g. ``imu_fast.lm.causal_lm_losses``). ``scope="head"`` updates theta_c only.

    ``sketch=imu_fast.SketchConfig(...)`` computes the influence weights in sketch space (e.g.
    ``fisher="full"``: a full sketch-space Fisher instead of the diagonal one), for the
    influence-weighted methods.

    ``config`` replaces the preset; keyword ``settings`` override single fields, e.g.
    ``unlearn(model, forget, refresh="batch", epochs=5)``. ``forget`` (and ``retain``) may be any
    form the forget-set pipeline accepts, an IterableDataset included (streamed in its order).

    Only what is asked changes: the optimiser sees exactly the selected parameters that are
    trainable; parameters the user froze (``requires_grad=False``) are never trained and stay
    bit-identical (``report.left_frozen`` names the selected ones); ``report.trained`` lists what
    was updated and ``report.batchnorm`` how BatchNorm statistics behaved. Train/eval modes,
    ``requires_grad`` flags and ``.grad`` are restored afterwards; a run that raises (bad data found
    in a later batch) also puts the weights and buffers back as they were.

    ``config.optimizer`` is ``"sgd"`` (momentum, the authors' vision recipe; the default) or
    ``"adamw"`` (their language-model runs; ``betas``, ``eps``). ``stop`` (a ``StopCriteria``) ends
    the run early once the forget set alone says so: forget accuracy at or below a target, forget
    loss at or above one, or a step budget (``report.stopped_by``, ``report.steps``).

    ``checkpoint_dir`` checkpoints the run atomically every ``checkpoint_every`` batches, at every
    epoch's end and at its end (model, optimiser, weights, random states, step); called again with
    the same directory and the same model, data and settings, a run that was killed resumes from
    its last checkpoint and ends bit for bit where it would have ended (on the CPU); a finished
    run's checkpoint returns its result. A checkpoint of another run is refused, naming what differs.

    Inside a torch.distributed process group (every process calling ``unlearn`` with the same model
    and data, the model plain or wrapped in ``DistributedDataParallel``), each process reads and
    trains on its share of every mini-batch, gradients are summed before each step, and every
    process ends with the same weights (BatchNorm normalises each share with its own statistics,
    as under DDP; buffers are taken from process 0). Fully sharded models (FSDP) are refused.
    """
    if not isinstance(method, str) or method not in PRESETS:
        raise ValueError(f"unknown method {method!r}; choose one of {sorted(PRESETS)}")
    if retain is not None and method in RETAIN_FREE:
        raise ValueError(f"method {method!r} uses only the forget set and does not take retain=; "
                         f"the methods that train on retain data are {list(RETAIN_USING)}")
    if retain is None and method in RETAIN_USING:
        raise ValueError(f"method {method!r} trains on the retain set: pass retain=<the retain set D_r>")
    if init_fn is not None and method != "retrain":
        raise ValueError(f"init_fn applies to method 'retrain' only, not {method!r}")
    if head is not None and targets is not None:
        raise ValueError("give either head= or targets= as the influence parameters, not both")
    if (loss_fn is not None or targets is not None) and method not in ANY_LOSS:
        raise ValueError(f"method {method!r} needs (x, y) classification data; loss_fn= and targets= apply to "
                         f"{list(ANY_LOSS)}")
    if config is not None and not isinstance(config, UnlearnConfig):
        raise TypeError(f"config must be an UnlearnConfig, got {type(config).__name__}")
    cfg = (config or PRESETS[method]).replace(**settings) if settings else (config or PRESETS[method])
    _check_settings_used(method, cfg)
    stop = _check_stop(stop, method, loss_fn)
    checks.integer("checkpoint_every", checkpoint_every, low=1)
    model = distributed.unwrap(model)
    _check_sketch(sketch, method, cfg)
    forget = as_forget_set(forget, batch_size=cfg.batch_size)
    retain = as_forget_set(retain, batch_size=cfg.batch_size, what="retain") if retain is not None else None
    if distributed.active():
        distributed.check_same_weights(model, "the model's weights")
        check_same_set(retain if method in RETAIN_USING else forget)
    report = UnlearnReport(method=method, config=dict(vars(cfg)), n_forget=forget.size or 0,
                           n_kept=0 if method in (*WEIGHTED_ASCENT, *RETAIN_USING) else (forget.size or 0),
                           indices=None if forget.indices is None else forget.indices.clone(),
                           batchnorm=batchnorm_note(model, cfg.freeze_batchnorm))
    if sketch is not None:
        report.config["sketch"] = sketch.to_dict()
    if method == "retrain":
        params = list(model.parameters())
        theta = None
    else:
        needed = cfg.scope == "head" or (method in WEIGHTED_ASCENT and (cfg.weighting == "influence" or cfg.alpha > 0))
        theta = _influence_params(model, retain if method == "ft" else forget, cfg, method, head, targets, loss_fn,
                                  needed, sketch)
        params = list(model.parameters()) if cfg.scope == "all" else theta.parameters(model)
    trained, report.left_frozen = trainable(model, params, method)
    report.trained = parameter_names(model, trained)
    control = RunControl(stop=stop, forget=forget, loss_fn=loss_fn,
                         checkpoints=_checkpoints(checkpoint_dir, checkpoint_every, model, forget, retain, method, cfg,
                                                  theta, loss_fn, stop, init_fn, sketch))
    with restored_on_error(model, trained):
        if method == "retrain":
            run_retrain(model, retain, cfg, report, init_fn, control)
        elif method in WEIGHTED_ASCENT:
            run_weighted_ascent(model, forget, theta, trained, cfg, report, loss_fn, control)
        elif method == "npo":
            run_npo(model, forget, trained, cfg, report, loss_fn, control)
        elif method == "rl":
            run_random_labels(model, forget, trained, cfg, report, control)
        else:
            run_finetune(model, retain, trained, cfg, report, control)
    if forget.size is not None:  # a stream's size is known once it has been read
        report.n_forget = len(forget)
        report.indices = forget.indices.clone()
        if method in ("npo", "rl"):
            report.n_kept = len(forget)
    return report
