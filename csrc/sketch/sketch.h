// Plain parameter structs for the sketch kernels (low-rank projections of per-sample gradients).
//
// JL:        out (N x k) = X (N x w) R[:, col0 : col0 + w]^T, where R (k x P) is the sign matrix
//            of src/imu_fast/ops/philox.py times `scale`: entry (j, p) comes from one
//            Philox4x32-10 call with counter (p mod 2^32, j >> 7, stream, role + 256 (p >> 32)) and
//            key (seed mod 2^32, seed >> 32). R is generated one tile at a time and never stored.
// Kronecker: out_i (k_out x k_in) = (B_i P_out)^T (A_i P_in), with A_i (T x d_in) a layer's inputs
//            and B_i (T x d_out) its output gradients: the projection P_out^T g_i P_in of the
//            per-sample weight gradient g_i = B_i^T A_i, formed without g_i.
// Every matrix is dense and row-major; X rows have stride ldx, everything else is contiguous.
#pragma once

#include <cstdint>

#include "head_stats/head_stats.h"  // DType

namespace imu_fast {

struct JLParams {
  const void* x;  // N x w, row stride ldx
  void* out;      // N x k, overwritten
  int64_t n, w, ldx, k, col0;
  uint64_t seed;
  uint32_t stream, role;
  double scale;  // the value of a +1 entry (1/sqrt(k) for a JL matrix)
  DType dtype;
  int bf16_parts = 0;  // float32 X on CPUs with AMX: X split into this many bfloat16 parts (1-3); 0 = FMA kernel
};

struct KronParams {
  const void* a;      // N x T x d_in
  const void* b;      // N x T x d_out
  const void* p_in;   // d_in x k_in
  const void* p_out;  // d_out x k_out
  void* out;          // N x k_out x k_in, overwritten
  int64_t n, t, d_in, d_out, k_in, k_out;
  DType dtype;
};

// The four 32-bit words of Philox4x32-10 for one counter (the generator every backend shares).
void philox4x32(const uint32_t counter[4], uint64_t seed, uint32_t out[4]);

// words[4 c + q] = word q of the Philox call of column col + c (c < count) in row group `group`.
void philox_columns(int64_t col, int count, uint32_t group, uint32_t stream, uint32_t role, uint64_t seed,
                    uint32_t* words);

void jl_project_cpu(const JLParams& p);
void kron_sketch_cpu(const KronParams& p);

// The AMX path of jl_project_cpu (float32 X): whether this CPU and OS run it, and the kernel.
bool jl_amx_available();
void jl_project_amx(const JLParams& p);

}  // namespace imu_fast
