"""Per-sample statistics side by side on one CPU: imu_fast against Opacus, BackPACK, torch.func and
the authors'-style batch-of-one loop, on a small GPT-style decoder (and a small CNN).

    python benchmarks/bench_per_sample.py                 # all sections, default shapes
    python benchmarks/bench_per_sample.py --only norms --seq-lens 8 128 512
    python benchmarks/bench_per_sample.py --json benchmarks/results/per_sample_cpu.json

Sections (each prints a table of median wall and CPU seconds, their ratios to imu_fast, and the
extra peak resident memory; providers are timed round-robin so machine load hits all alike):
  norms      per-sample gradient norms of the blocks' linear layers
  fisher     the Fisher diagonal of the same parameters
  influence  influence over the q/k/v/o weights of two layers vs the authors'-style loop
  cnn        norms and Fisher of a small CNN's conv and linear layers
Tokens per batch are held at --tokens (default 2048: batch 16 at T = 128). Optional anchors
(Opacus, BackPACK) are skipped with a note when not installed.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import platform
import sys
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import extra_peak_mib, interleaved_medians, table  # noqa: E402
from tiny_gpt import TinyGPT, block_linear_names, sequence_losses  # noqa: E402

import imu_fast  # noqa: E402

# ---------------------------------------------------------------------------------------------
# Providers. Each returns a zero-argument callable that does the whole computation once.


def only_selected_trainable(model: nn.Module, names: list[str]) -> nn.Module:
    wanted = set(names)
    for name, p in model.named_parameters():
        p.requires_grad_(name in wanted)
    return model


def plain_forward_backward(model, loss_fn, batch, names):
    model = only_selected_trainable(copy.deepcopy(model), names)

    def run():
        model.zero_grad(set_to_none=True)
        loss_fn(model, batch).sum().backward()

    return run


def vmap_grads(model, loss_fn, batch, names):
    params = {k: v.detach() for k, v in model.named_parameters() if k in set(names)}
    frozen = {k: v.detach() for k, v in model.named_parameters() if k not in set(names)}

    def one(p, item):
        return loss_fn(lambda *a, **k: functional_call(model, {**frozen, **p}, a, k), item[None])[0]

    return lambda: vmap(grad(one), in_dims=(None, 0))(params, batch)


def vmap_norms(model, loss_fn, batch, names):
    grads = vmap_grads(model, loss_fn, batch, names)
    return lambda: torch.cat([g.reshape(g.shape[0], -1) for g in grads().values()], 1).norm(dim=1)


def vmap_fisher(model, loss_fn, batch, names):
    grads = vmap_grads(model, loss_fn, batch, names)
    return lambda: {k: (g * g).mean(0) for k, g in grads().items()}


def opacus_ghost_norms(model, loss_fn, batch, names):
    from opacus.grad_sample import GradSampleModuleFastGradientClipping

    wrapped = GradSampleModuleFastGradientClipping(only_selected_trainable(copy.deepcopy(model), names).train(),
                                                   loss_reduction="sum", use_ghost_clipping=True)

    def run():
        wrapped.zero_grad(set_to_none=True)
        loss_fn(wrapped, batch).sum().backward()
        return wrapped.get_norm_sample()

    return run


def backpack_quantity(model, loss_fn, batch, names, extension: str):
    import backpack

    model = only_selected_trainable(copy.deepcopy(model), names)
    for module in model.modules():
        if any(p.requires_grad for p in module.parameters(recurse=False)):
            backpack.extend(module)
    ext = getattr(backpack.extensions, extension)()

    def run():
        model.zero_grad(set_to_none=True)
        loss = loss_fn(model, batch).sum()
        with backpack.backpack(ext):
            loss.backward()

    return run


def imu_norms(model, loss_fn, batch, names, route="auto"):
    return lambda: imu_fast.per_sample_grad_norms(model, loss_fn, batch, params=names, route=route)


def imu_fisher(model, loss_fn, batch, names, backend="auto"):
    return lambda: imu_fast.fisher_diagonal(model, loss_fn, [batch], params=names, backend=backend)


def authors_loop_influence(model, loss_fn, data, names, damping=0.01):
    """Batch-of-one autograd twice (Fisher pass, then a stacked N x P gradient matrix)."""
    named = dict(model.named_parameters())
    params = [named[n] for n in names]

    def per_sample(i):
        g = torch.autograd.grad(loss_fn(model, data[i : i + 1])[0], params)
        return torch.cat([x.reshape(-1) for x in g])

    def run():
        fisher = sum(per_sample(i) ** 2 for i in range(len(data))) / len(data) + damping
        g = torch.stack([per_sample(i) for i in range(len(data))])
        return -(g @ (g.mean(0) / fisher))

    return run


def imu_influence(model, loss_fn, data, names, batch_size):
    samples = list(data)
    return lambda: imu_fast.influence_scores(model, samples, targets=names, batch_size=batch_size,
                                             loss_fn=lambda m, b: loss_fn(m, b)).scores


# ---------------------------------------------------------------------------------------------


def run_rows(entries, repeats):
    """Builds every provider, times them round-robin, then measures each one's extra peak memory."""
    fns, notes = {}, {}
    for label, build in entries:
        try:
            fns[label] = build()
            fns[label]()  # fail here, not in the middle of the timing rounds
        except ImportError as exc:
            notes[label] = f"skipped: {exc.name} not installed"
            fns.pop(label, None)
        except Exception as exc:  # an anchor that cannot handle this model: say so, keep going
            notes[label] = f"failed: {type(exc).__name__}: {str(exc)[:80]}"
            fns.pop(label, None)
    times = interleaved_medians(fns, repeats=repeats)
    reference = next(iter(times.values()), None)
    rows = []
    for label, _ in entries:
        if label in notes:
            rows.append({"provider": label, "note": notes[label]})
            continue
        t = times[label]
        rows.append({"provider": label, "seconds": t["seconds"], "x imu_fast": t["seconds"] / reference["seconds"],
                     "cpu seconds": t["cpu_seconds"], "cpu x imu_fast": t["cpu_seconds"] / reference["cpu_seconds"],
                     "extra MiB": extra_peak_mib(fns[label])})
    return rows


def gpt_setup(seq_len, tokens, seed=0):
    torch.manual_seed(seed)
    model = TinyGPT(max_len=max(512, seq_len)).eval()
    batch = torch.randint(0, 512, (max(1, tokens // seq_len), seq_len))
    return model, batch


def section_norms(args):
    out = {}
    for t in args.seq_lens:
        model, batch = gpt_setup(t, args.tokens)
        names = block_linear_names(model)
        entries = [
            ("imu_fast (auto route)", lambda: imu_norms(model, sequence_losses, batch, names)),
            ("imu_fast (gram route)", lambda: imu_norms(model, sequence_losses, batch, names, "gram")),
            ("imu_fast (tiled route)", lambda: imu_norms(model, sequence_losses, batch, names, "tiled")),
            ("plain forward+backward", lambda: plain_forward_backward(model, sequence_losses, batch, names)),
            ("opacus ghost clipping", lambda: opacus_ghost_norms(model, sequence_losses, batch, names)),
            ("backpack BatchL2Grad", lambda: backpack_quantity(model, sequence_losses, batch, names, "BatchL2Grad")),
            ("torch.func vmap", lambda: vmap_norms(model, sequence_losses, batch, names)),
        ]
        out[f"T={t} batch={batch.shape[0]}"] = run_rows(entries, args.repeats)
    return out


def section_fisher(args):
    out = {}
    for t in args.seq_lens:
        model, batch = gpt_setup(t, args.tokens)
        names = block_linear_names(model)
        entries = [
            ("imu_fast (cpu kernels)", lambda: imu_fisher(model, sequence_losses, batch, names)),
            ("imu_fast (torch backend)", lambda: imu_fisher(model, sequence_losses, batch, names, "torch")),
            ("plain forward+backward", lambda: plain_forward_backward(model, sequence_losses, batch, names)),
            ("backpack SumGradSquared",
             lambda: backpack_quantity(model, sequence_losses, batch, names, "SumGradSquared")),
            ("torch.func vmap", lambda: vmap_fisher(model, sequence_losses, batch, names)),
        ]
        out[f"T={t} batch={batch.shape[0]}"] = run_rows(entries, args.repeats)
    return out


def section_influence(args):
    out = {}
    for n in args.forget_sizes:
        torch.manual_seed(0)
        model = TinyGPT().eval()
        data = torch.randint(0, 512, (n, args.influence_len))
        names = block_linear_names(model, kinds=("q_proj", "k_proj", "v_proj", "o_proj"), layers=(1, 2))
        names = [x for x in names if x.endswith("weight")]
        entries = [
            ("imu_fast", lambda: imu_influence(model, sequence_losses, data, names, batch_size=16)),
            ("authors'-style loop", lambda: authors_loop_influence(model, sequence_losses, data, names)),
        ]
        out[f"N={n} T={args.influence_len}"] = run_rows(entries, max(1, args.repeats // 2))
    return out


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 32, 3, padding=1)
        self.c2 = nn.Conv2d(32, 64, 3, padding=1, stride=2)
        self.c3 = nn.Conv2d(64, 64, 3, padding=1, stride=2)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        h = F.relu(self.c3(F.relu(self.c2(F.relu(self.c1(x))))))
        return self.fc(h.mean((2, 3)))


def cnn_losses(model, batch):
    x, y = batch
    return F.cross_entropy(model(x), y, reduction="none")


def section_cnn(args):
    torch.manual_seed(0)
    model = SmallCNN().eval()
    batch = (torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,)))
    names = [n for n, _ in model.named_parameters()]

    def vm(kind):
        params = {k: v.detach() for k, v in model.named_parameters()}

        def one(p, x, y):
            return F.cross_entropy(functional_call(model, p, (x[None],)), y[None])

        def run():
            g = vmap(grad(one), in_dims=(None, 0, 0))(params, *batch)
            if kind == "norms":
                return torch.cat([v.reshape(64, -1) for v in g.values()], 1).norm(dim=1)
            return {k: (v * v).mean(0) for k, v in g.items()}

        return run

    entries_n = [
        ("imu_fast norms", lambda: imu_norms(model, cnn_losses, batch, names)),
        ("plain forward+backward", lambda: plain_forward_backward(model, cnn_losses, batch, names)),
        ("opacus ghost clipping", lambda: opacus_ghost_norms(model, cnn_losses, batch, names)),
        ("backpack BatchL2Grad", lambda: backpack_quantity(model, cnn_losses, batch, names, "BatchL2Grad")),
        ("torch.func vmap", lambda: vm("norms")),
    ]
    entries_f = [
        ("imu_fast fisher", lambda: imu_fisher(model, cnn_losses, batch, names)),
        ("backpack SumGradSquared", lambda: backpack_quantity(model, cnn_losses, batch, names, "SumGradSquared")),
        ("torch.func vmap", lambda: vm("fisher")),
    ]
    return {"norms batch=64 3x32x32": run_rows(entries_n, args.repeats),
            "fisher batch=64 3x32x32": run_rows(entries_f, args.repeats)}


SECTIONS = {"norms": section_norms, "fisher": section_fisher, "influence": section_influence, "cnn": section_cnn}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=sorted(SECTIONS), default=list(SECTIONS))
    parser.add_argument("--seq-lens", nargs="+", type=int, default=[128, 8, 512])
    parser.add_argument("--tokens", type=int, default=2048, help="tokens per batch (batch = tokens // T)")
    parser.add_argument("--forget-sizes", nargs="+", type=int, default=[32, 128])
    parser.add_argument("--influence-len", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    env = {"date": datetime.date.today().isoformat(), "torch": torch.__version__, "threads": torch.get_num_threads(),
           "machine": platform.machine(), "python": platform.python_version(),
           "command": "python benchmarks/bench_per_sample.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    print(json.dumps(env))
    results = {"env": env}
    for name in args.only:
        results[name] = SECTIONS[name](args)
        for case, rows in results[name].items():
            print(f"\n## {name}: {case}")
            print(table(rows, ["provider", "seconds", "x imu_fast", "cpu seconds", "cpu x imu_fast", "extra MiB",
                               "note"]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
