// CPU kernels for per-sample outer-product gradients g_i = B_i^T A_i (see outer_grad.h).
//
// Both kernels share one register tile: acc[kRows][kCols] = sum_t B_i[t, o0:o0+kRows]^T
// A_i[t, k0:k0+kCols], a (kRows x kCols) block of g_i, contracted over the token axis with the
// accumulators in vector registers. The Fisher kernel squares the block into a running sum over
// samples (threads own column panels, so no two write the same element); the norm kernel squares
// and sums it into one scalar per sample (threads own samples).
#include "outer_grad.h"

#include <algorithm>
#include <vector>

#include "common/cpu_dispatch.h"

namespace imu_fast {
namespace {

constexpr int kRows = 4;   // output features (rows of g_i) per register tile
constexpr int kCols = 32;  // input features (columns of g_i) per register tile

// acc = B_tile^T A_tile over t tokens. ap: packed t x kCols; bp: t rows of stride ldb.
template <typename T>
IMU_INLINE void outer_tile(const T* ap, const T* bp, int64_t ldb, int64_t t, T (&acc)[kRows][kCols]) {
  for (int r = 0; r < kRows; ++r)
    for (int k = 0; k < kCols; ++k) acc[r][k] = 0;
  for (int64_t s = 0; s < t; ++s) {
    const T* arow = ap + s * kCols;
    const T* brow = bp + s * ldb;
#pragma GCC unroll 4
    for (int r = 0; r < kRows; ++r) {
      const T bv = brow[r];
#pragma omp simd
      for (int k = 0; k < kCols; ++k) acc[r][k] += bv * arow[k];
    }
  }
}

// fisher[r][k] += acc^2 for every row tile of one sample, given its packed A panel.
template <typename T>
IMU_INLINE void fisher_panel_body(const T* ap, const T* bp, int64_t ldb, int64_t t, int64_t row_tiles,
                                  T* f, int64_t ldf, int valid_cols, int64_t d_out) {
  T acc[kRows][kCols];
  for (int64_t rt = 0; rt < row_tiles; ++rt) {
    outer_tile(ap, bp + rt * kRows, ldb, t, acc);
    const int rows = static_cast<int>(std::min<int64_t>(kRows, d_out - rt * kRows));
    for (int r = 0; r < rows; ++r) {
      T* frow = f + (rt * kRows + r) * ldf;
      if (valid_cols == kCols) {
#pragma omp simd
        for (int k = 0; k < kCols; ++k) frow[k] += acc[r][k] * acc[r][k];
      } else {
        for (int k = 0; k < valid_cols; ++k) frow[k] += acc[r][k] * acc[r][k];
      }
    }
  }
}

// sum of acc^2 over every row tile of one sample, given its packed A panel.
template <typename T>
IMU_INLINE T norm_panel_body(const T* ap, const T* bp, int64_t ldb, int64_t t, int64_t row_tiles) {
  T acc[kRows][kCols];
  T total = 0;
  for (int64_t rt = 0; rt < row_tiles; ++rt) {
    outer_tile(ap, bp + rt * kRows, ldb, t, acc);
    for (int r = 0; r < kRows; ++r) {
      T s = 0;
#pragma omp simd reduction(+ : s)
      for (int k = 0; k < kCols; ++k) s += acc[r][k] * acc[r][k];
      total += s;
    }
  }
  return total;
}

IMU_CLONES void fisher_panel(const float* ap, const float* bp, int64_t ldb, int64_t t, int64_t rt, float* f,
                             int64_t ldf, int vc, int64_t d_out) {
  fisher_panel_body(ap, bp, ldb, t, rt, f, ldf, vc, d_out);
}
IMU_CLONES void fisher_panel(const double* ap, const double* bp, int64_t ldb, int64_t t, int64_t rt, double* f,
                             int64_t ldf, int vc, int64_t d_out) {
  fisher_panel_body(ap, bp, ldb, t, rt, f, ldf, vc, d_out);
}
IMU_CLONES float norm_panel(const float* ap, const float* bp, int64_t ldb, int64_t t, int64_t rt) {
  return norm_panel_body(ap, bp, ldb, t, rt);
}
IMU_CLONES double norm_panel(const double* ap, const double* bp, int64_t ldb, int64_t t, int64_t rt) {
  return norm_panel_body(ap, bp, ldb, t, rt);
}

// Copies A_i[:, k0:k0+kCols] into a contiguous t x kCols panel, zero past d_in.
template <typename T>
void pack_a(const T* a_i, int64_t t, int64_t d_in, int64_t k0, T* ap) {
  const int64_t cols = std::min<int64_t>(kCols, d_in - k0);
  for (int64_t s = 0; s < t; ++s) {
    const T* src = a_i + s * d_in + k0;
    T* dst = ap + s * kCols;
    for (int64_t k = 0; k < cols; ++k) dst[k] = src[k];
    for (int64_t k = cols; k < kCols; ++k) dst[k] = 0;
  }
}

// B_i with its feature axis zero-padded to a multiple of kRows (rows of stride ldb).
template <typename T>
const T* padded_b(const T* b_i, int64_t t, int64_t d_out, int64_t ldb, std::vector<T>& buf) {
  if (ldb == d_out) return b_i;
  buf.assign(t * ldb, T(0));
  for (int64_t s = 0; s < t; ++s) std::copy(b_i + s * d_out, b_i + (s + 1) * d_out, buf.data() + s * ldb);
  return buf.data();
}

template <typename T>
void outer_fisher_impl(const OuterGradParams& p) {
  const T* a = static_cast<const T*>(p.a);
  const T* b = static_cast<const T*>(p.b);
  T* f = static_cast<T*>(p.out);
  const int64_t col_tiles = ceil_div(p.d_in, kCols);
  const int64_t row_tiles = ceil_div(p.d_out, kRows);
  const int64_t ldb = row_tiles * kRows;
#pragma omp parallel
  {
    std::vector<T> ap(p.t * kCols), bbuf;
#pragma omp for schedule(dynamic, 1)
    for (int64_t ct = 0; ct < col_tiles; ++ct) {
      const int64_t k0 = ct * kCols;
      const int valid_cols = static_cast<int>(std::min<int64_t>(kCols, p.d_in - k0));
      for (int64_t i = 0; i < p.n; ++i) {
        pack_a(a + i * p.t * p.d_in, p.t, p.d_in, k0, ap.data());
        const T* bp = padded_b(b + i * p.t * p.d_out, p.t, p.d_out, ldb, bbuf);
        fisher_panel(ap.data(), bp, ldb, p.t, row_tiles, f + k0, p.d_in, valid_cols, p.d_out);
      }
    }
  }
}

template <typename T>
void outer_norms_impl(const OuterGradParams& p) {
  const T* a = static_cast<const T*>(p.a);
  const T* b = static_cast<const T*>(p.b);
  T* out = static_cast<T*>(p.out);
  const int64_t col_tiles = ceil_div(p.d_in, kCols);
  const int64_t row_tiles = ceil_div(p.d_out, kRows);
  const int64_t ldb = row_tiles * kRows;
#pragma omp parallel
  {
    std::vector<T> ap(p.t * kCols), bbuf;
#pragma omp for schedule(dynamic, 1)
    for (int64_t i = 0; i < p.n; ++i) {
      const T* bp = padded_b(b + i * p.t * p.d_out, p.t, p.d_out, ldb, bbuf);
      T total = 0;
      for (int64_t ct = 0; ct < col_tiles; ++ct) {
        pack_a(a + i * p.t * p.d_in, p.t, p.d_in, ct * kCols, ap.data());
        total += norm_panel(ap.data(), bp, ldb, p.t, row_tiles);
      }
      out[i] = total;
    }
  }
}

}  // namespace

void outer_fisher_cpu(const OuterGradParams& p) {
  if (p.dtype == DType::Float32)
    outer_fisher_impl<float>(p);
  else
    outer_fisher_impl<double>(p);
}

void outer_norms_cpu(const OuterGradParams& p) {
  if (p.dtype == DType::Float32)
    outer_norms_impl<float>(p);
  else
    outer_norms_impl<double>(p);
}

}  // namespace imu_fast
