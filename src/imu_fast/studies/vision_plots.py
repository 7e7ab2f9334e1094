"""The vision study's plots (matplotlib, Agg backend): utility against forgetting, per scenario.

Each method is drawn as one thin line per seed through all its runs (swept and refined learning
rates) in learning-rate order, starting at the original model: these are the curves the
matched-forgetting comparison reads. Averaging over seeds at a common learning rate would draw
points no model has, because the learning rate where forgetting sets in differs between seeds.
The right panel zooms in around Retrain.
"""

from __future__ import annotations

from pathlib import Path

from ..extras import require
from .vision_report import aggregate, cells_of, runs_of

# (file suffix, x metric, x label, x transform)
PLOTS = (
    ("ta_vs_forget_acc", "UA", "forget accuracy (%) = 100 − UA", lambda ua: 100.0 - ua),
    ("ta_vs_mia", "MIA", "MIA-Efficacy (%)", lambda mia: mia),
)
ZOOM_HALF_WIDTH = 15.0
ZOOM_TA_BELOW = 12.0  # the zoom shows TA from Retrain's TA minus this up to 100


def _curves(results: dict, scenario: str, variant: str, metric: str, transform) -> list[tuple[list, list]]:
    out = []
    for cell in cells_of(results, scenario):
        runs = sorted((r for r in runs_of(results, scenario, variant, cell["seed"], ("sweep", "refine"))
                       if r["metrics"] is not None), key=lambda r: r["lr"])
        points = [cell["original"], *(r["metrics"] for r in runs)]
        out.append(([transform(m[metric]) for m in points], [m["TA"] for m in points]))
    return out


def plot_scenario(results: dict, scenario: str, out_dir: Path) -> list[str]:
    """Writes the scenario's PNGs into ``out_dir``; returns their file names."""
    matplotlib = require("matplotlib", "studies", "the vision study's plots")

    matplotlib.use("Agg", force=True)
    from matplotlib import pyplot as plt

    files = []
    title = results["scenarios"][scenario]
    ta_label = "test accuracy (%)" + (", retained classes" if scenario == "class" else "")
    colors = plt.get_cmap("tab10").colors
    n_seeds = len(cells_of(results, scenario))
    for suffix, metric, xlabel, transform in PLOTS:
        fig, axes = plt.subplots(1, 2, figsize=(12, 5), dpi=100)
        refs = {ref: aggregate(runs_of(results, scenario, ref, phases=("reference",)))
                for ref in ("retrain", "original")}
        rx = transform(refs["retrain"][metric][0])
        lo, hi = max(rx - ZOOM_HALF_WIDTH, -1.0), min(rx + ZOOM_HALF_WIDTH, 101.0)
        for i, variant in enumerate(results["variants"]):
            color = colors[i % len(colors)]
            label = results["variants"][variant]["label"]
            for j, (xs, ys) in enumerate(_curves(results, scenario, variant, metric, transform)):
                for ax in axes:
                    ax.plot(xs, ys, "-o", color=color, ms=2.5, lw=0.9, alpha=0.75, label=label if j == 0 else None)
        for ref, marker, name in (("retrain", "*", "Retrain (mean)"), ("original", "s", "Original (mean)")):
            agg = refs[ref]
            for ax in axes:
                ax.scatter([transform(agg[metric][0])], [agg["TA"][0]], marker=marker,
                           s=220 if marker == "*" else 70, color="black" if ref == "retrain" else "white",
                           edgecolors="black", zorder=5, label=name)
        axes[0].set_title(f"digits, {title}\none line per method and seed ({n_seeds} seeds), runs in lr order",
                          fontsize=10)
        axes[1].set_title(f"zoom: {xlabel.split(' (')[0]} within ±{ZOOM_HALF_WIDTH:g} of Retrain, "
                          f"TA ≥ Retrain's − {ZOOM_TA_BELOW:g}", fontsize=10)
        axes[1].set_xlim(lo, hi)
        ry = refs["retrain"]["TA"][0]
        axes[1].set_ylim(max(ry - ZOOM_TA_BELOW, 0.0), 100.5)
        for ax in axes:
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ta_label)
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8, loc="best")
        fig.tight_layout()
        name = f"{scenario}_{suffix}.png"
        fig.savefig(out_dir / name)
        plt.close(fig)
        files.append(name)
    return files
