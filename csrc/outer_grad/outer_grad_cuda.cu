// CUDA kernels for per-sample outer-product gradients g_i = B_i^T A_i (see outer_grad.h).
//
// A block owns a (kRowTile x kColTile) tile of g; each of its 256 threads owns one row and four
// columns of that tile. For each sample the tile of g_i is contracted over tokens from shared
// memory into registers (scalar FMAs on CUDA cores), then squared: into a running Fisher sum (one
// block per tile, looping over samples) or into one partial norm per (sample, tile), added per
// sample by a second kernel in a fixed order. Operands are read in their own dtype (half types
// convert on load) and accumulated in float32 (float64 for float64). All offsets are 64-bit.
#include "common/cuda_utils.cuh"
#include "outer_grad.h"

namespace imu_fast {
namespace {

constexpr int kRowTile = 16;
constexpr int kColTile = 64;
constexpr int kTokChunk = 32;
constexpr int kThreads = 256;

// acc[j] = sum_t B_i[t, o] A_i[t, k0 + lane + 16 j] for this thread's row o, staged via shared memory.
template <typename In, typename Acc>
__device__ void tile_of_sample(const In* __restrict__ a_i, const In* __restrict__ b_i, int64_t t, int64_t d_in,
                               int64_t d_out, int64_t o0, int64_t k0, Acc (&a_s)[kTokChunk][kColTile],
                               Acc (&b_s)[kTokChunk][kRowTile], Acc (&acc)[4]) {
  const int row = threadIdx.x / 16, lane = threadIdx.x % 16;
#pragma unroll
  for (int j = 0; j < 4; ++j) acc[j] = 0;
  for (int64_t s0 = 0; s0 < t; s0 += kTokChunk) {
    __syncthreads();
    for (int idx = threadIdx.x; idx < kTokChunk * kColTile; idx += blockDim.x) {
      const int s = idx / kColTile, k = idx % kColTile;
      a_s[s][k] = (s0 + s < t && k0 + k < d_in) ? to_acc<Acc>(a_i[(s0 + s) * d_in + k0 + k]) : Acc(0);
    }
    for (int idx = threadIdx.x; idx < kTokChunk * kRowTile; idx += blockDim.x) {
      const int s = idx / kRowTile, r = idx % kRowTile;
      b_s[s][r] = (s0 + s < t && o0 + r < d_out) ? to_acc<Acc>(b_i[(s0 + s) * d_out + o0 + r]) : Acc(0);
    }
    __syncthreads();
#pragma unroll 8
    for (int s = 0; s < kTokChunk; ++s) {
      const Acc bv = b_s[s][row];
#pragma unroll
      for (int j = 0; j < 4; ++j) acc[j] += bv * a_s[s][lane + 16 * j];
    }
  }
}

template <typename In, typename Acc>
__global__ void outer_fisher_kernel(const In* __restrict__ a, const In* __restrict__ b, Acc* __restrict__ f,
                                    int64_t n, int64_t t, int64_t d_in, int64_t d_out) {
  __shared__ Acc a_s[kTokChunk][kColTile];
  __shared__ Acc b_s[kTokChunk][kRowTile];
  const int64_t k0 = static_cast<int64_t>(blockIdx.x) * kColTile;
  const int64_t o0 = static_cast<int64_t>(blockIdx.y) * kRowTile;
  const int row = threadIdx.x / 16, lane = threadIdx.x % 16;
  Acc sum[4] = {0, 0, 0, 0};
  Acc acc[4];
  for (int64_t i = 0; i < n; ++i) {
    tile_of_sample(a + i * t * d_in, b + i * t * d_out, t, d_in, d_out, o0, k0, a_s, b_s, acc);
#pragma unroll
    for (int j = 0; j < 4; ++j) sum[j] += acc[j] * acc[j];
  }
  if (o0 + row < d_out) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t k = k0 + lane + 16 * j;
      if (k < d_in) f[(o0 + row) * d_in + k] += sum[j];
    }
  }
}

template <typename Acc>
__device__ Acc block_sum(Acc v, Acc* red) {
  red[threadIdx.x] = v;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) red[threadIdx.x] += red[threadIdx.x + s];
    __syncthreads();
  }
  return red[0];
}

// grid (n, row tiles, column tiles): partials[i, tile] = ||tile of g_i||^2.
template <typename In, typename Acc>
__global__ void outer_norms_tile_kernel(const In* __restrict__ a, const In* __restrict__ b, Acc* __restrict__ parts,
                                        int64_t t, int64_t d_in, int64_t d_out) {
  __shared__ Acc a_s[kTokChunk][kColTile];
  __shared__ Acc b_s[kTokChunk][kRowTile];
  __shared__ Acc red[kThreads];
  const int64_t i = blockIdx.x;
  const int64_t o0 = static_cast<int64_t>(blockIdx.y) * kRowTile;
  const int64_t k0 = static_cast<int64_t>(blockIdx.z) * kColTile;
  Acc acc[4];
  tile_of_sample(a + i * t * d_in, b + i * t * d_out, t, d_in, d_out, o0, k0, a_s, b_s, acc);
  Acc total = 0;
#pragma unroll
  for (int j = 0; j < 4; ++j) total += acc[j] * acc[j];  // padded rows/columns are zero
  const Acc s = block_sum(total, red);
  if (threadIdx.x == 0) {
    const int64_t tiles = static_cast<int64_t>(gridDim.y) * gridDim.z;
    parts[i * tiles + static_cast<int64_t>(blockIdx.y) * gridDim.z + blockIdx.z] = s;
  }
}

// One block per sample adds its tile partials, always in the same order.
template <typename Acc>
__global__ void sum_rows_kernel(const Acc* __restrict__ parts, Acc* __restrict__ out, int64_t cols) {
  __shared__ Acc red[kThreads];
  const int64_t i = blockIdx.x;
  Acc v = 0;
  for (int64_t k = threadIdx.x; k < cols; k += blockDim.x) v += parts[i * cols + k];
  const Acc s = block_sum(v, red);
  if (threadIdx.x == 0) out[i] = s;
}

template <typename In, typename Acc>
void launch_fisher(const OuterGradParams& p, cudaStream_t s) {
  const dim3 grid((p.d_in + kColTile - 1) / kColTile, (p.d_out + kRowTile - 1) / kRowTile);
  outer_fisher_kernel<In, Acc><<<grid, kThreads, 0, s>>>(static_cast<const In*>(p.a), static_cast<const In*>(p.b),
                                                         static_cast<Acc*>(p.out), p.n, p.t, p.d_in, p.d_out);
}

template <typename In, typename Acc>
void launch_norms(const OuterGradParams& p, cudaStream_t s) {
  const dim3 grid(p.n, (p.d_out + kRowTile - 1) / kRowTile, (p.d_in + kColTile - 1) / kColTile);
  outer_norms_tile_kernel<In, Acc><<<grid, kThreads, 0, s>>>(
      static_cast<const In*>(p.a), static_cast<const In*>(p.b), static_cast<Acc*>(p.partials), p.t, p.d_in, p.d_out);
  cuda_check(cudaGetLastError(), "outer_norms tile launch");
  sum_rows_kernel<Acc><<<p.n, kThreads, 0, s>>>(static_cast<const Acc*>(p.partials), static_cast<Acc*>(p.out),
                                                 outer_norms_cuda_tiles(p.d_in, p.d_out));
}

void check_grid(int64_t rows, int64_t cols) {
  if (rows > 65535 || cols > 65535)
    throw std::invalid_argument("imu_fast CUDA outer kernels: d_out / 16 and d_in / 64 must be at most 65535");
}

}  // namespace

int64_t outer_norms_cuda_tiles(int64_t d_in, int64_t d_out) {
  return ((d_out + kRowTile - 1) / kRowTile) * ((d_in + kColTile - 1) / kColTile);
}

void outer_fisher_cuda(const OuterGradParams& p, void* stream, int device) {
  check_grid((p.d_out + kRowTile - 1) / kRowTile, 1);
  DeviceGuard guard(device);
  auto s = static_cast<cudaStream_t>(stream);
  switch (p.dtype) {
    case DType::Float32: launch_fisher<float, float>(p, s); break;
    case DType::Float64: launch_fisher<double, double>(p, s); break;
    case DType::Float16: launch_fisher<__half, float>(p, s); break;
    case DType::BFloat16: launch_fisher<__nv_bfloat16, float>(p, s); break;
  }
  cuda_check(cudaGetLastError(), "outer_fisher launch");
}

void outer_norms_cuda(const OuterGradParams& p, void* stream, int device) {
  if (p.n == 0) return;
  check_grid((p.d_out + kRowTile - 1) / kRowTile, (p.d_in + kColTile - 1) / kColTile);
  DeviceGuard guard(device);
  auto s = static_cast<cudaStream_t>(stream);
  switch (p.dtype) {
    case DType::Float32: launch_norms<float, float>(p, s); break;
    case DType::Float64: launch_norms<double, double>(p, s); break;
    case DType::Float16: launch_norms<__half, float>(p, s); break;
    case DType::BFloat16: launch_norms<__nv_bfloat16, float>(p, s); break;
  }
  cuda_check(cudaGetLastError(), "outer_norms launch");
}

}  // namespace imu_fast
