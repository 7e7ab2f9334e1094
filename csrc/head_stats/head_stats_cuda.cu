// CUDA kernels for the classifier-head statistics (same contracts as head_stats_cpu.cpp).
//
// Moments: one block owns a (kClassTile x kColTile) tile of grad_sum / fisher_sum and walks over
// all samples, staging kRowChunk rows of E and H~ in shared memory; per-sample gradients exist
// only as products inside registers.
// Influence: one block owns kInfRows samples; each thread owns output columns k and forms
// (E M)[i, k] over class chunks staged in shared memory, then multiplies by H~[i, k]; a block
// reduction gives the score. Accumulation is in the input precision (float32 or float64).
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "head_stats.h"

namespace imu_fast {
namespace {

constexpr int kClassTile = 16;
constexpr int kColTile = 64;
constexpr int kRowChunk = 32;
constexpr int kMomentThreads = 256;  // 16 classes x 16 column lanes, 4 columns per lane
constexpr int kInfRows = 8;
constexpr int kInfClassChunk = 128;
constexpr int kInfThreads = 256;

template <typename T>
__device__ __forceinline__ T h_tilde(const T* h, int64_t i, int64_t k, int64_t d, bool bias) {
  if (k < d) return h[i * d + k];
  return (bias && k == d) ? T(1) : T(0);
}

template <typename T>
__global__ void head_moments_kernel(const T* __restrict__ e, const T* __restrict__ h,
                                    T* __restrict__ g, T* __restrict__ f, int64_t n, int64_t c,
                                    int64_t d, bool bias) {
  __shared__ T e_s[kRowChunk][kClassTile];
  __shared__ T h_s[kRowChunk][kColTile];
  const int64_t w = d + (bias ? 1 : 0);
  const int64_t k0 = static_cast<int64_t>(blockIdx.x) * kColTile;
  const int64_t c0 = static_cast<int64_t>(blockIdx.y) * kClassTile;
  const int cl = threadIdx.x / 16;    // class within tile
  const int lane = threadIdx.x % 16;  // columns lane, lane + 16, lane + 32, lane + 48
  T acc_g[4] = {0, 0, 0, 0};
  T acc_f[4] = {0, 0, 0, 0};
  for (int64_t r0 = 0; r0 < n; r0 += kRowChunk) {
    for (int idx = threadIdx.x; idx < kRowChunk * kClassTile; idx += blockDim.x) {
      const int r = idx / kClassTile, cc = idx % kClassTile;
      const bool ok = r0 + r < n && c0 + cc < c;
      e_s[r][cc] = ok ? e[(r0 + r) * c + c0 + cc] : T(0);
    }
    for (int idx = threadIdx.x; idx < kRowChunk * kColTile; idx += blockDim.x) {
      const int r = idx / kColTile, kk = idx % kColTile;
      h_s[r][kk] = r0 + r < n ? h_tilde(h, r0 + r, k0 + kk, d, bias) : T(0);
    }
    __syncthreads();
#pragma unroll 4
    for (int r = 0; r < kRowChunk; ++r) {
      const T ev = e_s[r][cl];
      const T e2 = ev * ev;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const T hv = h_s[r][lane + 16 * j];
        acc_g[j] += ev * hv;
        acc_f[j] += e2 * hv * hv;
      }
    }
    __syncthreads();
  }
  if (c0 + cl < c) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t k = k0 + lane + 16 * j;
      if (k < w) {
        g[(c0 + cl) * w + k] += acc_g[j];
        f[(c0 + cl) * w + k] += acc_f[j];
      }
    }
  }
}

template <typename T>
__global__ void head_influence_kernel(const T* __restrict__ e, const T* __restrict__ h,
                                      const T* __restrict__ m, T* __restrict__ out, int64_t n,
                                      int64_t c, int64_t d, bool bias) {
  __shared__ T e_s[kInfRows][kInfClassChunk];
  __shared__ T red[kInfRows][kInfThreads];
  const int64_t w = d + (bias ? 1 : 0);
  const int64_t r0 = static_cast<int64_t>(blockIdx.x) * kInfRows;
  T partial[kInfRows];
#pragma unroll
  for (int r = 0; r < kInfRows; ++r) partial[r] = 0;

  for (int64_t kbase = 0; kbase < w; kbase += blockDim.x) {
    const int64_t k = kbase + threadIdx.x;
    T acc[kInfRows];
#pragma unroll
    for (int r = 0; r < kInfRows; ++r) acc[r] = 0;
    for (int64_t cb = 0; cb < c; cb += kInfClassChunk) {
      __syncthreads();
      for (int idx = threadIdx.x; idx < kInfRows * kInfClassChunk; idx += blockDim.x) {
        const int r = idx / kInfClassChunk, cc = idx % kInfClassChunk;
        const bool ok = r0 + r < n && cb + cc < c;
        e_s[r][cc] = ok ? e[(r0 + r) * c + cb + cc] : T(0);
      }
      __syncthreads();
      if (k < w) {
        const int64_t cend = min(static_cast<int64_t>(kInfClassChunk), c - cb);
        for (int64_t cc = 0; cc < cend; ++cc) {
          const T mv = m[(cb + cc) * w + k];
#pragma unroll
          for (int r = 0; r < kInfRows; ++r) acc[r] += e_s[r][cc] * mv;
        }
      }
    }
    if (k < w) {
#pragma unroll
      for (int r = 0; r < kInfRows; ++r)
        if (r0 + r < n) partial[r] += acc[r] * h_tilde(h, r0 + r, k, d, bias);
    }
  }
#pragma unroll
  for (int r = 0; r < kInfRows; ++r) red[r][threadIdx.x] = partial[r];
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) {
#pragma unroll
      for (int r = 0; r < kInfRows; ++r) red[r][threadIdx.x] += red[r][threadIdx.x + s];
    }
    __syncthreads();
  }
  if (threadIdx.x < kInfRows && r0 + threadIdx.x < n) out[r0 + threadIdx.x] = -red[threadIdx.x][0];
}

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("imu_fast CUDA ") + what + ": " + cudaGetErrorString(err));
}

}  // namespace

void head_moments_cuda(const HeadMomentsParams& p, void* stream) {
  const int64_t w = p.d + (p.bias ? 1 : 0);
  const dim3 grid((w + kColTile - 1) / kColTile, (p.c + kClassTile - 1) / kClassTile);
  auto s = static_cast<cudaStream_t>(stream);
  if (p.dtype == DType::Float32)
    head_moments_kernel<float><<<grid, kMomentThreads, 0, s>>>(
        static_cast<const float*>(p.e), static_cast<const float*>(p.h),
        static_cast<float*>(p.grad_sum), static_cast<float*>(p.fisher_sum), p.n, p.c, p.d, p.bias);
  else
    head_moments_kernel<double><<<grid, kMomentThreads, 0, s>>>(
        static_cast<const double*>(p.e), static_cast<const double*>(p.h),
        static_cast<double*>(p.grad_sum), static_cast<double*>(p.fisher_sum), p.n, p.c, p.d,
        p.bias);
  check(cudaGetLastError(), "head_moments launch");
}

void head_influence_cuda(const HeadInfluenceParams& p, void* stream) {
  if (p.n == 0) return;
  const dim3 grid((p.n + kInfRows - 1) / kInfRows);
  auto s = static_cast<cudaStream_t>(stream);
  if (p.dtype == DType::Float32)
    head_influence_kernel<float><<<grid, kInfThreads, 0, s>>>(
        static_cast<const float*>(p.e), static_cast<const float*>(p.h),
        static_cast<const float*>(p.m), static_cast<float*>(p.out), p.n, p.c, p.d, p.bias);
  else
    head_influence_kernel<double><<<grid, kInfThreads, 0, s>>>(
        static_cast<const double*>(p.e), static_cast<const double*>(p.h),
        static_cast<const double*>(p.m), static_cast<double*>(p.out), p.n, p.c, p.d, p.bias);
  check(cudaGetLastError(), "head_influence launch");
}

}  // namespace imu_fast
