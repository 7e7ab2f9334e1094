// The JL projection on Intel AMX tiles (float32 X; see sketch.h for the formula).
//
// The sign matrix's entries are +-1, exact in bfloat16, so only X is rounded: it is split into
// `bf16_parts` bfloat16 parts (x = hi + mid + lo: three parts carry 24 bits of mantissa, float32's
// precision; two about 16; one 8) and every part is multiplied with the same sign tiles on the
// tile unit, accumulating in float32. Work items are Philox groups of 128 output coordinates,
// two halves of 64 (four 16 x 16 accumulator tiles each). Columns are walked in blocks that fit L2
// (every item passes over a block before the next, so X comes from memory once) and, inside a
// block, in chunks of 256: an item computes the chunk's Philox words once (the same generator as
// the FMA kernel), and for each half writes them as +-1 bfloat16 sign tiles in the tile unit's
// pair-interleaved layout (32 KiB, L1-resident), then for every 16-row block of X loads its
// accumulators, runs 8 column steps x 4 tiles x parts tile products, and stores them back.
// The sign matrix is never stored beyond one chunk. Needs AMX-TILE, AMX-BF16, AVX512-BF16 and
// the kernel's permission to use tile data (Linux arch_prctl); jl_amx_available() checks all.
#include "sketch.h"

#include <algorithm>
#include <cstring>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#define IMU_AMX 1
#endif

namespace imu_fast {

#ifdef IMU_AMX
namespace {

constexpr int kRows = 16;                 // rows of X per tile
constexpr int kStep = 32;                 // columns per tile product (bfloat16 pairs x 16)
constexpr int kTiles = 4;                 // 16-coordinate accumulator tiles per item
constexpr int kItem = 16 * kTiles;        // output coordinates per item
constexpr int kGroup = 2 * kItem;         // output coordinates per Philox call (as in the FMA kernel)
constexpr int kChunkCols = 256;           // columns per generated chunk
constexpr int kSteps = kChunkCols / kStep;
constexpr int kTileElems = 16 * 32;       // bfloat16 values in one 16-row x 64-byte tile
constexpr int64_t kBlockBytes = 1 << 20;  // bytes of X per column block (an L2's share)

struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

#define IMU_AMX_TARGET __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl,avx512bf16,bmi2")))

bool cpu_has_amx() {
  unsigned a, b, c, d;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  const bool tile = (d >> 24) & 1, bf16 = (d >> 22) & 1, bw = (b >> 30) & 1, vl = (b >> 31) & 1, bmi2 = (b >> 8) & 1;
  if (!__get_cpuid_count(7, 1, &a, &b, &c, &d)) return false;
  const bool avx512bf16 = (a >> 5) & 1;
  return tile && bf16 && bw && vl && bmi2 && avx512bf16;
}

bool request_tile_data() {
  constexpr long kReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kReqXcompPerm, kXfeatureXtiledata) == 0;
}

IMU_AMX_TARGET inline __m512 widen(__m256bh v) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32((__m256i)v), 16));
}

// parts planes of (rows_p x wp) bfloat16, zero-padded: x = sum of the planes, rounded to nearest.
IMU_AMX_TARGET void split_x(const JLParams& p, int64_t rows_p, int64_t wp, int parts, uint16_t* planes) {
  const float* x = static_cast<const float*>(p.x);
  const int64_t plane = rows_p * wp;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < p.n; ++r) {
    for (int64_t c = 0; c < p.w; c += 16) {
      const int count = static_cast<int>(std::min<int64_t>(16, p.w - c));
      const __mmask16 valid = static_cast<__mmask16>((1u << count) - 1u);
      __m512 rest = _mm512_maskz_loadu_ps(valid, x + r * p.ldx + c);
      for (int q = 0; q < parts; ++q) {
        const __m256bh part = _mm512_cvtneps_pbh(rest);
        _mm256_mask_storeu_epi16(planes + q * plane + r * wp + c, valid, (__m256i)part);
        rest = _mm512_sub_ps(rest, widen(part));
      }
    }
  }
}

// Sign tiles of one chunk: tile (t, s) holds columns s*32 .. s*32+31 of the chunk (rows = column
// pairs) for coordinates j_off + 16 t .. + 15, each row [s(j, 2q), s(j, 2q+1)] for j = 0..15.
IMU_AMX_TARGET void sign_tiles(const uint32_t* words, int j_off, uint16_t* tiles) {
  const __m512i plus = _mm512_set1_epi16(0x3F80), minus = _mm512_set1_epi16(static_cast<short>(0xBF80));
  for (int t = 0; t < kTiles; ++t) {
    const int jj = j_off + 16 * t;
    const int word = (jj >> 5) & 3, shift = jj & 31;
    for (int s = 0; s < kSteps; ++s) {
      uint16_t* tile = tiles + (t * kSteps + s) * kTileElems;
      for (int q = 0; q < 16; ++q) {
        const int col = s * kStep + 2 * q;
        const uint32_t even = (words[4 * col + word] >> shift) & 0xFFFFu;
        const uint32_t odd = (words[4 * (col + 1) + word] >> shift) & 0xFFFFu;
        const __mmask32 minus_at = _pdep_u32(even, 0x55555555u) | _pdep_u32(odd, 0xAAAAAAAAu);
        _mm512_storeu_si512(tile + q * 32, _mm512_mask_blend_epi16(minus_at, plus, minus));
      }
    }
  }
}

#define IMU_TILE_PRODUCTS(T)                                    \
  do {                                                          \
    _tile_loadd(7, tile_data + ((T) * kSteps + s) * kTileElems, 64); \
    _tile_dpbf16ps(T, 4, 7);                                    \
    if (parts > 1) _tile_dpbf16ps(T, 5, 7);                     \
    if (parts > 2) _tile_dpbf16ps(T, 6, 7);                     \
  } while (0)

IMU_AMX_TARGET void amx_items(const JLParams& p, const uint16_t* planes, int64_t rows_p, int64_t wp, int parts) {
  const int64_t groups = (p.k + kGroup - 1) / kGroup;
  const int64_t kp = (p.k + kItem - 1) / kItem * kItem;  // accumulator row length
  const int64_t plane = rows_p * wp;
  const int64_t stride = wp * 2;  // bytes between rows of a plane
  // Columns per block: one block of X (every row, every part) stays in L2 while each group of
  // coordinates passes over it, so X is read from memory once instead of once per group.
  const int64_t fit = kBlockBytes / (rows_p * parts * 2) / kChunkCols * kChunkCols;
  const int64_t block = std::max<int64_t>(kChunkCols, fit);
  std::vector<float> acc(static_cast<size_t>(rows_p) * kp, 0.0f);
#pragma omp parallel
  {
    TileConfig config;
    for (int i = 0; i < 8; ++i) {
      config.colsb[i] = 64;
      config.rows[i] = 16;
    }
    _tile_loadconfig(&config);
    std::vector<uint32_t> words(4 * kChunkCols);
    std::vector<uint16_t> tiles(kTiles * kSteps * kTileElems);
    for (int64_t b0 = 0; b0 < wp; b0 += block) {
      const int64_t b1 = std::min(wp, b0 + block);
#pragma omp for schedule(static)
      for (int64_t g = 0; g < groups; ++g) {  // one Philox group: two items of 64 coordinates
        for (int64_t c0 = b0; c0 < b1; c0 += kChunkCols) {
          philox_columns(p.col0 + c0, kChunkCols, static_cast<uint32_t>(g), p.stream, p.role, p.seed, words.data());
          for (int half = 0; half < 2; ++half) {
            const int64_t j0 = g * kGroup + half * kItem;
            if (j0 >= kp) break;
            sign_tiles(words.data(), half * kItem, tiles.data());
            const uint16_t* tile_data = tiles.data();
            for (int64_t rb = 0; rb < rows_p; rb += kRows) {
              float* c = acc.data() + rb * kp + j0;
              _tile_loadd(0, c, kp * 4);
              _tile_loadd(1, c + 16, kp * 4);
              _tile_loadd(2, c + 32, kp * 4);
              _tile_loadd(3, c + 48, kp * 4);
              for (int s = 0; s < kSteps; ++s) {
                const uint16_t* a = planes + rb * wp + c0 + s * kStep;
                _tile_loadd(4, a, stride);
                if (parts > 1) _tile_loadd(5, a + plane, stride);
                if (parts > 2) _tile_loadd(6, a + 2 * plane, stride);
                IMU_TILE_PRODUCTS(0);
                IMU_TILE_PRODUCTS(1);
                IMU_TILE_PRODUCTS(2);
                IMU_TILE_PRODUCTS(3);
              }
              _tile_stored(0, c, kp * 4);
              _tile_stored(1, c + 16, kp * 4);
              _tile_stored(2, c + 32, kp * 4);
              _tile_stored(3, c + 48, kp * 4);
            }
          }
        }
      }
    }
    _tile_release();
  }
  float* out = static_cast<float*>(p.out);
  const float scale = static_cast<float>(p.scale);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < p.n; ++r)
    for (int64_t j = 0; j < p.k; ++j) out[r * p.k + j] = acc[r * kp + j] * scale;
}

}  // namespace

bool jl_amx_available() {
  static const bool ok = cpu_has_amx() && request_tile_data();
  return ok;
}

void jl_project_amx(const JLParams& p) {
  const int parts = std::max(1, std::min(3, p.bf16_parts));
  const int64_t rows_p = (p.n + kRows - 1) / kRows * kRows;
  const int64_t wp = (p.w + kChunkCols - 1) / kChunkCols * kChunkCols;
  std::vector<uint16_t> planes(static_cast<size_t>(parts) * rows_p * wp, 0);
  split_x(p, rows_p, wp, parts, planes.data());
  amx_items(p, planes.data(), rows_p, wp, parts);
}

#else

bool jl_amx_available() { return false; }
void jl_project_amx(const JLParams&) {}

#endif

}  // namespace imu_fast
