// CPU kernels for the classifier-head statistics (OpenMP over output tiles / sample blocks; one
// parallel region per call).
//
// Both kernels are GEMM-shaped: the moments kernel contracts over samples, the influence kernel
// over classes. Each packs small panels so that the innermost loop runs over a fixed number of
// contiguous lanes that GCC vectorises, with the accumulators held in registers. The hot loops
// are multiversioned by ISA (common/cpu_dispatch.h).
#include "head_stats.h"

#include "common/cpu_dispatch.h"

#include <algorithm>
#include <cstring>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif


namespace imu_fast {
namespace {

constexpr int64_t kMomentRowBlock = 256;  // samples per packed panel
constexpr int kMomentClasses = 4;         // classes per register tile
constexpr int kMomentCols = 32;           // output columns per register tile
constexpr int kInfluenceRows = 8;         // samples per register tile
constexpr int kInfluenceCols = 32;        // columns of M per register tile
constexpr int kSmallRows = 4;             // samples per step of the few-classes influence path
constexpr int64_t kSmallClasses = 32;     // at most this many classes take that path

// Value of H~[i, k]: the bias column is 1, padding columns are 0.
template <typename T>
IMU_INLINE T h_tilde(const T* h, int64_t i, int64_t k, int64_t d, bool bias) {
  if (k < d) return h[i * d + k];
  return (bias && k == d) ? T(1) : T(0);
}

// ---------------------------------------------------------------------------------------------
// Moments: acc_g[c][k] += e[i][c] * h[i][k], acc_f[c][k] += e[i][c]^2 * h[i][k]^2 over a panel.
// et/et2: packed (classes x rows) residuals and their squares, hp/hp2: packed (rows x kMomentCols).
template <typename T>
IMU_INLINE void moments_tile_body(const T* et, const T* et2, int64_t et_stride, const T* hp,
                                  const T* hp2, int64_t rows, T* g, T* f, int64_t out_stride,
                                  int valid_classes, int valid_cols) {
  T acc_g[kMomentClasses][kMomentCols] = {};
  T acc_f[kMomentClasses][kMomentCols] = {};
  for (int64_t r = 0; r < rows; ++r) {
    const T* hrow = hp + r * kMomentCols;
    const T* h2row = hp2 + r * kMomentCols;
#pragma GCC unroll 4
    for (int c = 0; c < kMomentClasses; ++c) {
      const T e = et[c * et_stride + r];
      const T e2 = et2[c * et_stride + r];
#pragma omp simd
      for (int k = 0; k < kMomentCols; ++k) {
        acc_g[c][k] += e * hrow[k];
        acc_f[c][k] += e2 * h2row[k];
      }
    }
  }
  for (int c = 0; c < valid_classes; ++c) {
    for (int k = 0; k < valid_cols; ++k) {
      g[c * out_stride + k] += acc_g[c][k];
      f[c * out_stride + k] += acc_f[c][k];
    }
  }
}

IMU_CLONES void moments_tile(const float* et, const float* et2, int64_t s, const float* hp,
                             const float* hp2, int64_t rows, float* g, float* f, int64_t os,
                             int vc, int vk) {
  moments_tile_body(et, et2, s, hp, hp2, rows, g, f, os, vc, vk);
}
IMU_CLONES void moments_tile(const double* et, const double* et2, int64_t s, const double* hp,
                             const double* hp2, int64_t rows, double* g, double* f, int64_t os,
                             int vc, int vk) {
  moments_tile_body(et, et2, s, hp, hp2, rows, g, f, os, vc, vk);
}

// Column tiles [first, last) of thread `tid` out of `threads`: a fixed partition, so each thread
// owns the same output columns for every panel of samples and no barrier is needed between panels.
inline void thread_share(int64_t tiles, int tid, int threads, int64_t& first, int64_t& last) {
  first = tiles * tid / threads;
  last = tiles * (tid + 1) / threads;
}

template <typename T>
void head_moments_impl(const HeadMomentsParams& p) {
  const T* e = static_cast<const T*>(p.e);
  const T* h = static_cast<const T*>(p.h);
  T* g = static_cast<T*>(p.grad_sum);
  T* f = static_cast<T*>(p.fisher_sum);
  const int64_t n = p.n, c = p.c, d = p.d;
  const int64_t w = d + (p.bias ? 1 : 0);
  const int64_t c_pad = ceil_div(c, kMomentClasses) * kMomentClasses;
  const int64_t col_tiles = ceil_div(w, kMomentCols);
  const int64_t class_tiles = c_pad / kMomentClasses;

  // One parallel region per call and no barrier inside it (a barrier per panel of samples stalls
  // for a scheduler tick whenever another process holds a core). Each thread owns fixed column
  // tiles and packs its own transposed copy of each panel's residuals: C x 256 values against
  // its C x 256 x (its columns) multiply-adds, so the duplicated packing costs well under 1%.
#pragma omp parallel
  {
    int tid = 0, threads = 1;
#ifdef _OPENMP
    tid = omp_get_thread_num();
    threads = omp_get_num_threads();
#endif
    int64_t kt_first, kt_last;
    thread_share(col_tiles, tid, threads, kt_first, kt_last);
    if (kt_first < kt_last) {
      std::vector<T> et(c_pad * kMomentRowBlock, T(0)), et2(c_pad * kMomentRowBlock, T(0));
      std::vector<T> hp(kMomentRowBlock * kMomentCols), hp2(kMomentRowBlock * kMomentCols);
      for (int64_t r0 = 0; r0 < n; r0 += kMomentRowBlock) {
        const int64_t rows = std::min(kMomentRowBlock, n - r0);
        // Residuals of the panel, transposed to classes x rows (padding classes stay zero).
        for (int64_t r = 0; r < rows; ++r) {
          const T* erow = e + (r0 + r) * c;
          for (int64_t cc = 0; cc < c; ++cc) {
            et[cc * kMomentRowBlock + r] = erow[cc];
            et2[cc * kMomentRowBlock + r] = erow[cc] * erow[cc];
          }
        }
        for (int64_t kt = kt_first; kt < kt_last; ++kt) {
          const int64_t k0 = kt * kMomentCols;
          const int valid_cols = static_cast<int>(std::min<int64_t>(kMomentCols, w - k0));
          for (int64_t r = 0; r < rows; ++r) {
            for (int k = 0; k < kMomentCols; ++k) {
              const T v = h_tilde(h, r0 + r, k0 + k, d, p.bias);
              hp[r * kMomentCols + k] = v;
              hp2[r * kMomentCols + k] = v * v;
            }
          }
          for (int64_t ct = 0; ct < class_tiles; ++ct) {
            const int64_t c0 = ct * kMomentClasses;
            const int valid_classes = static_cast<int>(std::min<int64_t>(kMomentClasses, c - c0));
            moments_tile(et.data() + c0 * kMomentRowBlock, et2.data() + c0 * kMomentRowBlock, kMomentRowBlock,
                         hp.data(), hp2.data(), rows, g + c0 * w + k0, f + c0 * w + k0, w, valid_classes,
                         valid_cols);
          }
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Influence: for a tile of kInfluenceRows samples, R[i][k] = sum_c e[i][c] M[c][k] over one
// column panel of M, then out[i] -= sum_k R[i][k] H~[i][k].
// ep: packed (classes x kInfluenceRows) residuals, mp: packed (classes x kInfluenceCols) panel.
template <typename T>
IMU_INLINE void influence_tile_body(const T* ep, const T* mp, int64_t classes, const T* hp,
                                    T* partial) {
  T acc[kInfluenceRows][kInfluenceCols] = {};
  for (int64_t cc = 0; cc < classes; ++cc) {
    const T* mrow = mp + cc * kInfluenceCols;
#pragma GCC unroll 8
    for (int r = 0; r < kInfluenceRows; ++r) {
      const T ev = ep[cc * kInfluenceRows + r];
#pragma omp simd
      for (int k = 0; k < kInfluenceCols; ++k) acc[r][k] += ev * mrow[k];
    }
  }
  for (int r = 0; r < kInfluenceRows; ++r) {
    T s = 0;
#pragma omp simd reduction(+ : s)
    for (int k = 0; k < kInfluenceCols; ++k) s += acc[r][k] * hp[r * kInfluenceCols + k];
    partial[r] += s;
  }
}

IMU_CLONES void influence_tile(const float* ep, const float* mp, int64_t classes, const float* hp,
                               float* partial) {
  influence_tile_body(ep, mp, classes, hp, partial);
}
IMU_CLONES void influence_tile(const double* ep, const double* mp, int64_t classes,
                               const double* hp, double* partial) {
  influence_tile_body(ep, mp, classes, hp, partial);
}

// Few classes: out[i] = -sum_c e[i][c] <M[c, :], h~_i>, four samples at a time. Each dot runs
// over a contiguous row of M and of H (no packing); M (C x W) stays in L1.
template <typename T>
IMU_INLINE void influence_rows_body(const T* e, const T* h, const T* m, int64_t c, int64_t d, bool bias,
                                    int64_t r0, int rows, T* out) {
  const int64_t w = d + (bias ? 1 : 0);
  T score[kSmallRows] = {};
  const T* hr[kSmallRows];
  for (int r = 0; r < kSmallRows; ++r) hr[r] = h + (r0 + std::min(r, rows - 1)) * d;
  for (int64_t cc = 0; cc < c; ++cc) {
    const T* mrow = m + cc * w;
    T s0 = 0, s1 = 0, s2 = 0, s3 = 0;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
    for (int64_t k = 0; k < d; ++k) {
      const T mv = mrow[k];
      s0 += mv * hr[0][k];
      s1 += mv * hr[1][k];
      s2 += mv * hr[2][k];
      s3 += mv * hr[3][k];
    }
    const T b = bias ? mrow[d] : T(0);
    const T dots[kSmallRows] = {s0 + b, s1 + b, s2 + b, s3 + b};
    for (int r = 0; r < rows; ++r) score[r] += e[(r0 + r) * c + cc] * dots[r];
  }
  for (int r = 0; r < rows; ++r) out[r0 + r] = -score[r];
}

IMU_CLONES void influence_rows(const float* e, const float* h, const float* m, int64_t c, int64_t d, bool bias,
                               int64_t r0, int rows, float* out) {
  influence_rows_body(e, h, m, c, d, bias, r0, rows, out);
}
IMU_CLONES void influence_rows(const double* e, const double* h, const double* m, int64_t c, int64_t d,
                               bool bias, int64_t r0, int rows, double* out) {
  influence_rows_body(e, h, m, c, d, bias, r0, rows, out);
}

template <typename T>
void head_influence_impl(const HeadInfluenceParams& p) {
  const T* e = static_cast<const T*>(p.e);
  const T* h = static_cast<const T*>(p.h);
  const T* m = static_cast<const T*>(p.m);
  T* out = static_cast<T*>(p.out);
  const int64_t n = p.n, c = p.c, d = p.d;
  const int64_t w = d + (p.bias ? 1 : 0);
  const int64_t col_tiles = ceil_div(w, kInfluenceCols);

  if (c <= kSmallClasses) {
    const int64_t blocks = ceil_div(n, kSmallRows);
#pragma omp parallel for schedule(dynamic, 16)
    for (int64_t rb = 0; rb < blocks; ++rb) {
      const int64_t r0 = rb * kSmallRows;
      influence_rows(e, h, m, c, d, p.bias, r0, static_cast<int>(std::min<int64_t>(kSmallRows, n - r0)), out);
    }
    return;
  }

  // M repacked once into column panels (col_tiles x C x kInfluenceCols), zero-padded; one
  // parallel region with a single barrier between the repacking and its use.
  std::vector<T> mp(col_tiles * c * kInfluenceCols);
  const int64_t row_tiles = ceil_div(n, kInfluenceRows);
#pragma omp parallel
  {
#pragma omp for schedule(static)
    for (int64_t kt = 0; kt < col_tiles; ++kt) {
      for (int64_t cc = 0; cc < c; ++cc) {
        for (int k = 0; k < kInfluenceCols; ++k) {
          const int64_t col = kt * kInfluenceCols + k;
          mp[(kt * c + cc) * kInfluenceCols + k] = col < w ? m[cc * w + col] : T(0);
        }
      }
    }
    std::vector<T> ep(c * kInfluenceRows), hp(kInfluenceRows * kInfluenceCols);
#pragma omp for schedule(dynamic, 8)
    for (int64_t rt = 0; rt < row_tiles; ++rt) {
      const int64_t r0 = rt * kInfluenceRows;
      const int valid_rows = static_cast<int>(std::min<int64_t>(kInfluenceRows, n - r0));
      for (int64_t cc = 0; cc < c; ++cc)
        for (int r = 0; r < kInfluenceRows; ++r)
          ep[cc * kInfluenceRows + r] = r < valid_rows ? e[(r0 + r) * c + cc] : T(0);
      T partial[kInfluenceRows] = {};
      for (int64_t kt = 0; kt < col_tiles; ++kt) {
        for (int r = 0; r < kInfluenceRows; ++r)
          for (int k = 0; k < kInfluenceCols; ++k)
            hp[r * kInfluenceCols + k] =
                r < valid_rows ? h_tilde(h, r0 + r, kt * kInfluenceCols + k, d, p.bias) : T(0);
        influence_tile(ep.data(), mp.data() + kt * c * kInfluenceCols, c, hp.data(), partial);
      }
      for (int r = 0; r < valid_rows; ++r) out[r0 + r] = -partial[r];
    }
  }
}

}  // namespace

void head_moments_cpu(const HeadMomentsParams& p) {
  if (p.dtype == DType::Float32)
    head_moments_impl<float>(p);
  else
    head_moments_impl<double>(p);
}

void head_influence_cpu(const HeadInfluenceParams& p) {
  if (p.dtype == DType::Float32)
    head_influence_impl<float>(p);
  else
    head_influence_impl<double>(p);
}

}  // namespace imu_fast
