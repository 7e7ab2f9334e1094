// The one binding file: argument checks and the Python surface of imu_fast._C.
//
// Kernels take raw addresses, shapes and (for CUDA) a stream, so the extension never links
// libtorch and one wheel serves every torch version. Python passes tensor.data_ptr() values
// of contiguous tensors it has already validated; here we only check what C++ can see.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "head_stats/head_stats.h"
#include "outer_grad/outer_grad.h"

namespace py = pybind11;
using namespace imu_fast;

namespace {

DType parse_dtype(const std::string& name) {
  if (name == "float32") return DType::Float32;
  if (name == "float64") return DType::Float64;
  throw std::invalid_argument("imu_fast._C: dtype must be 'float32' or 'float64', got '" + name +
                              "'");
}

void check_shapes(int64_t n, int64_t c, int64_t d) {
  if (n < 0 || c <= 0 || d <= 0)
    throw std::invalid_argument("imu_fast._C: need n >= 0, c > 0, d > 0; got n=" +
                                std::to_string(n) + " c=" + std::to_string(c) +
                                " d=" + std::to_string(d));
}

HeadMomentsParams make_moments(uintptr_t e, uintptr_t h, uintptr_t g, uintptr_t f, int64_t n, int64_t c, int64_t d,
               bool bias, const std::string& dtype) {
  check_shapes(n, c, d);
  return {reinterpret_cast<const void*>(e), reinterpret_cast<const void*>(h),
           reinterpret_cast<void*>(g), reinterpret_cast<void*>(f), n, c, d, bias,
           parse_dtype(dtype)};
}

HeadInfluenceParams make_influence(uintptr_t e, uintptr_t h, uintptr_t m, uintptr_t out, int64_t n, int64_t c,
                 int64_t d, bool bias, const std::string& dtype) {
  check_shapes(n, c, d);
  return {reinterpret_cast<const void*>(e), reinterpret_cast<const void*>(h),
           reinterpret_cast<const void*>(m), reinterpret_cast<void*>(out), n, c, d, bias,
           parse_dtype(dtype)};
}

OuterGradParams make_outer(uintptr_t a, uintptr_t b, uintptr_t out, int64_t n, int64_t t, int64_t d_in,
                           int64_t d_out, const std::string& dtype) {
  if (n < 0 || t <= 0 || d_in <= 0 || d_out <= 0)
    throw std::invalid_argument("imu_fast._C: need n >= 0 and t, d_in, d_out > 0; got n=" + std::to_string(n) +
                                " t=" + std::to_string(t) + " d_in=" + std::to_string(d_in) +
                                " d_out=" + std::to_string(d_out));
  return {reinterpret_cast<const void*>(a), reinterpret_cast<const void*>(b), reinterpret_cast<void*>(out),
          n, t, d_in, d_out, parse_dtype(dtype)};
}

}  // namespace

PYBIND11_MODULE(_C, mod) {
  mod.doc() = "imu_fast native kernels (CPU always; CUDA when built with nvcc)";

  mod.def(
      "head_moments_cpu",
      [](uintptr_t e, uintptr_t h, uintptr_t g, uintptr_t f, int64_t n, int64_t c, int64_t d,
         bool bias, const std::string& dtype) {
        auto p = make_moments(e, h, g, f, n, c, d, bias, dtype);
        py::gil_scoped_release release;
        head_moments_cpu(p);
      },
      py::arg("e"), py::arg("h"), py::arg("grad_sum"), py::arg("fisher_sum"), py::arg("n"),
      py::arg("c"), py::arg("d"), py::arg("bias"), py::arg("dtype"),
      "grad_sum += E^T H~ and fisher_sum += (E*E)^T (H~*H~), in place.");

  mod.def(
      "head_influence_cpu",
      [](uintptr_t e, uintptr_t h, uintptr_t m, uintptr_t out, int64_t n, int64_t c, int64_t d,
         bool bias, const std::string& dtype) {
        auto p = make_influence(e, h, m, out, n, c, d, bias, dtype);
        py::gil_scoped_release release;
        head_influence_cpu(p);
      },
      py::arg("e"), py::arg("h"), py::arg("m"), py::arg("out"), py::arg("n"), py::arg("c"),
      py::arg("d"), py::arg("bias"), py::arg("dtype"),
      "out[i] = -sum_{c,k} E[i,c] M[c,k] H~[i,k].");

  mod.def(
      "outer_fisher_cpu",
      [](uintptr_t a, uintptr_t b, uintptr_t out, int64_t n, int64_t t, int64_t d_in, int64_t d_out,
         const std::string& dtype) {
        auto p = make_outer(a, b, out, n, t, d_in, d_out, dtype);
        py::gil_scoped_release release;
        outer_fisher_cpu(p);
      },
      py::arg("a"), py::arg("b"), py::arg("out"), py::arg("n"), py::arg("t"), py::arg("d_in"), py::arg("d_out"),
      py::arg("dtype"), "out (d_out x d_in) += sum_i (B_i^T A_i)^2, in place.");
  mod.def(
      "outer_norms_cpu",
      [](uintptr_t a, uintptr_t b, uintptr_t out, int64_t n, int64_t t, int64_t d_in, int64_t d_out,
         const std::string& dtype) {
        auto p = make_outer(a, b, out, n, t, d_in, d_out, dtype);
        py::gil_scoped_release release;
        outer_norms_cpu(p);
      },
      py::arg("a"), py::arg("b"), py::arg("out"), py::arg("n"), py::arg("t"), py::arg("d_in"), py::arg("d_out"),
      py::arg("dtype"), "out[i] = ||B_i^T A_i||_F^2.");

#ifdef IMU_FAST_WITH_CUDA
  mod.attr("with_cuda") = true;
  mod.def(
      "outer_fisher_cuda",
      [](uintptr_t a, uintptr_t b, uintptr_t out, int64_t n, int64_t t, int64_t d_in, int64_t d_out,
         const std::string& dtype, uintptr_t stream) {
        auto p = make_outer(a, b, out, n, t, d_in, d_out, dtype);
        py::gil_scoped_release release;
        outer_fisher_cuda(p, reinterpret_cast<void*>(stream));
      },
      py::arg("a"), py::arg("b"), py::arg("out"), py::arg("n"), py::arg("t"), py::arg("d_in"), py::arg("d_out"),
      py::arg("dtype"), py::arg("stream"));
  mod.def(
      "outer_norms_cuda",
      [](uintptr_t a, uintptr_t b, uintptr_t out, int64_t n, int64_t t, int64_t d_in, int64_t d_out,
         const std::string& dtype, uintptr_t stream) {
        auto p = make_outer(a, b, out, n, t, d_in, d_out, dtype);
        py::gil_scoped_release release;
        outer_norms_cuda(p, reinterpret_cast<void*>(stream));
      },
      py::arg("a"), py::arg("b"), py::arg("out"), py::arg("n"), py::arg("t"), py::arg("d_in"), py::arg("d_out"),
      py::arg("dtype"), py::arg("stream"));
  mod.def(
      "head_moments_cuda",
      [](uintptr_t e, uintptr_t h, uintptr_t g, uintptr_t f, int64_t n, int64_t c, int64_t d,
         bool bias, const std::string& dtype, uintptr_t stream) {
        auto p = make_moments(e, h, g, f, n, c, d, bias, dtype);
        py::gil_scoped_release release;
        head_moments_cuda(p, reinterpret_cast<void*>(stream));
      },
      py::arg("e"), py::arg("h"), py::arg("grad_sum"), py::arg("fisher_sum"), py::arg("n"),
      py::arg("c"), py::arg("d"), py::arg("bias"), py::arg("dtype"), py::arg("stream"));
  mod.def(
      "head_influence_cuda",
      [](uintptr_t e, uintptr_t h, uintptr_t m, uintptr_t out, int64_t n, int64_t c, int64_t d,
         bool bias, const std::string& dtype, uintptr_t stream) {
        auto p = make_influence(e, h, m, out, n, c, d, bias, dtype);
        py::gil_scoped_release release;
        head_influence_cuda(p, reinterpret_cast<void*>(stream));
      },
      py::arg("e"), py::arg("h"), py::arg("m"), py::arg("out"), py::arg("n"), py::arg("c"),
      py::arg("d"), py::arg("bias"), py::arg("dtype"), py::arg("stream"));
#else
  mod.attr("with_cuda") = false;
#endif
}
