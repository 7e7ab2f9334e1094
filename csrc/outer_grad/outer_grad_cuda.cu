// CUDA kernels for per-sample outer-product gradients g_i = B_i^T A_i (see outer_grad.h).
//
// A block owns a (kRowTile x kColTile) tile of g; each of its 256 threads owns one row and four
// columns of that tile. For each sample the tile of g_i is contracted over tokens from shared
// memory into registers, then squared: into a running Fisher sum (one block per tile, looping over
// samples) or into a per-sample norm (one block per sample, looping over tiles).
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "outer_grad.h"

namespace imu_fast {
namespace {

constexpr int kRowTile = 16;
constexpr int kColTile = 64;
constexpr int kTokChunk = 32;
constexpr int kThreads = 256;

// acc[j] = sum_t B_i[t, o] A_i[t, k0 + lane + 16 j] for this thread's row o, staged via shared memory.
template <typename T>
__device__ void tile_of_sample(const T* __restrict__ a_i, const T* __restrict__ b_i, int64_t t, int64_t d_in,
                               int64_t d_out, int64_t o0, int64_t k0, T (&a_s)[kTokChunk][kColTile],
                               T (&b_s)[kTokChunk][kRowTile], T (&acc)[4]) {
  const int row = threadIdx.x / 16, lane = threadIdx.x % 16;
#pragma unroll
  for (int j = 0; j < 4; ++j) acc[j] = 0;
  for (int64_t s0 = 0; s0 < t; s0 += kTokChunk) {
    __syncthreads();
    for (int idx = threadIdx.x; idx < kTokChunk * kColTile; idx += blockDim.x) {
      const int s = idx / kColTile, k = idx % kColTile;
      a_s[s][k] = (s0 + s < t && k0 + k < d_in) ? a_i[(s0 + s) * d_in + k0 + k] : T(0);
    }
    for (int idx = threadIdx.x; idx < kTokChunk * kRowTile; idx += blockDim.x) {
      const int s = idx / kRowTile, r = idx % kRowTile;
      b_s[s][r] = (s0 + s < t && o0 + r < d_out) ? b_i[(s0 + s) * d_out + o0 + r] : T(0);
    }
    __syncthreads();
#pragma unroll 8
    for (int s = 0; s < kTokChunk; ++s) {
      const T bv = b_s[s][row];
#pragma unroll
      for (int j = 0; j < 4; ++j) acc[j] += bv * a_s[s][lane + 16 * j];
    }
  }
}

template <typename T>
__global__ void outer_fisher_kernel(const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ f, int64_t n,
                                    int64_t t, int64_t d_in, int64_t d_out) {
  __shared__ T a_s[kTokChunk][kColTile];
  __shared__ T b_s[kTokChunk][kRowTile];
  const int64_t k0 = static_cast<int64_t>(blockIdx.x) * kColTile;
  const int64_t o0 = static_cast<int64_t>(blockIdx.y) * kRowTile;
  const int row = threadIdx.x / 16, lane = threadIdx.x % 16;
  T sum[4] = {0, 0, 0, 0};
  T acc[4];
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

template <typename T>
__global__ void outer_norms_kernel(const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ out, int64_t t,
                                   int64_t d_in, int64_t d_out) {
  __shared__ T a_s[kTokChunk][kColTile];
  __shared__ T b_s[kTokChunk][kRowTile];
  __shared__ T red[kThreads];
  const int64_t i = blockIdx.x;
  T total = 0;
  T acc[4];
  for (int64_t o0 = 0; o0 < d_out; o0 += kRowTile) {
    for (int64_t k0 = 0; k0 < d_in; k0 += kColTile) {
      tile_of_sample(a + i * t * d_in, b + i * t * d_out, t, d_in, d_out, o0, k0, a_s, b_s, acc);
#pragma unroll
      for (int j = 0; j < 4; ++j) total += acc[j] * acc[j];  // padded rows/columns are zero
    }
  }
  red[threadIdx.x] = total;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) red[threadIdx.x] += red[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[i] = red[0];
}

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("imu_fast CUDA ") + what + ": " + cudaGetErrorString(err));
}

}  // namespace

void outer_fisher_cuda(const OuterGradParams& p, void* stream) {
  const dim3 grid((p.d_in + kColTile - 1) / kColTile, (p.d_out + kRowTile - 1) / kRowTile);
  auto s = static_cast<cudaStream_t>(stream);
  if (p.dtype == DType::Float32)
    outer_fisher_kernel<float><<<grid, kThreads, 0, s>>>(static_cast<const float*>(p.a), static_cast<const float*>(p.b),
                                                         static_cast<float*>(p.out), p.n, p.t, p.d_in, p.d_out);
  else
    outer_fisher_kernel<double><<<grid, kThreads, 0, s>>>(static_cast<const double*>(p.a),
                                                          static_cast<const double*>(p.b), static_cast<double*>(p.out),
                                                          p.n, p.t, p.d_in, p.d_out);
  check(cudaGetLastError(), "outer_fisher launch");
}

void outer_norms_cuda(const OuterGradParams& p, void* stream) {
  if (p.n == 0) return;
  auto s = static_cast<cudaStream_t>(stream);
  if (p.dtype == DType::Float32)
    outer_norms_kernel<float><<<p.n, kThreads, 0, s>>>(static_cast<const float*>(p.a), static_cast<const float*>(p.b),
                                                       static_cast<float*>(p.out), p.t, p.d_in, p.d_out);
  else
    outer_norms_kernel<double><<<p.n, kThreads, 0, s>>>(static_cast<const double*>(p.a),
                                                        static_cast<const double*>(p.b), static_cast<double*>(p.out),
                                                        p.t, p.d_in, p.d_out);
  check(cudaGetLastError(), "outer_norms launch");
}

}  // namespace imu_fast
