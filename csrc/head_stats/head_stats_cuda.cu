// CUDA kernels for the classifier-head statistics (same contracts as head_stats_cpu.cpp).
//
// Moments: one block owns a (kClassTile x kColTile) tile of grad_sum / fisher_sum and one run of
// the samples (grid z: the caller's `splits`, so that a 10-class head still fills the GPU),
// staging kRowChunk rows of E and H~ in shared memory; it writes its run's partial sums, which the
// caller adds in a fixed order. Influence: one block owns kInfRows samples; each thread owns
// output columns k and forms (E M)[i, k] over class chunks staged in shared memory, then
// multiplies by H~[i, k]; a block reduction gives the score. E and H are read in their own dtype
// (half types convert on load); accumulation is float32 (float64 for float64). Scalar FMAs.
#include "common/cuda_utils.cuh"
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

template <typename Acc, typename In>
__device__ __forceinline__ Acc h_tilde(const In* h, int64_t i, int64_t k, int64_t d, bool bias) {
  if (k < d) return to_acc<Acc>(h[i * d + k]);
  return (bias && k == d) ? Acc(1) : Acc(0);
}

template <typename In, typename Acc>
__global__ void head_moments_kernel(const In* __restrict__ e, const In* __restrict__ h, Acc* __restrict__ g,
                                    Acc* __restrict__ f, int64_t n, int64_t c, int64_t d, bool bias,
                                    int64_t per_split) {
  __shared__ Acc e_s[kRowChunk][kClassTile];
  __shared__ Acc h_s[kRowChunk][kColTile];
  const int64_t w = d + (bias ? 1 : 0);
  const int64_t k0 = static_cast<int64_t>(blockIdx.x) * kColTile;
  const int64_t c0 = static_cast<int64_t>(blockIdx.y) * kClassTile;
  const int64_t first = static_cast<int64_t>(blockIdx.z) * per_split;
  const int64_t last = n < first + per_split ? n : first + per_split;
  const int cl = threadIdx.x / 16;    // class within tile
  const int lane = threadIdx.x % 16;  // columns lane, lane + 16, lane + 32, lane + 48
  Acc acc_g[4] = {0, 0, 0, 0};
  Acc acc_f[4] = {0, 0, 0, 0};
  for (int64_t r0 = first; r0 < last; r0 += kRowChunk) {
    for (int idx = threadIdx.x; idx < kRowChunk * kClassTile; idx += blockDim.x) {
      const int r = idx / kClassTile, cc = idx % kClassTile;
      const bool ok = r0 + r < last && c0 + cc < c;
      e_s[r][cc] = ok ? to_acc<Acc>(e[(r0 + r) * c + c0 + cc]) : Acc(0);
    }
    for (int idx = threadIdx.x; idx < kRowChunk * kColTile; idx += blockDim.x) {
      const int r = idx / kColTile, kk = idx % kColTile;
      h_s[r][kk] = r0 + r < last ? h_tilde<Acc>(h, r0 + r, k0 + kk, d, bias) : Acc(0);
    }
    __syncthreads();
#pragma unroll 4
    for (int r = 0; r < kRowChunk; ++r) {
      const Acc ev = e_s[r][cl];
      const Acc e2 = ev * ev;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const Acc hv = h_s[r][lane + 16 * j];
        acc_g[j] += ev * hv;
        acc_f[j] += e2 * hv * hv;
      }
    }
    __syncthreads();
  }
  if (c0 + cl < c) {
    const int64_t base = static_cast<int64_t>(blockIdx.z) * c * w + (c0 + cl) * w;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t k = k0 + lane + 16 * j;
      if (k < w) {
        g[base + k] = acc_g[j];
        f[base + k] = acc_f[j];
      }
    }
  }
}

template <typename In, typename Acc>
__global__ void head_influence_kernel(const In* __restrict__ e, const In* __restrict__ h, const Acc* __restrict__ m,
                                      Acc* __restrict__ out, int64_t n, int64_t c, int64_t d, bool bias) {
  __shared__ Acc e_s[kInfRows][kInfClassChunk];
  __shared__ Acc red[kInfRows][kInfThreads];
  const int64_t w = d + (bias ? 1 : 0);
  const int64_t r0 = static_cast<int64_t>(blockIdx.x) * kInfRows;
  Acc partial[kInfRows];
#pragma unroll
  for (int r = 0; r < kInfRows; ++r) partial[r] = 0;

  for (int64_t kbase = 0; kbase < w; kbase += blockDim.x) {
    const int64_t k = kbase + threadIdx.x;
    Acc acc[kInfRows];
#pragma unroll
    for (int r = 0; r < kInfRows; ++r) acc[r] = 0;
    for (int64_t cb = 0; cb < c; cb += kInfClassChunk) {
      __syncthreads();
      for (int idx = threadIdx.x; idx < kInfRows * kInfClassChunk; idx += blockDim.x) {
        const int r = idx / kInfClassChunk, cc = idx % kInfClassChunk;
        const bool ok = r0 + r < n && cb + cc < c;
        e_s[r][cc] = ok ? to_acc<Acc>(e[(r0 + r) * c + cb + cc]) : Acc(0);
      }
      __syncthreads();
      if (k < w) {
        const int64_t cend = c - cb < kInfClassChunk ? c - cb : kInfClassChunk;
        for (int64_t cc = 0; cc < cend; ++cc) {
          const Acc mv = m[(cb + cc) * w + k];
#pragma unroll
          for (int r = 0; r < kInfRows; ++r) acc[r] += e_s[r][cc] * mv;
        }
      }
    }
    if (k < w) {
#pragma unroll
      for (int r = 0; r < kInfRows; ++r)
        if (r0 + r < n) partial[r] += acc[r] * h_tilde<Acc>(h, r0 + r, k, d, bias);
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

template <typename In, typename Acc>
void launch_moments(const HeadMomentsParams& p, cudaStream_t s) {
  const int64_t w = p.d + (p.bias ? 1 : 0);
  const int64_t per = ((p.n + p.splits - 1) / p.splits + kRowChunk - 1) / kRowChunk * kRowChunk;
  const dim3 grid((w + kColTile - 1) / kColTile, (p.c + kClassTile - 1) / kClassTile, p.splits);
  head_moments_kernel<In, Acc><<<grid, kMomentThreads, 0, s>>>(
      static_cast<const In*>(p.e), static_cast<const In*>(p.h), static_cast<Acc*>(p.grad_sum),
      static_cast<Acc*>(p.fisher_sum), p.n, p.c, p.d, p.bias, per);
}

template <typename In, typename Acc>
void launch_influence(const HeadInfluenceParams& p, cudaStream_t s) {
  const dim3 grid((p.n + kInfRows - 1) / kInfRows);
  head_influence_kernel<In, Acc><<<grid, kInfThreads, 0, s>>>(static_cast<const In*>(p.e),
                                                              static_cast<const In*>(p.h),
                                                              static_cast<const Acc*>(p.m),
                                                              static_cast<Acc*>(p.out), p.n, p.c, p.d, p.bias);
}

}  // namespace

int64_t head_moments_cuda_tiles(int64_t c, int64_t d, bool bias) {
  const int64_t w = d + (bias ? 1 : 0);
  return ((w + kColTile - 1) / kColTile) * ((c + kClassTile - 1) / kClassTile);
}

void head_moments_cuda(const HeadMomentsParams& p, void* stream, int device) {
  if ((p.c + kClassTile - 1) / kClassTile > 65535 || p.splits < 1 || p.splits > 65535)
    throw std::invalid_argument("imu_fast CUDA head_moments: need C / 16 <= 65535 and 1 <= splits <= 65535");
  DeviceGuard guard(device);
  auto s = static_cast<cudaStream_t>(stream);
  switch (p.dtype) {
    case DType::Float32: launch_moments<float, float>(p, s); break;
    case DType::Float64: launch_moments<double, double>(p, s); break;
    case DType::Float16: launch_moments<__half, float>(p, s); break;
    case DType::BFloat16: launch_moments<__nv_bfloat16, float>(p, s); break;
  }
  cuda_check(cudaGetLastError(), "head_moments launch");
}

void head_influence_cuda(const HeadInfluenceParams& p, void* stream, int device) {
  if (p.n == 0) return;
  DeviceGuard guard(device);
  auto s = static_cast<cudaStream_t>(stream);
  switch (p.dtype) {
    case DType::Float32: launch_influence<float, float>(p, s); break;
    case DType::Float64: launch_influence<double, double>(p, s); break;
    case DType::Float16: launch_influence<__half, float>(p, s); break;
    case DType::BFloat16: launch_influence<__nv_bfloat16, float>(p, s); break;
  }
  cuda_check(cudaGetLastError(), "head_influence launch");
}

}  // namespace imu_fast
