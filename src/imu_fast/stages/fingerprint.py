"""Fingerprints that say whether a saved stage was computed from this model and this forget set.

A model's fingerprint hashes every entry of its state dict (name, dtype, shape and bytes), one
digest per entry so that a mismatch can name the tensors that differ. A forget set's fingerprint
holds its size, a hash of its dataset indices and the split-independent digest of its contents
(``imu_fast.forget_set.digest``), so it is the same for one process and for several.
"""

from __future__ import annotations

import hashlib
import json

import torch
from torch import nn

from ..forget_set import ForgetSet, indices_digest, set_digest


def _tensor_digest(t: torch.Tensor) -> str:
    h = hashlib.sha256()  # SHA-256: hardware-accelerated on x86-64 (SHA-NI) and ARMv8, unlike BLAKE2
    h.update(str((t.dtype, tuple(t.shape))).encode())
    flat = t.detach().cpu().contiguous().reshape(-1)
    if flat.numel():
        h.update(memoryview(flat.view(torch.uint8).numpy()))  # hashed in place, no copy
    return h.hexdigest()[:24]


def model_fingerprint(model: nn.Module) -> dict:
    """``{"digest": ..., "tensors": {state-dict name: digest}}``."""
    tensors = {name: _tensor_digest(t) for name, t in model.state_dict().items() if isinstance(t, torch.Tensor)}
    digest = hashlib.blake2b(json.dumps(tensors, sort_keys=True).encode(), digest_size=16).hexdigest()
    return {"digest": digest, "tensors": tensors}


def forget_fingerprint(forget: ForgetSet) -> dict:
    """``{"n", "indices", "content"}`` of a (map-style) forget set; read in shares inside a process group."""
    if forget.is_stream:
        raise ValueError(f"the {forget.what} set is a stream: a saved stage needs a map-style dataset, whose samples "
                         "can be fingerprinted before they are used")
    with torch.random.fork_rng(devices=[]):  # a DataLoader draws a seed: keep it from the run's random stream
        content = set_digest(forget)
    return {"n": len(forget), "indices": indices_digest(forget.indices), "content": f"{content:032x}"}


def function_name(fn) -> str | None:
    """``module.qualname`` of a user function (a setting of a stage; lambdas all read ``<lambda>``)."""
    if fn is None:
        return None
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__qualname__)}"


def model_differences(saved: dict, now: dict) -> list[str]:
    if saved.get("digest") == now["digest"]:
        return []
    old, new = saved.get("tensors", {}), now["tensors"]
    changed = [k for k in new if k in old and old[k] != new[k]]
    missing = [k for k in old if k not in new]
    extra = [k for k in new if k not in old]
    parts = []
    for label, names in (("changed", changed), ("only in the saved model", missing), ("only in this model", extra)):
        if names:
            parts.append(f"{label}: {names[:8]}{' ...' if len(names) > 8 else ''} ({len(names)} tensors)")
    return [f"model: {'; '.join(parts) or 'different'}"]


def forget_differences(saved: dict, now: dict, what: str = "forget") -> list[str]:
    if saved.get("n") != now["n"]:
        return [f"{what} set: {saved.get('n')} samples saved, {now['n']} now"]
    if saved.get("indices") != now["indices"]:
        return [f"{what} set: same size ({now['n']}) but different dataset indices"]
    if saved.get("content") != now["content"]:
        return [f"{what} set: same indices but different sample contents"]
    return []
