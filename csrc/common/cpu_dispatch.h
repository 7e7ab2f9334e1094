// Shared helpers for the CPU kernels: run-time ISA dispatch and small integer maths.
//
// Hot loops are compiled for AVX-512, AVX2 and a baseline target (GCC target_clones) and picked
// when the module loads, so one wheel runs on any x86-64 CPU without -march=native.
#pragma once

#include <cstdint>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define IMU_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define IMU_CLONES
#endif
#define IMU_INLINE inline __attribute__((always_inline))

namespace imu_fast {

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace imu_fast
