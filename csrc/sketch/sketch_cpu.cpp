// CPU kernels for gradient sketches (see sketch.h).
//
// JL: work items are (group of 128 output coordinates, run of up to 64 rows of X). An item walks
// the columns in chunks of 256: it computes the chunk's Philox words (16 counters at a time),
// expands them into a 256 x 128 tile of +-scale values (L2-resident scratch, regenerated for the
// next chunk, so the k x P matrix never exists), and adds the tile's product with 4-row blocks of X
// into the item's 64 x 128 accumulator. Items write disjoint parts of `out`: no races, one
// parallel region, no barrier inside it.
// Kronecker: threads own samples. Per run of 8 tokens, A_i P_in and B_i P_out are formed in an
// 8 x k register/L1 tile (P packed in 16-column panels) and contracted at once into the sample's
// k_out x k_in block; neither product reaches memory.
#include "sketch.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "common/cpu_dispatch.h"

namespace imu_fast {

namespace {
constexpr uint32_t kRoundA = 0xD2511F53u, kRoundB = 0xCD9E8D57u;
constexpr uint32_t kKeyA = 0x9E3779B9u, kKeyB = 0xBB67AE85u;
constexpr int kLanes = 16;  // Philox counters computed together
}  // namespace

IMU_INLINE void philox_round(uint32_t& c0, uint32_t& c1, uint32_t& c2, uint32_t& c3, uint32_t k0, uint32_t k1) {
  const uint64_t pb = uint64_t(kRoundB) * c2;
  const uint64_t pa = uint64_t(kRoundA) * c0;
  const uint32_t n0 = uint32_t(pb >> 32) ^ c1 ^ k0;
  const uint32_t n2 = uint32_t(pa >> 32) ^ c3 ^ k1;
  c1 = uint32_t(pb);
  c3 = uint32_t(pa);
  c0 = n0;
  c2 = n2;
}

// words[4 c + q] = word q of the Philox call of column col + c (c < count) in row group `group`.
IMU_CLONES void philox_columns(int64_t col, int count, uint32_t group, uint32_t stream, uint32_t role, uint64_t seed,
                               uint32_t* words) {
  for (int base = 0; base < count; base += kLanes) {
    uint32_t c0[kLanes], c1[kLanes], c2[kLanes], c3[kLanes];
#pragma omp simd
    for (int l = 0; l < kLanes; ++l) {
      const uint64_t p = uint64_t(col + base + l);
      c0[l] = uint32_t(p);
      c1[l] = group;
      c2[l] = stream;
      c3[l] = role + 256u * uint32_t(p >> 32);
    }
    uint32_t k0 = uint32_t(seed), k1 = uint32_t(seed >> 32);
    for (int r = 0; r < 10; ++r) {
#pragma omp simd
      for (int l = 0; l < kLanes; ++l) philox_round(c0[l], c1[l], c2[l], c3[l], k0, k1);
      k0 += kKeyA;
      k1 += kKeyB;
    }
    const int lanes = std::min(kLanes, count - base);
    for (int l = 0; l < lanes; ++l) {
      uint32_t* w = words + 4 * (base + l);
      w[0] = c0[l];
      w[1] = c1[l];
      w[2] = c2[l];
      w[3] = c3[l];
    }
  }
}

namespace {

constexpr int kGroup = 128;    // output coordinates per Philox call
constexpr int kChunk = 256;    // columns per generated tile
constexpr int kRowBlock = 4;   // rows of X per register tile
constexpr int kHalf = 64;      // output coordinates per register tile
constexpr int kRowChunk = 64;  // rows of X per work item
constexpr int kTok = 8;        // tokens per Kronecker register tile
constexpr int kPanel = 16;     // columns per packed panel of P

// s[c * kGroup + j] = +-scale for the first `valid` coordinates of the group, 0 past them.
template <typename T>
IMU_INLINE void expand_body(const uint32_t* words, int count, int valid, T scale, T* s) {
  for (int c = 0; c < count; ++c) {
    T* row = s + c * kGroup;
    for (int q = 0; q < 4; ++q) {
      const uint32_t word = words[4 * c + q];
#pragma omp simd
      for (int b = 0; b < 32; ++b) row[q * 32 + b] = ((word >> b) & 1u) ? -scale : scale;
    }
    for (int j = valid; j < kGroup; ++j) row[j] = 0;
  }
}

// acc (kRowBlock x kHalf, row stride kGroup) += X rows (count columns) times the tile s.
template <typename T>
IMU_INLINE void tile_body(const T* const* xr, int count, const T* s, T* acc_rows) {
  T acc[kRowBlock][kHalf];
  for (int r = 0; r < kRowBlock; ++r)
    for (int v = 0; v < kHalf; ++v) acc[r][v] = acc_rows[r * kGroup + v];
  for (int c = 0; c < count; ++c) {
    const T* sc = s + c * kGroup;
#pragma GCC unroll 4
    for (int r = 0; r < kRowBlock; ++r) {
      const T g = xr[r][c];
#pragma omp simd
      for (int v = 0; v < kHalf; ++v) acc[r][v] += g * sc[v];
    }
  }
  for (int r = 0; r < kRowBlock; ++r)
    for (int v = 0; v < kHalf; ++v) acc_rows[r * kGroup + v] = acc[r][v];
}

IMU_CLONES void expand(const uint32_t* w, int count, int valid, float scale, float* s) {
  expand_body(w, count, valid, scale, s);
}
IMU_CLONES void expand(const uint32_t* w, int count, int valid, double scale, double* s) {
  expand_body(w, count, valid, scale, s);
}
IMU_CLONES void tile(const float* const* xr, int count, const float* s, float* acc) { tile_body(xr, count, s, acc); }
IMU_CLONES void tile(const double* const* xr, int count, const double* s, double* acc) {
  tile_body(xr, count, s, acc);
}

template <typename T>
void jl_impl(const JLParams& p) {
  const T* x = static_cast<const T*>(p.x);
  T* out = static_cast<T*>(p.out);
  const int64_t groups = ceil_div(p.k, kGroup);
  const int64_t row_chunks = ceil_div(p.n, kRowChunk);
  const T scale = static_cast<T>(p.scale);
#pragma omp parallel
  {
    std::vector<uint32_t> words(4 * kChunk);
    std::vector<T> s(static_cast<size_t>(kChunk) * kGroup), acc(static_cast<size_t>(kRowChunk) * kGroup);
    std::vector<T> zeros(kChunk, T(0));
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < groups * row_chunks; ++item) {
      const int64_t g = item / row_chunks;
      const int64_t r0 = (item % row_chunks) * kRowChunk;
      const int64_t r1 = std::min<int64_t>(p.n, r0 + kRowChunk);
      const int valid = static_cast<int>(std::min<int64_t>(kGroup, p.k - g * kGroup));
      std::fill(acc.begin(), acc.end(), T(0));
      for (int64_t c0 = 0; c0 < p.w; c0 += kChunk) {
        const int count = static_cast<int>(std::min<int64_t>(kChunk, p.w - c0));
        philox_columns(p.col0 + c0, count, static_cast<uint32_t>(g), p.stream, p.role, p.seed, words.data());
        expand(words.data(), count, valid, scale, s.data());
        for (int64_t rb = r0; rb < r1; rb += kRowBlock) {
          const T* xr[kRowBlock];
          for (int r = 0; r < kRowBlock; ++r) xr[r] = rb + r < r1 ? x + (rb + r) * p.ldx + c0 : zeros.data();
          for (int h = 0; h < valid; h += kHalf) tile(xr, count, s.data() + h, acc.data() + (rb - r0) * kGroup + h);
        }
      }
      for (int64_t r = r0; r < r1; ++r)
        std::copy(acc.data() + (r - r0) * kGroup, acc.data() + (r - r0) * kGroup + valid, out + r * p.k + g * kGroup);
    }
  }
}

// y (rows x kPanel, row stride ldy) = X rows (depth columns) times a packed panel (depth x kPanel).
template <typename T>
IMU_INLINE void panel_body(const T* const* xr, int64_t depth, const T* panel, T* y, int64_t ldy) {
  T acc[kTok][kPanel];
  for (int r = 0; r < kTok; ++r)
    for (int v = 0; v < kPanel; ++v) acc[r][v] = 0;
  for (int64_t c = 0; c < depth; ++c) {
    const T* pc = panel + c * kPanel;
#pragma GCC unroll 8
    for (int r = 0; r < kTok; ++r) {
      const T xv = xr[r][c];
#pragma omp simd
      for (int v = 0; v < kPanel; ++v) acc[r][v] += xv * pc[v];
    }
  }
  for (int r = 0; r < kTok; ++r)
    for (int v = 0; v < kPanel; ++v) y[r * ldy + v] = acc[r][v];
}

// out (k_out x ldo) += sum over `rows` tokens of bp[t]^T ap[t].
template <typename T>
IMU_INLINE void contract_body(const T* bp, int64_t ldb, const T* ap, int64_t lda, int rows, int64_t k_out, T* out,
                              int64_t ldo) {
  for (int r = 0; r < rows; ++r)
    for (int64_t o = 0; o < k_out; ++o) {
      const T bv = bp[r * ldb + o];
      T* orow = out + o * ldo;
      const T* arow = ap + r * lda;
#pragma omp simd
      for (int64_t j = 0; j < lda; ++j) orow[j] += bv * arow[j];
    }
}

IMU_CLONES void panel(const float* const* xr, int64_t depth, const float* pn, float* y, int64_t ldy) {
  panel_body(xr, depth, pn, y, ldy);
}
IMU_CLONES void panel(const double* const* xr, int64_t depth, const double* pn, double* y, int64_t ldy) {
  panel_body(xr, depth, pn, y, ldy);
}
IMU_CLONES void contract(const float* bp, int64_t ldb, const float* ap, int64_t lda, int rows, int64_t k_out,
                         float* out, int64_t ldo) {
  contract_body(bp, ldb, ap, lda, rows, k_out, out, ldo);
}
IMU_CLONES void contract(const double* bp, int64_t ldb, const double* ap, int64_t lda, int rows, int64_t k_out,
                         double* out, int64_t ldo) {
  contract_body(bp, ldb, ap, lda, rows, k_out, out, ldo);
}

// P (depth x k) packed as ceil(k / kPanel) panels of depth x kPanel, zero past column k.
template <typename T>
std::vector<T> pack_panels(const T* p, int64_t depth, int64_t k) {
  const int64_t panels = ceil_div(k, kPanel);
  std::vector<T> out(static_cast<size_t>(panels * depth * kPanel), T(0));
  for (int64_t q = 0; q < panels; ++q)
    for (int64_t c = 0; c < depth; ++c)
      for (int v = 0; v < kPanel && q * kPanel + v < k; ++v) out[(q * depth + c) * kPanel + v] = p[c * k + q * kPanel + v];
  return out;
}

// y (rows x panels*kPanel) = X rows times every panel of P.
template <typename T>
void project_tokens(const T* const* xr, int64_t depth, const std::vector<T>& packed, int64_t panels, T* y) {
  for (int64_t q = 0; q < panels; ++q)
    panel(xr, depth, packed.data() + q * depth * kPanel, y + q * kPanel, panels * kPanel);
}

template <typename T>
void kron_impl(const KronParams& p) {
  const T* a = static_cast<const T*>(p.a);
  const T* b = static_cast<const T*>(p.b);
  T* out = static_cast<T*>(p.out);
  const int64_t pin = ceil_div(p.k_in, kPanel), pout = ceil_div(p.k_out, kPanel);
  const std::vector<T> packed_in = pack_panels(static_cast<const T*>(p.p_in), p.d_in, p.k_in);
  const std::vector<T> packed_out = pack_panels(static_cast<const T*>(p.p_out), p.d_out, p.k_out);
  const int64_t ldi = pin * kPanel, ldo = pout * kPanel;
#pragma omp parallel
  {
    std::vector<T> ap(kTok * ldi), bp(kTok * ldo), block(p.k_out * ldi);
    std::vector<T> zeros(std::max(p.d_in, p.d_out), T(0));
#pragma omp for schedule(dynamic, 1)
    for (int64_t i = 0; i < p.n; ++i) {
      const T* a_i = a + i * p.t * p.d_in;
      const T* b_i = b + i * p.t * p.d_out;
      std::fill(block.begin(), block.end(), T(0));
      for (int64_t t0 = 0; t0 < p.t; t0 += kTok) {
        const int rows = static_cast<int>(std::min<int64_t>(kTok, p.t - t0));
        const T* ar[kTok];
        const T* br[kTok];
        for (int r = 0; r < kTok; ++r) {
          ar[r] = r < rows ? a_i + (t0 + r) * p.d_in : zeros.data();
          br[r] = r < rows ? b_i + (t0 + r) * p.d_out : zeros.data();
        }
        project_tokens(ar, p.d_in, packed_in, pin, ap.data());
        project_tokens(br, p.d_out, packed_out, pout, bp.data());
        contract(bp.data(), ldo, ap.data(), ldi, rows, p.k_out, block.data(), ldi);
      }
      T* out_i = out + i * p.k_out * p.k_in;
      for (int64_t o = 0; o < p.k_out; ++o) std::memcpy(out_i + o * p.k_in, block.data() + o * ldi, p.k_in * sizeof(T));
    }
  }
}

}  // namespace

void philox4x32(const uint32_t counter[4], uint64_t seed, uint32_t out[4]) {
  uint32_t c0 = counter[0], c1 = counter[1], c2 = counter[2], c3 = counter[3];
  uint32_t k0 = uint32_t(seed), k1 = uint32_t(seed >> 32);
  for (int r = 0; r < 10; ++r) {
    philox_round(c0, c1, c2, c3, k0, k1);
    k0 += kKeyA;
    k1 += kKeyB;
  }
  out[0] = c0;
  out[1] = c1;
  out[2] = c2;
  out[3] = c3;
}

void jl_project_cpu(const JLParams& p) {
  // Below a few rows the tiles' 16-row blocks are mostly padding: the FMA kernel is faster there.
  constexpr int64_t kAmxMinRows = 12;
  if (p.dtype == DType::Float32 && p.bf16_parts > 0 && p.n >= kAmxMinRows && jl_amx_available())
    jl_project_amx(p);
  else if (p.dtype == DType::Float32)
    jl_impl<float>(p);
  else
    jl_impl<double>(p);
}

void kron_sketch_cpu(const KronParams& p) {
  if (p.dtype == DType::Float32)
    kron_impl<float>(p);
  else
    kron_impl<double>(p);
}

}  // namespace imu_fast
