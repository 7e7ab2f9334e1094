"""Gradient sketches side by side on one CPU: imu_fast against dattri's LoGra, LogIX, hand-written
LoGra hooks and TRAK's BasicProjector, on the small GPT-style decoder of tiny_gpt.py.

    python benchmarks/bench_sketch.py                                  # both sections, the three shapes
    python benchmarks/bench_sketch.py --only kron --shapes 128x16 --repeats 5
    PYTHONPATH=/tmp/anchors python benchmarks/bench_sketch.py --json benchmarks/results/sketch_cpu.json

The anchors are optional (skipped with a note when absent); install them beside torch, outside the
package's dependencies (benchmarks/README.md has the commands).

Sections. Every provider sketches the per-sample gradients of the 25 linear weights (the blocks'
q/k/v/o, MLP up/down, and the LM head: D = 3,276,800 values) for --batches batches of B sequences
of T tokens (one call), next to a plain forward+backward of the same batches that computes those
25 weights' gradients; providers are timed round-robin (median of --repeats after a warm-up).
  kron  Kronecker sketches, k_in = k_out = 16 (256 per layer): imu_fast (C++ and torch backends),
        dattri 0.3.0 LoGraAttributor's hooks (proj_dim=256), LogIX 0.1.1 (LoRA rank 16, logging
        per-sample gradients), and hand-written LoGra hooks that skip weight gradients
  jl    one dense JL projection of all 25 weights to k = 4,096: imu_fast (on-the-fly Philox JL, at
        each --jl-precisions: tf32x3 is float32-level, bf16 rounds the rows to bfloat16 on AMX),
        against TRAK 0.3.2's BasicProjector (normal entries, its default block size) applied to
        per-sample gradients from torch.func.vmap; TRAK's projection is timed once (it takes minutes)
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import interleaved_medians, table  # noqa: E402
from tiny_gpt import TinyGPT, sequence_losses  # noqa: E402

import imu_fast  # noqa: E402
from imu_fast import SketchConfig  # noqa: E402

K_SIDE = 16
JL_DIM = 4096


def linear_weights(model: nn.Module) -> list[str]:
    return [n for n, p in model.named_parameters() if p.dim() == 2 and (n.startswith("blocks.") or n == "lm_head.weight")]


def plain(model, batches, names):
    wanted = set(names)

    def run():
        flags = [(p, p.requires_grad) for p in model.parameters()]
        for n, p in model.named_parameters():
            p.requires_grad_(n in wanted)
        for ids in batches:
            model.zero_grad(set_to_none=True)
            sequence_losses(model, ids).sum().backward()
        for p, f in flags:
            p.requires_grad_(f)

    return run


def imu_sketch(model, batches, names, config, backend):
    ids = torch.cat(batches)
    loss = lambda m, b: sequence_losses(m, b[0])  # noqa: E731
    return lambda: imu_fast.gradient_sketches(model, loss, (ids,), params=names, config=config,
                                              batch_size=batches[0].shape[0], backend=backend)


class HandLoGra:
    """LoGra by hand: forward hooks keep A P_in, tensor hooks on the outputs form (B P_out)^T (A P_in);
    every parameter frozen, so the backward computes input gradients only."""

    def __init__(self, model, names):
        self.model = model
        self.modules = [model.get_submodule(n.rsplit(".", 1)[0]) for n in names]
        g = torch.Generator().manual_seed(0)
        self.p = [(torch.randn(m.in_features, K_SIDE, generator=g) / K_SIDE ** 0.5,
                   torch.randn(m.out_features, K_SIDE, generator=g) / K_SIDE ** 0.5) for m in self.modules]

    def __call__(self, batches):
        out = []
        handles = []
        flags = [(p, p.requires_grad) for p in self.model.parameters()]
        for p in self.model.parameters():
            p.requires_grad_(False)
        sketches = [None] * len(self.modules)

        def hook(i):
            def forward_hook(module, args, output):
                ap = args[0].reshape(args[0].shape[0], -1, args[0].shape[-1]) @ self.p[i][0]

                def backward(grad):
                    bp = grad.reshape(grad.shape[0], -1, grad.shape[-1]) @ self.p[i][1]
                    sketches[i] = (bp.mT @ ap).flatten(1)

                output.register_hook(backward)
            return forward_hook

        try:
            handles = [m.register_forward_hook(hook(i)) for i, m in enumerate(self.modules)]
            # the token embeddings' output is the one leaf that needs a gradient
            handles.append(self.model.tok.register_forward_hook(lambda m, a, o: o.detach().requires_grad_(True)))
            for ids in batches:
                sequence_losses(self.model, ids).sum().backward()
                out.append(torch.cat(sketches, 1))
        finally:
            for h in handles:
                h.remove()
            for p, f in flags:
                p.requires_grad_(f)
        return torch.cat(out)


def dattri_logra(model, batches, names):
    from dattri.algorithm.block_projected_if.core.compressor import setup_model_compressors
    from dattri.algorithm.block_projected_if.core.hook import HookManager

    layers = [n.rsplit(".", 1)[0] for n in names]
    compressors = setup_model_compressors(model, layers, sparsifier_kwargs={
        "device": "cpu", "proj_dim": K_SIDE, "proj_max_batch_size": 64, "proj_type": "normal"},
        projector_kwargs={"device": "cpu", "proj_dim": -1, "proj_max_batch_size": 64, "proj_type": "identity"},
        sample_inputs=(batches[0],), device="cpu")

    def run():
        manager = HookManager(model, layers, device="cpu")
        manager.set_compressors(compressors)
        try:
            out = []
            for ids in batches:
                model.zero_grad(set_to_none=True)
                sequence_losses(model, ids).sum().backward()
                with torch.no_grad():
                    out.append(torch.cat([g.reshape(g.shape[0], -1) for g in manager.get_compressed_grads()], 1))
            return torch.cat(out)
        finally:
            manager.remove_hooks()

    return run


def logix_logra(model, batches, names):
    import copy
    import tempfile

    import logix
    from logix.config import LoRAConfig

    lora_model = copy.deepcopy(model)
    run = logix.LogIX(project=tempfile.mkdtemp(prefix="logix_bench_") + "/run", config=None)
    layers = [n.rsplit(".", 1)[0] for n in names]
    run.watch(lora_model, name_filter=layers)
    run.add_lora(lora_config=LoRAConfig(rank=K_SIDE))
    run.setup({"grad": ["log"]})
    run.save(False)

    def go():
        out = []
        for k, ids in enumerate(batches):
            with run(data_id=[f"{k}-{i}" for i in range(ids.shape[0])]):
                lora_model.zero_grad(set_to_none=True)
                sequence_losses(lora_model, ids).sum().backward()
            _, log = run.get_log()
            out.append(log)
        return out

    return go


def vmap_grads(model, names):
    params = {k: v.detach() for k, v in model.named_parameters() if k in set(names)}
    frozen = {k: v.detach() for k, v in model.named_parameters() if k not in set(names)}

    def one(p, ids):
        return sequence_losses(lambda x: functional_call(model, {**frozen, **p}, (x,)), ids[None])[0]

    def run(ids):
        g = vmap(grad(one), in_dims=(None, 0))(params, ids)
        return torch.cat([g[n].reshape(ids.shape[0], -1) for n in names], 1)

    return run


def trak_jl(model, batches, names):
    from trak.projectors import BasicProjector, ProjectionType

    grads_of = vmap_grads(model, names)
    dim = sum(dict(model.named_parameters())[n].numel() for n in names)
    projector = BasicProjector(grad_dim=dim, proj_dim=JL_DIM, seed=0, proj_type=ProjectionType.normal,
                               device=torch.device("cpu"))
    return lambda: torch.cat([projector.project(grads_of(ids), model_id=0) for ids in batches])


# ---------------------------------------------------------------------------------------------


def optional(name, build):
    """A provider, or the reason it is skipped (an anchor that is not installed)."""
    try:
        return build(), None
    except ImportError as exc:
        return None, f"{name}: skipped ({exc})"


def time_section(fns: dict, repeats: int, slow: dict | None = None) -> list[dict]:
    timed = interleaved_medians(fns, repeats=repeats)
    for name, fn in (slow or {}).items():  # too slow to repeat: one run after one warm-up batch
        started, cpu = time.perf_counter(), time.process_time()
        fn()
        timed[name] = {"seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu}
    base = timed["plain forward+backward"]["seconds"]
    return [{"provider": name, "seconds": t["seconds"], "x plain": t["seconds"] / base,
             "cpu seconds": t["cpu_seconds"]} for name, t in timed.items()]


def kron_section(model, names, batches, repeats) -> tuple[list[dict], list[str]]:
    config = SketchConfig(dim=K_SIDE * K_SIDE)
    fns, notes = {"plain forward+backward": plain(model, batches, names)}, []
    fns["imu_fast kronecker (cpu)"] = imu_sketch(model, batches, names, config, "cpu")
    fns["imu_fast kronecker (torch)"] = imu_sketch(model, batches, names, config, "torch")
    hand = HandLoGra(model, names)
    fns["hand LoGra hooks (no weight grads)"] = lambda: hand(batches)
    for label, build in (("dattri LoGra", lambda: dattri_logra(model, batches, names)),
                         ("LogIX LoGra", lambda: logix_logra(model, batches, names))):
        fn, note = optional(label, build)
        if fn is None:
            notes.append(note)
        else:
            fns[label] = fn
    return time_section(fns, repeats), notes


def jl_section(model, names, batches, repeats, trak_batches, precisions) -> tuple[list[dict], list[str]]:
    fns, notes = {"plain forward+backward": plain(model, batches, names)}, []
    for precision in precisions:
        config = SketchConfig(kind="jl", dim=JL_DIM, precision=precision)
        fns[f"imu_fast jl (cpu, {precision})"] = imu_sketch(model, batches, names, config, "cpu")
    slow = {}
    fn, note = optional("TRAK BasicProjector", lambda: trak_jl(model, batches[:trak_batches], names))
    if fn is None:
        notes.append(note)
    else:
        grads_of = vmap_grads(model, names)
        slow["torch.func vmap per-sample grads"] = lambda: [grads_of(ids) for ids in batches[:trak_batches]]
        slow["TRAK vmap + BasicProjector"] = fn
        notes.append(f"TRAK rows: {trak_batches} batch(es), one run each; seconds scaled to {len(batches)} batches")
    rows = time_section(fns, repeats)
    if slow:
        scale = len(batches) / trak_batches
        base = rows[0]["seconds"]
        for name, f in slow.items():
            started, cpu = time.perf_counter(), time.process_time()
            f()
            seconds, cpu_s = (time.perf_counter() - started) * scale, (time.process_time() - cpu) * scale
            rows.append({"provider": name, "seconds": seconds, "x plain": seconds / base, "cpu seconds": cpu_s})
        trak = next(r for r in rows if r["provider"].startswith("TRAK"))
        for imu in (r for r in rows if r["provider"].startswith("imu_fast")):
            notes.append(f"TRAK / {imu['provider']}: {trak['seconds'] / imu['seconds']:.1f}x")
    return rows, notes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=["kron", "jl"], default=["kron", "jl"])
    parser.add_argument("--shapes", nargs="+", default=["128x16", "512x4", "8x64"], help="TxB: tokens x sequences")
    parser.add_argument("--batches", type=int, default=2, help="batches per timed call")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--trak-batches", type=int, default=1)
    parser.add_argument("--jl-precisions", nargs="+", default=["tf32x3", "bf16"],
                        help="SketchConfig.precision of the imu_fast JL rows (tf32x3 is the default setting)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = TinyGPT().eval()
    names = linear_weights(model)
    dim = sum(dict(model.named_parameters())[n].numel() for n in names)
    print(f"TinyGPT, {len(names)} linear weights, D = {dim:,}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    results = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "argv": sys.argv[1:],
               "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
               "threads": torch.get_num_threads(), "D": dim, "sections": []}
    for section in args.only:
        for shape in args.shapes:
            t, b = (int(v) for v in shape.lower().split("x"))
            g = torch.Generator().manual_seed(t * 1000 + b)
            batches = [torch.randint(0, 512, (b, t), generator=g) for _ in range(args.batches)]
            if section == "kron":
                rows, notes = kron_section(model, names, batches, args.repeats)
            else:
                rows, notes = jl_section(model, names, batches, args.repeats, args.trak_batches, args.jl_precisions)
            print(f"\n## {section}: T={t} B={b}, {args.batches} batches per call")
            print(table(rows, ["provider", "seconds", "x plain", "cpu seconds"]))
            for note in notes:
                print("  " + note)
            results["sections"].append({"section": section, "T": t, "B": b, "batches": args.batches, "rows": rows,
                                        "notes": notes})
            if args.json:
                args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
