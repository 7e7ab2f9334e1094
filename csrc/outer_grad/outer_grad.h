// Plain parameter structs for the per-sample "outer product" gradient kernels.
//
// A linear-family layer (Linear with token axes, Conv2d as unfolded positions, GPT-2 Conv1D) has
// per-sample weight gradient g_i = B_i^T A_i, with A_i (T x d_in) the layer inputs and B_i
// (T x d_out) the gradients of the loss w.r.t. the layer outputs, for sample i. Both are given as
// dense row-major N x T x d tensors. The kernels form g_i one register tile at a time and reduce
// it at once, so no per-sample gradient reaches memory.
#pragma once

#include <cstdint>

#include "head_stats/head_stats.h"  // DType

namespace imu_fast {

struct OuterGradParams {
  const void* a;  // N x T x d_in
  const void* b;  // N x T x d_out
  void* out;      // fisher: d_out x d_in (accumulated, +=); norms: N (overwritten); float32 for half types
  int64_t n, t, d_in, d_out;
  DType dtype;
  void* partials = nullptr;  // CUDA norms: N x outer_norms_cuda_tiles() scratch in the output dtype
};

// out[o, k] += sum_i (B_i^T A_i)[o, k]^2
void outer_fisher_cpu(const OuterGradParams& p);
// out[i] = ||B_i^T A_i||_F^2
void outer_norms_cpu(const OuterGradParams& p);

#ifdef IMU_FAST_WITH_CUDA
void outer_fisher_cuda(const OuterGradParams& p, void* stream, int device);
// One block per (sample, tile of g_i) writes a partial; a second kernel adds them per sample.
void outer_norms_cuda(const OuterGradParams& p, void* stream, int device);
int64_t outer_norms_cuda_tiles(int64_t d_in, int64_t d_out);
#endif

}  // namespace imu_fast
