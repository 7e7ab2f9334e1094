// Plain parameter structs for the classifier-head statistics kernels.
//
// Notation (IMU_SPEC.md section 4): E is the N x C matrix of softmax residuals
// e_i = softmax(z_i) - onehot(y_i), H the N x D matrix of head inputs, and
// H~ = [H, 1] when the head has a bias (W = D + 1 columns) or H otherwise (W = D).
// Every matrix is dense, row-major and contiguous; the Python side guarantees it.
#pragma once

#include <cstdint>

namespace imu_fast {

// Operand dtypes. The CPU kernels take Float32/Float64; the CUDA kernels also read Float16 and
// BFloat16 operands as they are, accumulating (and writing results) in float32.
enum class DType : int { Float32 = 0, Float64 = 1, Float16 = 2, BFloat16 = 3 };

// grad_sum  (C x W) += E^T H~            (sum over samples of per-sample head gradients)
// fisher_sum(C x W) += (E*E)^T (H~*H~)   (sum over samples of squared per-sample gradients)
// CUDA: the samples are cut into `splits` runs; run s writes its partial sums (no +=) to
// grad_sum + s*C*W and fisher_sum + s*C*W, and the caller adds them up.
struct HeadMomentsParams {
  const void* e;
  const void* h;
  void* grad_sum;
  void* fisher_sum;
  int64_t n, c, d;
  bool bias;
  DType dtype;
  int64_t splits = 1;
};

// out[i] = - sum_{c,k} E[i,c] M[c,k] H~[i,k]     (influence of sample i, M is C x W)
// CUDA: E and H are of `dtype`; M and out are in the accumulation dtype (float32 for half types).
struct HeadInfluenceParams {
  const void* e;
  const void* h;
  const void* m;
  void* out;
  int64_t n, c, d;
  bool bias;
  DType dtype;
};

void head_moments_cpu(const HeadMomentsParams& p);
void head_influence_cpu(const HeadInfluenceParams& p);

#ifdef IMU_FAST_WITH_CUDA
// `stream` is a cudaStream_t passed as an opaque pointer; all pointers are device pointers of
// `device`, which is made current for the launch.
void head_moments_cuda(const HeadMomentsParams& p, void* stream, int device);
void head_influence_cuda(const HeadInfluenceParams& p, void* stream, int device);
// Output tiles of the moments kernel (the caller sizes `splits` from it).
int64_t head_moments_cuda_tiles(int64_t c, int64_t d, bool bias);
#endif

}  // namespace imu_fast
