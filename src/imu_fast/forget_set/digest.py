"""Content digests of a forget set that do not depend on how it is split.

Each sample's digest hashes its dataset index and the bytes of its row of every per-sample entry
of its batch (plus the batch's shared entries); a set's digest is the sum of its samples' digests
modulo 2**128. A sum does not depend on the order, the batch size or the split into processes
(shards add up), while the index inside each digest still binds every row to its sample. It tells
accidental differences apart (another split, an edited sample), not adversarial ones.
"""

from __future__ import annotations

import hashlib

import torch

from .batch import ForgetBatch, _leaves

MODULUS = 1 << 128


def _bytes(t: torch.Tensor):
    """The raw bytes of ``t`` as a (rows, bytes per row) numpy array (rows = leading dimension)."""
    t = t.detach().cpu().contiguous()
    rows = t.reshape(t.shape[0] if t.dim() else 1, -1)
    return rows.view(torch.uint8).numpy() if rows.shape[1] else rows.to(torch.uint8).numpy()


def _as_rows(data, size: int) -> tuple[list, bytes]:
    """(one entry per per-sample leaf: a byte array or a list of objects, the batch's shared bytes)."""
    if isinstance(data, (list, tuple)) and len(data) == size and not any(
            isinstance(v, (torch.Tensor, dict, tuple, list)) for v in data):
        return [[repr(v).encode() for v in data]], b""  # one python object per sample (e.g. strings)
    rows, shared = [], []
    for leaf in _leaves(data):
        if isinstance(leaf, torch.Tensor) and leaf.dim() > 0 and leaf.shape[0] == size:
            head = str((leaf.dtype, tuple(leaf.shape[1:]))).encode()
            rows.append((head, _bytes(leaf)))
        elif isinstance(leaf, torch.Tensor):
            shared.append(str((leaf.dtype, tuple(leaf.shape))).encode() + _bytes(leaf).tobytes())
        else:
            shared.append(repr(leaf).encode())
    return rows, b"".join(shared)


def batch_digest(batch: ForgetBatch) -> int:
    """The sum of the digests of the batch's samples (modulo 2**128)."""
    size = batch.size
    if size == 0:
        return 0
    rows, common = _as_rows(batch.data, size)
    total = 0
    for r, index in enumerate(batch.indices.tolist()):
        h = hashlib.blake2b(digest_size=16)
        h.update(int(index).to_bytes(8, "little", signed=True))
        h.update(common)
        for leaf in rows:
            if isinstance(leaf, tuple):
                h.update(leaf[0])
                h.update(leaf[1][r].tobytes())
            else:
                h.update(leaf[r])
        total = (total + int.from_bytes(h.digest(), "little")) % MODULUS
    return total


def indices_digest(indices: torch.Tensor) -> str:
    """A hash of the dataset indices (in their order)."""
    return hashlib.blake2b(indices.to(torch.int64).contiguous().numpy().tobytes(), digest_size=16).hexdigest()
