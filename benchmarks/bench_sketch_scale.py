"""Sketches out of core: 10^6 samples of a small model sketched into shards on disk, a run killed
part-way and resumed, the result compared with an uninterrupted run, scores streamed from disk,
and the peak memory of each stage measured in its own process.

    python benchmarks/bench_sketch_scale.py --out /tmp/sketch_scale                  # N = 10^6
    python benchmarks/bench_sketch_scale.py --out /tmp/s --n 100000 --json results.json

The data are generated batch by batch from the sample indices (a map-style dataset with a batched
``__getitems__``), so nothing of size N is ever in memory: what a stage holds is its batch, its
open shard and the model. Stages (each a fresh Python process, peak resident memory from
``/proc/self/status`` VmHWM minus the resident memory before the stage's work):
  full      gradient_sketches(..., out=A) from start to end
  killed    the same into B, killed with SIGKILL once --kill-after shards exist
  resumed   the same call into B again: it recomputes only the missing shards
  scores    sketch_influence(SketchSet.load(A)) streamed in chunks, and the same for B
and finally A and B are compared shard by shard (bitwise) and the two score vectors.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
D_IN, WIDTH, CLASSES = 64, 128, 10
CONFIG = dict(kind="kronecker", dim=64, other_dim=16, seed=7)  # K = 64 + 16 + 64 + 10 = 154 columns


def make_data(n: int):
    import torch

    class Rows(torch.utils.data.Dataset):
        """x_i and y_i as functions of i alone (deterministic, any order, no N-sized storage)."""

        def __len__(self):
            return n

        def __getitems__(self, indices):
            i = torch.as_tensor(indices, dtype=torch.float64)[:, None]
            freq = torch.arange(1, D_IN + 1, dtype=torch.float64)
            x = torch.sin(i * freq * 0.618033 + freq).float()
            y = (torch.as_tensor(indices) * 2654435761 % CLASSES).long()
            return x, y

        def __getitem__(self, i):
            x, y = self.__getitems__([i])
            return x[0], y[0]

    return torch.utils.data.DataLoader(Rows(), batch_size=8192, collate_fn=lambda batch: batch)


def make_model():
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(D_IN, WIDTH), nn.Tanh(), nn.Linear(WIDTH, CLASSES)).eval()


def rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def stage(args) -> None:
    """One stage in this process; prints a JSON line with its time and extra peak memory."""
    import torch

    import imu_fast

    torch.set_num_threads(args.threads)
    model, data = make_model(), make_data(args.n)
    config = imu_fast.SketchConfig(**CONFIG)
    imu_fast.gradient_sketches(model, None, [data.dataset[i] for i in range(8)], config=config)  # initialise
    before = rss_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    started = time.perf_counter()
    out = {"stage": args.stage}
    if args.stage == "sketch":
        s = imu_fast.gradient_sketches(model, None, data, config=config, out=args.folder, shard_rows=args.shard_rows)
        out.update(n=s.n, dim=s.dim, shards=s.sketches.shards)
    else:
        result = imu_fast.sketch_influence(imu_fast.SketchSet.load(args.folder), chunk_rows=65536)
        torch.save(result.scores, Path(args.folder) / "scores.pt")
        out.update(n=result.n)
    out.update(seconds=time.perf_counter() - started, extra_peak_mib=(rss_kib("VmHWM") - before) / 1024)
    print(json.dumps(out), flush=True)


def run_stage(args, name: str, folder: Path, kill_after: int | None = None) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--stage", name, "--folder", str(folder), "--n", str(args.n),
           "--shard-rows", str(args.shard_rows), "--threads", str(args.threads)]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    if kill_after is not None:
        while proc.poll() is None and len(list(folder.glob("shard-*.npy"))) < kill_after:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return {"stage": "killed", "seconds": time.perf_counter() - started,
                "shards_on_disk": len(list(folder.glob("shard-*.npy"))), "returncode": proc.returncode}
    line = proc.communicate()[0].strip().splitlines()[-1]
    if proc.returncode:
        raise RuntimeError(f"stage {name} failed with {proc.returncode}")
    return json.loads(line)


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("shard-*.npy"))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("/tmp/imu_fast_sketch_scale"))
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--shard-rows", type=int, default=65536)
    parser.add_argument("--kill-after", type=int, default=5, help="shards on disk when the second run is killed")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stage:
        stage(args)
        return 0
    import shutil

    a, b = args.out / "uninterrupted", args.out / "interrupted"
    for folder in (a, b):
        shutil.rmtree(folder, ignore_errors=True)
    rows = [run_stage(args, "sketch", a)]
    rows.append(run_stage(args, "sketch", b, kill_after=args.kill_after))
    rows.append({**run_stage(args, "sketch", b), "stage": "resumed"})
    rows.append({**run_stage(args, "scores", a), "stage": "scores (uninterrupted)"})
    rows.append({**run_stage(args, "scores", b), "stage": "scores (resumed)"})
    import torch

    same_shards = digest(a) == digest(b)
    same_scores = torch.equal(torch.load(a / "scores.pt"), torch.load(b / "scores.pt"))
    size = sum(p.stat().st_size for p in a.glob("shard-*.npy"))
    report = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "argv": sys.argv[1:], "n": args.n,
              "config": CONFIG, "shard_rows": args.shard_rows, "bytes_on_disk": size, "stages": rows,
              "identical_shards": same_shards, "identical_scores": same_scores}
    for r in rows:
        print(json.dumps(r))
    print(f"on disk: {size / 2**20:.0f} MiB in {len(digest(a))} shards; resumed run identical to the uninterrupted "
          f"one: shards {same_shards}, scores {same_scores}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0 if same_shards and same_scores else 1


if __name__ == "__main__":
    sys.exit(main())
