"""The counter-based random signs every sketch projection is built from (pure PyTorch reference).

A projection matrix is never stored: each entry is a function of its coordinates. For a seed, a
stream s (one per parameter) and a role r (JL matrix, or one of a Kronecker layer's two factors),

    words = Philox4x32-10(counter = (p mod 2^32, j >> 7, s, r + 256 (p >> 32)), key = (seed mod 2^32, seed >> 32))
    bit   = (words[(j >> 5) & 3] >> (j & 31)) & 1
    R[j, p] = (1 - 2 bit) / sqrt(k)          (j < k output coordinates, p the parameter's flat column)

so one Philox call gives the 128 signs of rows j = 128 c .. 128 c + 127 of column p, and any tile of
R can be generated on its own, on any backend, bit for bit the same (Rademacher entries: the
only floating-point differences between backends are in the order of the sums that use them).
Philox4x32-10 is the counter-based generator of Salmon et al. (SC'11), the one ``tl.philox``
implements; ``philox4x32`` here computes it with int64 arithmetic so it runs on any torch device.
"""

from __future__ import annotations

import math

import torch

MASK32 = 0xFFFFFFFF
_ROUND_A, _ROUND_B = 0xD2511F53, 0xCD9E8D57
_KEY_A, _KEY_B = 0x9E3779B9, 0xBB67AE85
ROLE_JL, ROLE_IN, ROLE_OUT = 0, 1, 2
MAX_SEED = 2**63 - 1


def _mul_hi_lo(a: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(high, low) 32-bit words of a * m for 32-bit a (int64 tensor) and a 32-bit constant m,
    without overflowing int64: a is split into 16-bit halves."""
    a_hi, a_lo = a >> 16, a & 0xFFFF
    hi_part, lo_part = a_hi * m, a_lo * m  # each < 2^48
    hi = (hi_part + (lo_part >> 16)) >> 16
    lo = (((hi_part & 0xFFFF) << 16) + lo_part) & MASK32
    return hi, lo


def philox4x32(c0, c1, c2, c3, seed: int) -> tuple[torch.Tensor, ...]:
    """Philox4x32-10 of counters (c0, c1, c2, c3) (int64 tensors or ints holding 32-bit values,
    broadcast together) under the 64-bit ``seed``: four int64 tensors of 32-bit words."""
    c0, c1, c2, c3 = torch.broadcast_tensors(*(torch.as_tensor(c, dtype=torch.int64) for c in (c0, c1, c2, c3)))
    k0, k1 = seed & MASK32, (seed >> 32) & MASK32
    for _ in range(10):
        hi_b, lo_b = _mul_hi_lo(c2, _ROUND_B)
        hi_a, lo_a = _mul_hi_lo(c0, _ROUND_A)
        c0, c1, c2, c3 = hi_b ^ c1 ^ k0, lo_b, hi_a ^ c3 ^ k1, lo_a
        k0, k1 = (k0 + _KEY_A) & MASK32, (k1 + _KEY_B) & MASK32
    return c0, c1, c2, c3


def check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be an integer in [0, 2^63 - 1], got {seed!r}")
    return seed


def signs_ref(seed: int, stream: int, role: int, rows: range, cols: torch.Tensor | range, *,
              dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
    """Rows ``rows`` (output coordinates j) by columns ``cols`` (flat parameter columns p) of the
    unscaled sign matrix (entries +-1), as the module docstring defines it."""
    device = torch.device("cpu") if device is None else torch.device(device)
    p = torch.as_tensor(list(cols) if isinstance(cols, range) else cols, dtype=torch.int64, device=device)
    j = torch.arange(rows.start, rows.stop, dtype=torch.int64, device=device)
    out = torch.empty(j.numel(), p.numel(), dtype=dtype, device=device)
    c3 = role + 256 * (p >> 32)
    for group in torch.unique(j >> 7).tolist():
        sel = (j >> 7) == group
        words = torch.stack(philox4x32(p & MASK32, group, stream & MASK32, c3, seed))  # 4 x cols
        jj = j[sel]
        bits = (words[(jj >> 5) & 3] >> (jj & 31)[:, None]) & 1
        out[sel] = (1 - 2 * bits).to(dtype)
    return out


def projection_ref(seed: int, stream: int, role: int, k: int, col0: int, width: int, *,
                   dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
    """R[:, col0 : col0 + width], scaled by 1/sqrt(k): the JL block of those columns (k x width)."""
    return signs_ref(seed, stream, role, range(k), range(col0, col0 + width), dtype=dtype, device=device) / math.sqrt(k)
