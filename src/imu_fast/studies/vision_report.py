"""The vision study's tables and statements, computed from the results ``runs.json`` holds."""

from __future__ import annotations

import math
from typing import Iterable

from .vision_matched import Matched, compare_matched, describe_comparison, mean_std, signed, utility_at_forgetting

METRICS = ("UA", "RA", "TA", "MIA")
RETRAIN_LEVEL = "retrain"
# (A, B) pairs the statement compares at matched forgetting; the first is the headline.
COMPARISONS = (("imu", "ga"), ("imu-a0", "ga"), ("imu", "imu-uniform"), ("imu-a0", "imu-uniform-a0"),
               ("imu-sketch", "ga"), ("imu-sketch", "imu"))


# ---------------------------------------------------------------------------------------------
# Selecting and aggregating runs


def cells_of(results: dict, scenario: str) -> list[dict]:
    return sorted((c for c in results["cells"] if c["scenario"] == scenario), key=lambda c: c["seed"])


def runs_of(results: dict, scenario: str, variant: str, seed: int | None = None,
            phases: Iterable[str] = ("sweep", "refine", "reference")) -> list[dict]:
    phases = set(phases)
    return [r for r in results["runs"] if r["scenario"] == scenario and r["variant"] == variant
            and r["phase"] in phases and (seed is None or r["seed"] == seed)]


def _values(runs: list[dict], key: str) -> list[float]:
    out = []
    for r in runs:
        if key in METRICS or key == "TA_forgotten_class":
            if r["metrics"] is not None and key in r["metrics"]:
                out.append(r["metrics"][key])
        elif r.get(key) is not None:
            out.append(r[key])
    return out


def aggregate(runs: list[dict]) -> dict:
    """Mean and std over the given runs (one per seed) of every metric, Avg. Gap and the times."""
    keys = (*METRICS, "TA_forgotten_class", "avg_gap", "influence_seconds", "update_seconds")
    agg = {k: mean_std(_values(runs, k)) for k in keys}
    agg["n"] = len(runs)
    agg["n_failed"] = sum(r["metrics"] is None for r in runs)
    return agg


def sweep_lrs(results: dict, variant: str) -> list[float]:
    return results["variants"][variant]["lrs"]


def best_lr(results: dict, scenario: str, variant: str) -> float | None:
    """The swept learning rate with the lowest Avg. Gap averaged over seeds (a failed run counts as infinite)."""
    best, best_gap = None, math.inf
    for lr in sweep_lrs(results, variant):
        runs = [r for r in runs_of(results, scenario, variant, phases=("sweep",)) if r["lr"] == lr]
        if not runs:
            continue
        gaps = [r["avg_gap"] if r["avg_gap"] is not None else math.inf for r in runs]
        gap = sum(gaps) / len(gaps)
        if gap < best_gap:
            best, best_gap = lr, gap
    return best


# ---------------------------------------------------------------------------------------------
# Matched forgetting


def level_target(cell: dict, level) -> float:
    return cell["retrain"]["UA"] if level == RETRAIN_LEVEL else float(level)


def matched_readings(results: dict, scenario: str, variant: str, level, key: str = "TA") -> list[Matched]:
    """One reading per seed (seed order) of ``variant``'s curve at UA = the level's target."""
    out = []
    for cell in cells_of(results, scenario):
        runs = [r for r in runs_of(results, scenario, variant, cell["seed"], ("sweep", "refine"))
                if r["metrics"] is not None]
        points = [(0.0, cell["original"]), *sorted(((r["lr"], r["metrics"]) for r in runs), key=lambda p: p[0])]
        out.append(utility_at_forgetting([m["UA"] for _, m in points], [m[key] for _, m in points],
                                         level_target(cell, level)))
    return out


def levels(results: dict) -> list:
    return [RETRAIN_LEVEL, *results["settings"]["fixed_levels"]]


def matched_summary(results: dict) -> dict:
    """Everything the matched-forgetting section shows, in JSON form (also stored in runs.json)."""
    out = {}
    for scenario in results["scenarios"]:
        per_variant = {}
        for variant in results["variants"]:
            per_level = {}
            for level in levels(results):
                entry = {}
                for key in ("TA", "RA"):
                    readings = matched_readings(results, scenario, variant, level, key)
                    valid = [m.value for m in readings if m.valid]
                    entry[key] = {
                        "mean_std": mean_std(valid), "n_valid": len(valid), "n_seeds": len(readings),
                        "per_seed": [{"value": m.value if m.reached else None, "valid": m.valid,
                                      "lo_ua": m.lo_ua if m.reached else None, "hi_ua": m.hi_ua if m.reached else None,
                                      "first_run_value": m.first_value if m.reached else None} for m in readings],
                        "first_run_mean_std": mean_std([m.first_value for m in readings if m.reached]),
                        "n_reached": sum(m.reached for m in readings),
                    }
                per_level[str(level)] = entry
            per_variant[variant] = per_level
        comparisons = {}
        for a, b in COMPARISONS:
            if a in results["variants"] and b in results["variants"]:
                for key in ("TA", "RA"):
                    comp = compare_matched(matched_readings(results, scenario, a, RETRAIN_LEVEL, key),
                                           matched_readings(results, scenario, b, RETRAIN_LEVEL, key))
                    comparisons[f"{a} vs {b} {key}"] = {
                        "a_values": comp.a_values, "b_values": comp.b_values, "diff_mean_std": comp.diff,
                        "relative_percent": comp.relative_percent, "n_paired": comp.n_paired,
                        "n_seeds": comp.n_seeds}
        out[scenario] = {"variants": per_variant, "comparisons": comparisons}
    return _json_safe(out)


def _json_safe(obj):
    """NaN -> None (strict JSON), tuples -> lists."""
    if isinstance(obj, float):
        return None if not math.isfinite(obj) else obj
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


# ---------------------------------------------------------------------------------------------
# Markdown


def fmt(ms: tuple[float, float], digits: int = 2) -> str:
    m, s = ms
    if m is None or not math.isfinite(m):
        return "—"
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _label(results: dict, variant: str) -> str:
    return results["variants"][variant]["label"]


def _metric_cells(agg: dict, with_class: bool) -> list[str]:
    cells = [fmt(agg[k]) for k in METRICS]
    if with_class:
        cells.append(fmt(agg["TA_forgotten_class"]))
    cells += [fmt(agg["avg_gap"]), fmt(agg["influence_seconds"], 3), fmt(agg["update_seconds"], 3)]
    return cells


def _metric_header(with_class: bool) -> list[str]:
    return ["UA", "RA", "TA", "MIA", *(["TA forgotten class"] if with_class else []),
            "Avg. Gap", "influence (s)", "update (s)"]


def main_table(results: dict, scenario: str) -> str:
    with_class = scenario == "class"
    rows = []
    for ref in ("original", "retrain"):
        runs = runs_of(results, scenario, ref, phases=("reference",))
        rows.append([_label_ref(ref), "—", *_metric_cells(aggregate(runs), with_class)])
    for variant in results["variants"]:
        lr = best_lr(results, scenario, variant)
        runs = [r for r in runs_of(results, scenario, variant, phases=("sweep",)) if r["lr"] == lr]
        rows.append([_label(results, variant), f"{lr:g}" if lr is not None else "—",
                     *_metric_cells(aggregate(runs), with_class)])
    return _table(["method", "lr", *_metric_header(with_class)], rows)


def oracle_table(results: dict, scenario: str) -> str:
    """Each method's lowest-Avg.-Gap run per seed over every learning rate tried (sweep and refinement).

    An optimistic choice (it looks at Retrain to pick the learning rate per seed), shown beside the
    common-lr table because the learning rate where a method starts to forget differs between seeds.
    """
    with_class = scenario == "class"
    rows = []
    for variant in results["variants"]:
        best = []
        for cell in cells_of(results, scenario):
            runs = [r for r in runs_of(results, scenario, variant, cell["seed"], ("sweep", "refine"))
                    if r["avg_gap"] is not None]
            if runs:
                best.append(min(runs, key=lambda r: (r["avg_gap"], r["lr"])))
        lrs = ", ".join(f"{r['lr']:.3g}" for r in best)
        rows.append([_label(results, variant), lrs, *_metric_cells(aggregate(best), with_class)])
    return _table(["method", "lr per seed", *_metric_header(with_class)], rows)


def _label_ref(ref: str) -> str:
    return {"original": "Original", "retrain": "Retrain"}[ref]


def sweep_table(results: dict, scenario: str) -> str:
    with_class = scenario == "class"
    rows = []
    for variant in results["variants"]:
        best = best_lr(results, scenario, variant)
        for lr in sweep_lrs(results, variant):
            runs = [r for r in runs_of(results, scenario, variant, phases=("sweep",)) if r["lr"] == lr]
            agg = aggregate(runs)
            mark = " (best)" if lr == best else ""
            if variant == "imu" and lr == 0.01:
                mark += " (authors' default)"
            failed = f" [{agg['n_failed']} failed]" if agg["n_failed"] else ""
            rows.append([_label(results, variant), f"{lr:.4g}{mark}{failed}", *_metric_cells(agg, with_class)])
    return _table(["method", "lr", *_metric_header(with_class)], rows)


def _matched_cell(entry: dict) -> str:
    cell = fmt(tuple(v if v is not None else math.nan for v in entry["mean_std"]))
    if entry["n_valid"] < entry["n_seeds"]:
        cell += f" ({entry['n_valid']}/{entry['n_seeds']})"
    return cell


def matched_table(results: dict, matched: dict, scenario: str) -> str:
    lv = levels(results)
    header = ["method", "TA @ Retrain UA", "RA @ Retrain UA", "first run ≥ Retrain UA: TA",
              *[f"TA @ UA {level:g}" for level in lv[1:]]]
    rows = []
    for variant in results["variants"]:
        e = matched[scenario]["variants"][variant]
        first = e[RETRAIN_LEVEL]["TA"]
        first_cell = fmt(tuple(v if v is not None else math.nan for v in first["first_run_mean_std"]))
        if first["n_reached"] < first["n_seeds"]:
            first_cell += f" ({first['n_reached']}/{first['n_seeds']})"
        rows.append([_label(results, variant), _matched_cell(e[RETRAIN_LEVEL]["TA"]),
                     _matched_cell(e[RETRAIN_LEVEL]["RA"]), first_cell,
                     *[_matched_cell(e[str(level)]["TA"]) for level in lv[1:]]])
    return _table(header, rows)


def _jump_notes(results: dict, scenario: str, variant: str) -> list[str]:
    notes = []
    for cell, m in zip(cells_of(results, scenario), matched_readings(results, scenario, variant, RETRAIN_LEVEL)):
        if not m.reached:
            notes.append(f"seed {cell['seed']}: never reaches UA {m.target:.2f} in the sweep")
        elif not m.valid:
            notes.append(f"seed {cell['seed']}: UA jumps from {m.lo_ua:.1f} to {m.hi_ua:.1f} between neighbouring "
                         f"runs (no model near UA {m.target:.2f}; the first run past it has TA {m.first_value:.1f})")
    return notes


def statement(results: dict, scenario: str) -> list[str]:
    """The plain IMU-vs-GA statement (and the related comparisons), computed from the runs."""
    cells = cells_of(results, scenario)
    target = mean_std([c["retrain"]["UA"] for c in cells])
    lines = [f"At Retrain's forgetting level (UA = {fmt(target)} %, per seed), reading each method's "
             f"learning-rate curve by linear interpolation between its two runs that bracket that UA:"]
    for a, b in COMPARISONS:
        if a not in results["variants"] or b not in results["variants"]:
            continue
        la, lb = _label(results, a), _label(results, b)
        for key, what in (("TA", "test accuracy (TA)"), ("RA", "retain accuracy (RA)")):
            comp = compare_matched(matched_readings(results, scenario, a, RETRAIN_LEVEL, key),
                                   matched_readings(results, scenario, b, RETRAIN_LEVEL, key))
            sentence = describe_comparison(la, lb, what, comp)
            bold = "**" if (a, b) == COMPARISONS[0] else ""
            lines.append(f"- {bold}{sentence}{bold}")
    for variant in ("imu", "ga"):
        if variant in results["variants"]:
            notes = _jump_notes(results, scenario, variant)
            if notes:
                lines.append(f"- {_label(results, variant)} readings left out: " + "; ".join(notes) + ".")
    if "imu" in results["variants"] and "ga" in results["variants"]:
        imu = [m.first_value for m in matched_readings(results, scenario, "imu", RETRAIN_LEVEL) if m.reached]
        ga = [m.first_value for m in matched_readings(results, scenario, "ga", RETRAIN_LEVEL) if m.reached]
        lines.append(f"- Without interpolation (the first real run at or past Retrain's UA): IMU TA "
                     f"{fmt(mean_std(imu))} % ({len(imu)} seeds) vs GA TA {fmt(mean_std(ga))} % ({len(ga)} seeds).")
        at_levels = []
        for level in levels(results)[1:]:
            comp = compare_matched(matched_readings(results, scenario, "imu", level),
                                   matched_readings(results, scenario, "ga", level))
            if comp.n_paired:
                dm, dsd = comp.diff
                at_levels.append(f"UA {level:g}: {signed(dm)} ± {dsd:.2f} ({signed(comp.relative_percent, 1)}%, "
                                 f"{comp.n_paired}/{comp.n_seeds} seeds)")
            else:
                at_levels.append(f"UA {level:g}: no paired seed")
        lines.append("- IMU − GA test accuracy at fixed forgetting levels (points, relative, valid paired seeds): "
                     + "; ".join(at_levels) + ".")
    n_test = cells[0]["sizes"]["test"]
    lines.append(f"- For scale: one test sample is {100 / n_test:.2f} TA points ({n_test} test samples"
                 f"{' of the retained classes' if scenario == 'class' else ''}); one forget sample is "
                 f"{100 / cells[0]['sizes']['forget']:.2f} UA points.")
    return lines


def no_better_than_original(results: dict, scenario: str) -> list[str]:
    """Methods whose best swept learning rate does not beat the untouched original's Avg. Gap."""
    original = aggregate(runs_of(results, scenario, "original", phases=("reference",)))["avg_gap"][0]
    out = []
    for variant in results["variants"]:
        lr = best_lr(results, scenario, variant)
        runs = [r for r in runs_of(results, scenario, variant, phases=("sweep",)) if r["lr"] == lr]
        if aggregate(runs)["avg_gap"][0] >= original - 1e-9:
            out.append(_label(results, variant))
    return out


def headline(results: dict) -> list[str]:
    """The IMU-vs-GA answer in a few lines, per scenario, at Retrain's forgetting level."""
    if "imu" not in results["variants"] or "ga" not in results["variants"]:
        return ["(IMU vs GA: the study ran without IMU or GA, so there is no comparison.)"]
    lines = ["**IMU vs GA at matched forgetting (computed from the runs below).** Test accuracy (TA) of IMU "
             "(the authors' recipe, learning rate swept) minus GA's, each read off its learning-rate curve at "
             "the UA Retrain reaches (per seed):", ""]
    rel = []
    for scenario, title in results["scenarios"].items():
        cells = cells_of(results, scenario)
        comp = compare_matched(matched_readings(results, scenario, "imu", RETRAIN_LEVEL, "TA"),
                               matched_readings(results, scenario, "ga", RETRAIN_LEVEL, "TA"))
        if not comp.n_paired:
            lines.append(f"- {title}: undecided (no seed with a valid reading for both).")
            continue
        dm, dsd = comp.diff
        per_seed = ", ".join(signed(a - b) for a, b in zip(comp.a_values, comp.b_values))
        verdict = "more" if dm >= 0.05 else "less" if dm <= -0.05 else "the same"
        one_sample = 100 / cells[0]["sizes"]["test"]
        lines.append(f"- {title}: IMU keeps {verdict} TA than GA, {signed(dm)} ± {dsd:.2f} points "
                     f"({signed(comp.relative_percent, 1)}% relative; per seed {per_seed}; one test sample = "
                     f"{one_sample:.2f} points; {comp.n_paired} of {comp.n_seeds} seeds valid).")
        rel.append(f"{signed(comp.relative_percent, 1)}% ({scenario})")
    if rel:
        lines += ["", "The IMU paper reports about 30% more utility than GA at the same unlearning depth; here the "
                  f"relative TA differences are {' and '.join(rel)}. Details, RA, the α = 0 and uniform-weight "
                  "ablations and other forgetting levels are in the matched-forgetting section."]
    return lines


def settings_text(results: dict) -> str:
    s = results["settings"]
    train = s["train"]
    cell0 = results["cells"][0]
    classes = [f"seed {c['seed']}: class {c['target_class']}" for c in results["cells"] if c["scenario"] == "class"]
    return "\n".join([
        f"- Data: scikit-learn's 8x8 digits, stratified "
        f"{100 * (1 - s['test_fraction']):.0f}/{100 * s['test_fraction']:.0f} "
        f"train/test split per seed ({cell0['sizes']['train']} train images).",
        f"- Model: `DigitsCNN` (width {s['width']}), trained with Adam (lr {train['lr']}, weight decay "
        f"{train['weight_decay']}, batch {train['batch_size']}, {train['epochs']} epochs); Retrain repeats this "
        "recipe from the same initialisation on D_r only.",
        f"- Scenarios: {', '.join(results['scenarios'].values())}"
        + (f" ({'; '.join(classes)}). In the class scenario TA and the MIA's non-members use the test samples of "
           "the retained classes; `TA forgotten class` is the accuracy on the forgotten class's test samples."
           if classes else "."),
        f"- Seeds: {', '.join(str(x) for x in s['seeds'])} (seed = split, forget set, initialisation, shuffling).",
        f"- Unlearning: each method's preset from `imu_fast.config` ({s['unlearn_epochs']} epochs, SGD momentum 0.9, "
        "weight decay 5e-4, batch 256; IMU: head only, α = 0.2, top_fraction 0.1, clip quantile 0.93), with only "
        "the learning rate swept (and α = 0 as separate IMU / IMU-uniform rows). Swept learning rates: "
        + "; ".join(f"{v['label']} {v['lrs'][0]:g}…{v['lrs'][-1]:g} ({len(v['lrs'])} values)"
                    for v in results["variants"].values()) + ".",
        f"- After each sweep, up to {s['refine_steps']} bisection steps in log(lr) per method and target UA "
        f"(Retrain's UA and {', '.join(f'{x:g}' for x in s['fixed_levels'])} %) refine the curve where it first "
        "crosses the target; those runs are in runs.json (phase `refine`) and the plots, not in the per-lr tables.",
        "- Metrics (percent): UA = 100 − forget accuracy, RA, TA, MIA-Efficacy (SVC on the true-label "
        "probability), Avg. Gap = mean |metric − Retrain's| over the four; mean ± std over seeds. Times are "
        "wall-clock seconds of one run (influence scoring and the update loop separately; Retrain's is its training).",
    ])


def _span(values: list[int]) -> str:
    return f"{min(values)}" if min(values) == max(values) else f"{min(values)}–{max(values)}"


def notes(results: dict) -> list[str]:
    """Observations computed from the runs that help read the tables."""
    out = []
    runs = [r for r in results["runs"] if r["phase"] != "reference"]
    collapsed = [r for r in runs if r["metrics"] is not None and r["metrics"]["TA"] < 20]
    if collapsed:
        mia = [r["metrics"]["MIA"] for r in collapsed]
        out.append(f"- {len(collapsed)} of {len(runs)} runs collapsed (TA < 20 %: the model predicts almost one "
                   f"class); their MIA-Efficacy ranges from {min(mia):.1f} to {max(mia):.1f} %, so MIA-Efficacy "
                   "alone does not order such models by how much they forgot.")
    failed = [r for r in runs if r["metrics"] is None]
    diverged = [r for r in runs if r["diverged"]]
    out.append(f"- Runs whose loss became non-finite (stopped early): {len(diverged)}; runs that could not be "
               f"evaluated: {len(failed)}.")
    if "imu" in results["variants"]:
        for scenario, title in results["scenarios"].items():
            kept = [r["n_kept"] for r in runs if r["variant"] == "imu" and r["scenario"] == scenario]
            sizes = [c["sizes"]["forget"] for c in cells_of(results, scenario)]
            if kept:
                out.append(f"- {title}: IMU's paper recipe (top_fraction 0.1) updates with {_span(kept)} "
                           f"of the {_span(sizes)} forget samples (those with the most negative "
                           "influence); the uniform ablation and GA use all of them.")
    return out


def summary_markdown(results: dict, matched: dict, plots: dict[str, list[str]]) -> str:
    parts = ["# Vision study: unlearning on scikit-learn's digits", "", *headline(results), "",
             "## Setup", "", settings_text(results), ""]
    parts += ["## Each method at its best learning rate (lowest mean Avg. Gap over seeds)", ""]
    for scenario, title in results["scenarios"].items():
        parts += [f"### {title}", "", main_table(results, scenario), ""]
        stuck = no_better_than_original(results, scenario)
        if stuck:
            parts += [f"No swept learning rate brings {', '.join(stuck)} closer to Retrain (lower Avg. Gap) than the "
                      "untouched original model is.", ""]
        parts += ["Learning rate tuned per seed instead (each seed's lowest-Avg.-Gap run among all swept and refined "
                  "learning rates: optimistic, since it uses Retrain to choose; the onset of forgetting moves "
                  "between seeds, which is what the large stds of the common-lr table above reflect):", "",
                  oracle_table(results, scenario), ""]
    parts += ["## IMU vs GA at matched forgetting", ""]
    for scenario, title in results["scenarios"].items():
        parts += [f"### {title}", "", *statement(results, scenario), "",
                  "Utility read at matched UA (interpolated between the bracketing runs; mean ± std over the seeds "
                  "where the bracketing runs are within 10 UA points, or one of them hits the target exactly; "
                  "(k/n) = k of n seeds valid):", "", matched_table(results, matched, scenario), ""]
    parts += ["## Plots", ""]
    for scenario, files in plots.items():
        parts += [f"![{scenario}: {f}]({f})" for f in files] + [""]
    parts += ["## Full learning-rate sweep", ""]
    for scenario, title in results["scenarios"].items():
        parts += [f"### {title}", "", sweep_table(results, scenario), ""]
    parts += ["## Notes", "", *notes(results), ""]
    parts += [f"Study wall time (inside the command): {results['wall_seconds']:.0f} s; torch "
              f"{results['environment']['torch']}, {results['environment']['cpu_threads']} CPU thread(s).", ""]
    return "\n".join(parts)
