"""``imu_fast.gradient_sketches``: per-sample gradient sketches of a data set, in memory or on disk.

One batched forward and backward per batch (the capture engine); each selected parameter's term
is sketched as it arrives (``builder``), so no per-sample gradient matrix and no weight gradient
is formed. With ``out=`` a folder, rows go to shards on disk (``store``) with metadata; a run
that was interrupted resumes from its first missing shard, and a finished one is returned as it
is when asked for again with the same model, data and settings (anything else is an error that
names the difference).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .. import __version__, checks
from ..capture import Selection, select_targets
from ..dispatch import BACKENDS, resolve_backend
from ..forget_set import ForgetBatch, ForgetSet, as_forget_set
from ..model_io import model_device
from ..modes import preserved_modes
from ..ops._launch import result_dtype
from ..stages import model_fingerprint
from ..statistics.batch_pass import batch_terms
from .builder import STORAGE, SketchBuilder
from .config import SketchConfig
from .layout import SketchLayout
from .sketch_set import FORMAT, VERSION, SketchSet
from .store import INDICES, METADATA, ShardedSketches, ShardWriter, write_json

SHARD_BYTES = 256 << 20  # default shard size on disk


class SketchPass:
    """Sketches batches of one data set with one builder (the layout is fixed by the first)."""

    def __init__(self, model: nn.Module, selection: Selection, loss_fn, config: SketchConfig, backend: str,
                 layout: SketchLayout | None = None):
        self.model, self.selection, self.loss_fn, self.backend = model, selection, loss_fn, backend
        shapes = {name: tuple(sp.param.shape) for name, sp in selection.params.items()}
        dtype = result_dtype(next(iter(selection.params.values())).param.dtype)
        self.builder = SketchBuilder(config, shapes, backend, model_device(model), layout, dtype)
        self._verified = False

    @property
    def layout(self) -> SketchLayout | None:
        return self.builder.layout

    def rows(self, batch: ForgetBatch, what: str = "data") -> torch.Tensor:
        """The batch's sketch rows (batch.size x K); the model must be in the mode wanted (eval)."""
        batch_terms(self.model, self.selection, batch, self.loss_fn, self.builder.on_term, backend=self.backend,
                    verify=not self._verified, what=what)
        self._verified = True
        return self.builder.finish()


def _check_args(config, batch_size, backend, progress, out, shard_rows) -> None:
    if not isinstance(config, SketchConfig):
        raise TypeError(f"config must be an imu_fast.SketchConfig, got {type(config).__name__}")
    checks.integer("batch_size", batch_size, low=1)
    checks.choice("backend", backend, ("auto", *BACKENDS))
    checks.flag("progress", progress)
    if out is not None and not isinstance(out, (str, Path)):
        raise TypeError(f"out must be a folder path (str or pathlib.Path) or None, got {type(out).__name__}")
    if shard_rows is not None:
        checks.integer("shard_rows", shard_rows, low=1)


def _metadata(config, selection, fingerprint, forget, batch_size, backend, layout, shard_rows) -> dict:
    return {
        "format": FORMAT, "version": VERSION, "imu_fast": __version__, "config": config.to_dict(),
        "seed": config.seed, "n": forget.size, "dim": None if layout is None else layout.dim,
        "layout": None if layout is None else layout.to_list(),
        "parameters": [{"name": name, "shape": list(sp.param.shape), "dtype": str(sp.param.dtype).replace("torch.", "")}
                       for name, sp in selection.params.items()],
        "model_fingerprint": fingerprint, "batch_size": batch_size, "backend": backend, "shard_rows": shard_rows,
        "complete": False,
    }


def _same_run(saved: dict, wanted: dict, folder: Path) -> None:
    """Refuses a folder whose sketches came from another model, data set or setting."""
    if saved.get("format") != FORMAT:
        raise ValueError(f"{folder} exists and holds something else than imu_fast sketches; choose another out=")
    keys = ("version", "model_fingerprint", "parameters", "n", "batch_size", "backend", "shard_rows")
    different = {k: (saved.get(k), wanted[k]) for k in keys if saved.get(k) != wanted[k]}
    saved_config = SketchConfig.from_dict(saved["config"]).sketch_settings()
    for k, v in SketchConfig.from_dict(wanted["config"]).sketch_settings().items():
        if saved_config.get(k) != v:
            different[f"config.{k}"] = (saved_config.get(k), v)
    if different:
        shown = "; ".join(f"{k}: saved {old!r} vs now {new!r}" for k, (old, new) in different.items())
        raise ValueError(f"{folder} holds sketches of a different run ({shown}); give another out= folder, or "
                         "delete this one to start over")


def _in_memory(sketch_pass: SketchPass, forget: ForgetSet, config: SketchConfig, bar) -> torch.Tensor:
    parts, out = [], None
    for batch in forget.batches():
        rows = sketch_pass.rows(batch)
        if forget.size is None:
            parts.append(rows.cpu())
        else:
            if out is None:
                out = torch.empty(forget.size, rows.shape[1], dtype=STORAGE[config.dtype])
            out[batch.positions] = rows.cpu()
        bar.update(batch.size)
    return torch.cat(parts) if out is None else out


def _on_disk(sketch_pass: SketchPass, forget: ForgetSet, folder: Path, meta: dict, shard_rows: int | None,
             bar) -> dict:
    """Fills the folder's missing shards; returns the final metadata."""
    layout = sketch_pass.layout
    batches = forget.batches()
    if layout is None:  # a new set: the first batch fixes the layout, hence K and the shard size
        first = next(batches)
        rows = sketch_pass.rows(first)
        layout = sketch_pass.layout
        shard_rows = shard_rows or max(1, SHARD_BYTES // (layout.dim * rows.element_size()))
        meta.update(dim=layout.dim, layout=layout.to_list(), shard_rows=shard_rows)
        write_json(folder / METADATA, meta)
        writer = ShardWriter(folder, forget.size, layout.dim, shard_rows, meta["config"]["dtype"])
        writer.write(int(first.positions[0]), rows)
        bar.update(first.size)
    else:
        writer = ShardWriter(folder, forget.size, layout.dim, meta["shard_rows"], meta["config"]["dtype"])
        bs, sr = meta["batch_size"], meta["shard_rows"]
        missing = sorted(set(range(writer.shards)) - writer.done)
        wanted = {k for s in missing for k in range(s * sr // bs, (min(forget.size, (s + 1) * sr) - 1) // bs + 1)}
        bar.update(forget.size - sum(writer.size(s) for s in missing))
        batches = forget.batches(wanted=wanted)
    for batch in batches:
        writer.write(int(batch.positions[0]), sketch_pass.rows(batch))
        bar.update(batch.size)
    writer.close()
    meta["complete"] = True
    write_json(folder / METADATA, meta)
    return meta


def gradient_sketches(model: nn.Module, loss_fn, data, *, params=None, config: SketchConfig = SketchConfig(),
                      out=None, batch_size: int = 64, backend: str = "auto", progress: bool = False,
                      shard_rows: int | None = None) -> SketchSet:
    """Sketches of every sample's gradient over ``params`` (default: every trainable parameter).

    ``data`` is anything the forget-set pipeline accepts; ``loss_fn(model, batch)`` gives the
    per-sample losses (None: cross-entropy on classification batches). Gradients are taken in
    eval mode (the model's modes are restored). ``out`` a folder: the rows are written there in
    shards of ``shard_rows`` (default: 256 MiB each) with metadata, and the set is memory-mapped;
    a folder from an interrupted run with the same model, data and settings is completed, one
    from a finished run is returned as it is. ``batch_size`` must stay the same across a resume
    (the rows are then identical to an uninterrupted run's).
    """
    _check_args(config, batch_size, backend, progress, out, shard_rows)
    forget = as_forget_set(data, batch_size=batch_size, what="data")
    selection = select_targets(model, params)
    resolved = resolve_backend(backend, model_device(model))
    layout, folder, meta = None, None, None
    if out is not None:
        if forget.size is None:
            raise ValueError("out= needs a data set whose size is known up front (a map-style dataset, columns of "
                             "tensors or a DataLoader over one); a stream can be sketched in memory (out=None)")
        folder = Path(out)
        meta = _metadata(config, selection, model_fingerprint(model)["digest"], forget, forget.batch_size, resolved,
                         None, shard_rows)
        if (folder / METADATA).exists():
            saved = json.loads((folder / METADATA).read_text())
            meta["shard_rows"] = shard_rows or saved.get("shard_rows")
            _same_run(saved, meta, folder)
            if saved.get("indices_saved") and not np.array_equal(np.load(folder / INDICES), forget.indices.numpy()):
                raise ValueError(f"{folder} holds sketches of other samples (its indices differ); give another out=")
            meta.update(dim=saved["dim"], layout=saved["layout"], indices_saved=True)
            if saved.get("complete"):
                done = SketchSet.load(folder)
                done.config = config  # the same sketches; the caller's fisher and blocks
                return done
            layout = SketchLayout.from_list(saved["layout"], saved["dim"]) if saved["layout"] is not None else None
        else:
            folder.mkdir(parents=True, exist_ok=True)
            np.save(folder / INDICES, forget.indices.numpy())
            meta["indices_saved"] = True
    sketch_pass = SketchPass(model, selection, loss_fn, config, backend, layout)  # each op picks its own "auto"
    bar = tqdm(total=forget.size, desc="sketches", unit="sample", disable=not progress, leave=False)
    with preserved_modes(model):
        model.eval()
        if folder is None:
            sketches = _in_memory(sketch_pass, forget, config, bar)
        else:
            meta = _on_disk(sketch_pass, forget, folder, meta, shard_rows, bar)
    bar.close()
    if folder is not None:
        return SketchSet(ShardedSketches(folder, meta["n"], meta["dim"], meta["shard_rows"], config.dtype),
                         forget.indices.clone(), sketch_pass.layout, config, meta, folder)
    meta = _metadata(config, selection, model_fingerprint(model)["digest"], forget, forget.batch_size, resolved,
                     sketch_pass.layout, None)
    meta.update(n=int(sketches.shape[0]), complete=True)
    return SketchSet(sketches, forget.indices.clone(), sketch_pass.layout, config, meta)
