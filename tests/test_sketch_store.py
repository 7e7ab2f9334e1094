"""Sketches on disk: shards with metadata, memory-mapped reading, an interrupted run that resumes
where it stopped and gives the same rows, a finished run reused, runs that do not match refused
by name, scores streamed from disk, and peak memory bounded at N = 10^5."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from conftest import rel_err
from torch import nn
from torch.nn import functional as F

from imu_fast import SketchConfig, SketchSet, gradient_sketches, influence_scores, sketch_influence
from imu_fast.sketch.store import ShardedSketches


def model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 3)).eval()


def data(n=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)


class Interrupted(Exception):
    pass


class CountingLoss:
    """Cross-entropy that counts its calls and can fail on a chosen one (an interrupted run)."""

    def __init__(self, fail_at=None):
        self.calls, self.fail_at = 0, fail_at

    def __call__(self, m, batch):
        self.calls += 1
        if self.calls == self.fail_at:
            raise Interrupted()
        x, y = batch
        return F.cross_entropy(m(x), y, reduction="none")


CONFIG = SketchConfig(dim=9, other_dim=2, seed=5)


def test_shards_metadata_and_reading_back(tmp_path):
    m, xy = model(), data()
    ref = gradient_sketches(m, None, xy, config=CONFIG, batch_size=8)
    got = gradient_sketches(m, None, xy, config=CONFIG, batch_size=8, out=tmp_path / "s", shard_rows=12)
    assert isinstance(got.sketches, ShardedSketches) and got.sketches.shards == 5
    assert sorted(p.name for p in (tmp_path / "s").glob("shard-*.npy")) == [f"shard-0000{i}.npy" for i in range(5)]
    assert torch.equal(got.sketches.to_tensor(), ref.sketches)
    assert torch.equal(got.sketches[7:31], ref.sketches[7:31]) and torch.equal(got.sketches[-1], ref.sketches[-1])
    meta = json.loads((tmp_path / "s" / "metadata.json").read_text())
    assert meta["seed"] == 5 and meta["n"] == 50 and meta["dim"] == ref.dim and meta["complete"]
    assert [p["name"] for p in meta["parameters"]] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert meta["model_fingerprint"] == ref.metadata["model_fingerprint"] and len(meta["model_fingerprint"]) == 32
    loaded = SketchSet.load(tmp_path / "s")
    assert torch.equal(loaded.indices, torch.arange(50)) and loaded.layout.to_list() == ref.layout.to_list()
    p_in, p_out = loaded.projection("0.weight")
    assert torch.equal(p_in, ref.projection("0.weight")[0]) and p_out.shape == (12, 3)
    assert torch.equal(torch.cat(list(loaded.chunks(7))), ref.sketches)
    disk, memory = sketch_influence(loaded, chunk_rows=9), sketch_influence(ref)
    assert rel_err(disk.scores, memory.scores) < 1e-6
    direct = influence_scores(m, xy, targets=list(m.parameters()), sketch=CONFIG, batch_size=8)
    assert rel_err(direct.scores, memory.scores) < 1e-6


def test_an_interrupted_run_resumes_and_gives_the_same_rows(tmp_path):
    m, xy = model(1), data(seed=1)
    ref = gradient_sketches(m, None, xy, config=CONFIG, batch_size=8)
    folder = tmp_path / "run"
    with pytest.raises(Interrupted):
        gradient_sketches(m, CountingLoss(fail_at=5), xy, config=CONFIG, batch_size=8, out=folder, shard_rows=16)
    done = sorted(p.name for p in folder.glob("shard-*.npy"))
    assert done == ["shard-00000.npy", "shard-00001.npy"]  # batches 0-3 made shards 0 and 1; batch 4 failed
    assert not json.loads((folder / "metadata.json").read_text())["complete"]
    with pytest.raises(RuntimeError, match="incomplete"):
        SketchSet.load(folder)
    resumed = CountingLoss()
    got = gradient_sketches(m, resumed, xy, config=CONFIG, batch_size=8, out=folder)
    assert resumed.calls == 3  # batches 4, 5 and 6 only (rows 32..49: shards 2 and 3)
    assert torch.equal(got.sketches.to_tensor(), ref.sketches)
    again = CountingLoss()
    reused = gradient_sketches(m, again, xy, config=CONFIG, batch_size=8, out=folder)
    assert again.calls == 0 and torch.equal(reused.sketches.to_tensor(), ref.sketches)


def test_a_folder_of_another_run_is_refused_by_name(tmp_path):
    m, xy = model(2), data(seed=2)
    folder = tmp_path / "s"
    gradient_sketches(m, None, xy, config=CONFIG, batch_size=8, out=folder)
    with pytest.raises(ValueError, match="config.dim"):
        gradient_sketches(m, None, xy, config=CONFIG.replace(dim=16), batch_size=8, out=folder)
    with pytest.raises(ValueError, match="batch_size"):
        gradient_sketches(m, None, xy, config=CONFIG, batch_size=4, out=folder)
    with torch.no_grad():
        m[0].weight[0, 0] += 1e-3
    with pytest.raises(ValueError, match="model_fingerprint"):
        gradient_sketches(m, None, xy, config=CONFIG, batch_size=8, out=folder)
    with torch.no_grad():
        m[0].weight[0, 0] -= 1e-3
    with pytest.raises(ValueError, match="'n'|n: saved"):
        gradient_sketches(m, None, data(n=40, seed=2), config=CONFIG, batch_size=8, out=folder)
    # only the solve changed: the saved sketches serve
    assert gradient_sketches(m, None, xy, config=CONFIG.replace(fisher="diagonal"), batch_size=8, out=folder).n == 50


def test_bad_storage_arguments_are_named(tmp_path):
    m, xy = model(), data()
    stream = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*xy), batch_size=8)

    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            return iter(zip(*xy))

    with pytest.raises(ValueError, match="size is known up front"):
        gradient_sketches(m, None, Stream(), config=CONFIG, out=tmp_path / "x")
    assert gradient_sketches(m, None, Stream(), config=CONFIG).n == 50  # in memory, a stream is fine
    assert gradient_sketches(m, None, stream, config=CONFIG).n == 50
    with pytest.raises(TypeError, match="config must be an imu_fast.SketchConfig"):
        gradient_sketches(m, None, xy, config={"dim": 4})
    with pytest.raises(TypeError, match="out must be a folder path"):
        gradient_sketches(m, None, xy, config=CONFIG, out=3)
    with pytest.raises(ValueError, match="shard_rows must be"):
        gradient_sketches(m, None, xy, config=CONFIG, out=tmp_path / "y", shard_rows=0)
    with pytest.raises(FileNotFoundError, match="holds no sketches"):
        SketchSet.load(tmp_path)


MEMORY_SCRIPT = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {benchmarks!r})
    import torch
    from torch import nn
    from measure import extra_peak_mib
    from imu_fast import SketchConfig, gradient_sketches, sketch_influence
    torch.set_num_threads(1)
    torch.manual_seed(0)
    n = 100_000
    x, y = torch.randn(n, 16), torch.randint(0, 8, (n,))
    m = nn.Sequential(nn.Linear(16, 64), nn.Tanh(), nn.Linear(64, 8)).eval()
    config = SketchConfig(dim=256, other_dim=64)  # K = 256 + 64 + 16 * 8 + 8 = 456 columns: 182 MB of float32
    out = {out!r}
    gradient_sketches(m, None, (x[:4096], y[:4096]), config=config, batch_size=2048)  # one-time initialisation
    sketch_peak = extra_peak_mib(lambda: gradient_sketches(m, None, (x, y), config=config, batch_size=2048,
                                                           out=out, shard_rows=4096))
    score_peak = extra_peak_mib(lambda: sketch_influence(gradient_sketches(m, None, (x, y), config=config,
                                                                           batch_size=2048, out=out), chunk_rows=4096))
    print(sketch_peak, score_peak, sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out)))
""")


@pytest.mark.slow
def test_peak_memory_is_bounded_by_the_shards_not_by_n(tmp_path):
    """10^5 samples, 456 sketch columns (182 MB on disk): sketching holds a shard of 4,096 rows
    (7.5 MB) and a batch, scoring streams the shards back; each stays far below the data size."""
    from pathlib import Path

    script = MEMORY_SCRIPT.format(benchmarks=str(Path(__file__).resolve().parents[1] / "benchmarks"),
                                  out=str(tmp_path / "big"))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    sketch_peak, score_peak, size = map(float, done.stdout.split())
    assert size > 180e6
    print(f"extra peak MiB: sketching {sketch_peak:.0f}, scoring {score_peak:.0f}")
    assert sketch_peak < 64 and score_peak < 64, (sketch_peak, score_peak)
    shards = np.load(tmp_path / "big" / "shard-00000.npy", mmap_mode="r")
    assert shards.shape == (4096, 456)
