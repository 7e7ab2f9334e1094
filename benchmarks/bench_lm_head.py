"""Peak memory of statistics through a vocabulary-sized LM head, against one plain forward+backward.

    python benchmarks/bench_lm_head.py                       # SmolLM2-135M's shape, N = 8, T = 512
    python benchmarks/bench_lm_head.py --layers 4 --json out.json

The model is built from SmolLM2-135M's configuration (hidden 576, 30 layers, 9 heads, 3 key-value
heads, vocabulary 49,152) with random weights, float32, on the CPU: memory depends on the shapes,
not the weights. Each row runs in a fresh process; its *extra peak* is the peak resident memory
during the call (VmHWM, reset through /proc/self/clear_refs just before it) minus the resident
memory just before it (model and batch already built). Rows:

* ``plain forward+backward``: the model's logits, mean token cross-entropy, backward (all weight
  gradients): what one training step of this batch holds;
* ``influence head=lm_head``: ``influence_scores(model, data, head=model.lm_head)`` (untied head;
  closed form, one forward without gradients);
* ``influence targets=[lm_head.weight]``, ``fisher_diagonal``, ``per_sample_grad_norms``: through the
  capture with ``causal_lm_losses`` (untied head: the trunk runs without a graph);
* the same three with the head tied to the input embedding (as SmolLM2 is): the embedding's
  gradient needs the trunk's backward, so its activations are kept.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time

ROWS = ("plain", "head", "targets", "fisher", "norms", "tied-targets", "tied-fisher", "tied-norms")

CHILD = r"""
import json, sys, time, torch, transformers
from imu_fast import fisher_diagonal, influence_scores, per_sample_grad_norms
from imu_fast.lm import causal_lm_losses
row, layers, n, t = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.manual_seed(0)
torch.set_num_threads(2)
tied = row.startswith("tied") or row == "plain-tied"
cfg = transformers.LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=layers,
                               num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
                               tie_word_embeddings=tied)
model = transformers.LlamaForCausalLM(cfg).eval()
ids = torch.randint(0, 49152, (n, t))
samples = [{"input_ids": ids[i], "attention_mask": torch.ones(t, dtype=torch.long)} for i in range(n)]
batch = {"input_ids": ids, "attention_mask": torch.ones(n, t, dtype=torch.long)}
causal_lm_losses(model, {k: v[:1, :8] for k, v in batch.items()})  # the one-time output-layer check

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) * 1024

def peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) * 1024

def plain():
    logits = model(**batch).logits
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 49152), ids[:, 1:].reshape(-1))
    loss.backward()

kind = row.replace("tied-", "")
runs = {"plain": plain,
        "head": lambda: influence_scores(model, samples, head=model.lm_head, batch_size=n),
        "targets": lambda: influence_scores(model, samples, targets=["lm_head.weight"], loss_fn=causal_lm_losses,
                                            batch_size=n),
        "fisher": lambda: fisher_diagonal(model, causal_lm_losses, samples, params=["lm_head.weight"], batch_size=n),
        "norms": lambda: per_sample_grad_norms(model, causal_lm_losses, samples, params=["lm_head.weight"],
                                               batch_size=n)}
before = rss()
open("/proc/self/clear_refs", "w").write("5")
started = time.perf_counter()
runs[kind]()
print(json.dumps({"row": row, "extra_peak_bytes": peak() - before, "seconds": time.perf_counter() - started,
                  "baseline_bytes": before}))
"""


def run_row(row: str, layers: int, n: int, t: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, row, str(layers), str(n), str(t)], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=30)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--t", type=int, default=512)
    parser.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS))
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    results = []
    for row in args.rows:
        result = run_row(row, args.layers, args.n, args.t)
        results.append(result)
        print(f"{row:14s} extra peak {result['extra_peak_bytes'] / 2**20:9.1f} MiB   {result['seconds']:7.1f} s",
              flush=True)
    plain = next((r for r in results if r["row"] == "plain"), None)
    if plain:
        for r in results:
            print(f"{r['row']:14s} / plain = {r['extra_peak_bytes'] / plain['extra_peak_bytes']:.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"date": time.strftime("%Y-%m-%d"), "machine": platform.platform(), "args": vars(args),
                       "command": "python benchmarks/bench_lm_head.py " + " ".join(argv or sys.argv[1:]),
                       "rows": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
