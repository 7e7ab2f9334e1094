// The one binding file: argument checks and the Python surface of imu_fast._C.
//
// Kernels take raw addresses, shapes and (for CUDA) a stream, so the extension never links
// libtorch and one wheel serves every torch version. Python passes tensor.data_ptr() values
// of contiguous tensors it has already validated; here we only check what C++ can see.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#ifdef IMU_FAST_WITH_CUDA
#include <cuda_runtime.h>
#endif

#include "head_stats/head_stats.h"
#include "outer_grad/outer_grad.h"
#include "sketch/sketch.h"

namespace py = pybind11;
using namespace imu_fast;

namespace {

DType parse_dtype(const std::string& name, bool half_ok = false) {
  if (name == "float32") return DType::Float32;
  if (name == "float64") return DType::Float64;
  if (half_ok && name == "float16") return DType::Float16;
  if (half_ok && name == "bfloat16") return DType::BFloat16;
  throw std::invalid_argument(std::string("imu_fast._C: dtype must be 'float32' or 'float64'") +
                              (half_ok ? " (or 'float16', 'bfloat16')" : "") + ", got '" + name + "'");
}

#ifdef IMU_FAST_WITH_CUDA
// "80,86,89,90" (from the build) -> {"80", "86", "89", "90"}
std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream ss(text);
  for (std::string item; std::getline(ss, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

int driver_version() {
  int v = 0;
  return cudaDriverGetVersion(&v) == cudaSuccess ? v : 0;
}
#endif

void check_shapes(int64_t n, int64_t c, int64_t d) {
  if (n < 0 || c <= 0 || d <= 0)
    throw std::invalid_argument("imu_fast._C: need n >= 0, c > 0, d > 0; got n=" +
                                std::to_string(n) + " c=" + std::to_string(c) +
                                " d=" + std::to_string(d));
}

HeadMomentsParams make_moments(uintptr_t e, uintptr_t h, uintptr_t g, uintptr_t f, int64_t n, int64_t c, int64_t d,
                                bool bias, const std::string& dtype, bool half_ok = false) {
  check_shapes(n, c, d);
  return {reinterpret_cast<const void*>(e), reinterpret_cast<const void*>(h),
          reinterpret_cast<void*>(g), reinterpret_cast<void*>(f), n, c, d, bias,
          parse_dtype(dtype, half_ok)};
}

HeadInfluenceParams make_influence(uintptr_t e, uintptr_t h, uintptr_t m, uintptr_t out, int64_t n, int64_t c,
                                   int64_t d, bool bias, const std::string& dtype, bool half_ok = false) {
  check_shapes(n, c, d);
  return {reinterpret_cast<const void*>(e), reinterpret_cast<const void*>(h),
          reinterpret_cast<const void*>(m), reinterpret_cast<void*>(out), n, c, d, bias,
          parse_dtype(dtype, half_ok)};
}

OuterGradParams make_outer(uintptr_t a, uintptr_t b, uintptr_t out, int64_t n, int64_t t, int64_t d_in,
                           int64_t d_out, const std::string& dtype, bool half_ok = false) {
  if (n < 0 || t <= 0 || d_in <= 0 || d_out <= 0)
    throw std::invalid_argument("imu_fast._C: need n >= 0 and t, d_in, d_out > 0; got n=" + std::to_string(n) +
                                " t=" + std::to_string(t) + " d_in=" + std::to_string(d_in) +
                                " d_out=" + std::to_string(d_out));
  return {reinterpret_cast<const void*>(a), reinterpret_cast<const void*>(b), reinterpret_cast<void*>(out),
          n, t, d_in, d_out, parse_dtype(dtype, half_ok)};
}

JLParams make_jl(uintptr_t x, uintptr_t out, int64_t n, int64_t w, int64_t ldx, int64_t k, int64_t col0,
                 uint64_t seed, uint32_t stream, uint32_t role, double scale, const std::string& dtype,
                 int bf16_parts) {
  if (n < 0 || w < 0 || k <= 0 || ldx < w || col0 < 0)
    throw std::invalid_argument("imu_fast._C.jl_project: need n >= 0, w >= 0, k > 0, ldx >= w, col0 >= 0; got n=" +
                                std::to_string(n) + " w=" + std::to_string(w) + " k=" + std::to_string(k) +
                                " ldx=" + std::to_string(ldx) + " col0=" + std::to_string(col0));
  if (bf16_parts < 0 || bf16_parts > 3)
    throw std::invalid_argument("imu_fast._C.jl_project: bf16_parts must be 0-3, got " + std::to_string(bf16_parts));
  return {reinterpret_cast<const void*>(x), reinterpret_cast<void*>(out), n, w, ldx, k, col0, seed, stream, role,
          scale, parse_dtype(dtype), bf16_parts};
}

KronParams make_kron(uintptr_t a, uintptr_t b, uintptr_t p_in, uintptr_t p_out, uintptr_t out, int64_t n, int64_t t,
                     int64_t d_in, int64_t d_out, int64_t k_in, int64_t k_out, const std::string& dtype) {
  if (n < 0 || t < 0 || d_in <= 0 || d_out <= 0 || k_in <= 0 || k_out <= 0)
    throw std::invalid_argument("imu_fast._C.kron_sketch: need n, t >= 0 and d_in, d_out, k_in, k_out > 0; got n=" +
                                std::to_string(n) + " t=" + std::to_string(t) + " d_in=" + std::to_string(d_in) +
                                " d_out=" + std::to_string(d_out) + " k_in=" + std::to_string(k_in) +
                                " k_out=" + std::to_string(k_out));
  return {reinterpret_cast<const void*>(a), reinterpret_cast<const void*>(b), reinterpret_cast<const void*>(p_in),
          reinterpret_cast<const void*>(p_out), reinterpret_cast<void*>(out), n, t, d_in, d_out, k_in, k_out,
          parse_dtype(dtype)};
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

  mod.def(
      "philox4x32",
      [](uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint64_t seed) {
        const uint32_t counter[4] = {c0, c1, c2, c3};
        uint32_t out[4];
        philox4x32(counter, seed, out);
        return std::vector<uint32_t>(out, out + 4);
      },
      py::arg("c0"), py::arg("c1"), py::arg("c2"), py::arg("c3"), py::arg("seed"),
      "The four words of Philox4x32-10 for one counter under a 64-bit seed (key = its two halves).");
  mod.def(
      "jl_project_cpu",
      [](uintptr_t x, uintptr_t out, int64_t n, int64_t w, int64_t ldx, int64_t k, int64_t col0, uint64_t seed,
         uint32_t stream, uint32_t role, double scale, const std::string& dtype, int bf16_parts) {
        auto p = make_jl(x, out, n, w, ldx, k, col0, seed, stream, role, scale, dtype, bf16_parts);
        py::gil_scoped_release release;
        jl_project_cpu(p);
      },
      py::arg("x"), py::arg("out"), py::arg("n"), py::arg("w"), py::arg("ldx"), py::arg("k"), py::arg("col0"),
      py::arg("seed"), py::arg("stream"), py::arg("role"), py::arg("scale"), py::arg("dtype"), py::arg("bf16_parts") = 0,
      "out (n x k) = X (n x w, row stride ldx) times the sign matrix's columns col0 .. col0+w, transposed, times scale; "
      "float32 X with bf16_parts > 0 and n >= 12 runs on AMX tiles where available (X split into that many bfloat16 parts).");
  mod.def("jl_amx_available", &jl_amx_available,
          "Whether this CPU and OS run the AMX path of jl_project_cpu (AMX-BF16 tiles, AVX512-BF16, tile permission).");
  mod.def(
      "kron_sketch_cpu",
      [](uintptr_t a, uintptr_t b, uintptr_t p_in, uintptr_t p_out, uintptr_t out, int64_t n, int64_t t, int64_t d_in,
         int64_t d_out, int64_t k_in, int64_t k_out, const std::string& dtype) {
        auto p = make_kron(a, b, p_in, p_out, out, n, t, d_in, d_out, k_in, k_out, dtype);
        py::gil_scoped_release release;
        kron_sketch_cpu(p);
      },
      py::arg("a"), py::arg("b"), py::arg("p_in"), py::arg("p_out"), py::arg("out"), py::arg("n"), py::arg("t"),
      py::arg("d_in"), py::arg("d_out"), py::arg("k_in"), py::arg("k_out"), py::arg("dtype"),
      "out_i (k_out x k_in) = (B_i P_out)^T (A_i P_in) for every sample i.");

#ifdef IMU_FAST_WITH_CUDA
  // Every CUDA entry point takes the stream (a cudaStream_t as an integer) and the index of the
  // device that owns the pointers; the launch is made on that device.
  mod.attr("with_cuda") = true;
  mod.attr("cuda_sass_archs") = split_list(IMU_FAST_CUDA_SASS);
  mod.attr("cuda_ptx_archs") = split_list(IMU_FAST_CUDA_PTX);
  mod.attr("cuda_runtime_version") = CUDART_VERSION;
  mod.def("cuda_driver_version", &driver_version,
          "cudaDriverGetVersion(): the newest CUDA the installed driver supports (e.g. 13000), 0 without one.");
  mod.def("outer_norms_cuda_tiles", &outer_norms_cuda_tiles, py::arg("d_in"), py::arg("d_out"),
          "Tiles per sample of the CUDA norms kernel (the partials scratch holds n x this many).");
  mod.def("head_moments_cuda_tiles", &head_moments_cuda_tiles, py::arg("c"), py::arg("d"), py::arg("bias"));
  mod.def(
      "outer_fisher_cuda",
      [](uintptr_t a, uintptr_t b, uintptr_t out, int64_t n, int64_t t, int64_t d_in, int64_t d_out,
         const std::string& dtype, uintptr_t stream, int device) {
        auto p = make_outer(a, b, out, n, t, d_in, d_out, dtype, true);
        py::gil_scoped_release release;
        outer_fisher_cuda(p, reinterpret_cast<void*>(stream), device);
      },
      py::arg("a"), py::arg("b"), py::arg("out"), py::arg("n"), py::arg("t"), py::arg("d_in"), py::arg("d_out"),
      py::arg("dtype"), py::arg("stream"), py::arg("device"));
  mod.def(
      "outer_norms_cuda",
      [](uintptr_t a, uintptr_t b, uintptr_t out, int64_t n, int64_t t, int64_t d_in, int64_t d_out,
         const std::string& dtype, uintptr_t partials, uintptr_t stream, int device) {
        auto p = make_outer(a, b, out, n, t, d_in, d_out, dtype, true);
        p.partials = reinterpret_cast<void*>(partials);
        py::gil_scoped_release release;
        outer_norms_cuda(p, reinterpret_cast<void*>(stream), device);
      },
      py::arg("a"), py::arg("b"), py::arg("out"), py::arg("n"), py::arg("t"), py::arg("d_in"), py::arg("d_out"),
      py::arg("dtype"), py::arg("partials"), py::arg("stream"), py::arg("device"));
  mod.def(
      "head_moments_cuda",
      [](uintptr_t e, uintptr_t h, uintptr_t g, uintptr_t f, int64_t n, int64_t c, int64_t d,
         bool bias, const std::string& dtype, int64_t splits, uintptr_t stream, int device) {
        auto p = make_moments(e, h, g, f, n, c, d, bias, dtype, true);
        p.splits = splits;
        py::gil_scoped_release release;
        head_moments_cuda(p, reinterpret_cast<void*>(stream), device);
      },
      py::arg("e"), py::arg("h"), py::arg("grad_parts"), py::arg("fisher_parts"), py::arg("n"),
      py::arg("c"), py::arg("d"), py::arg("bias"), py::arg("dtype"), py::arg("splits"), py::arg("stream"),
      py::arg("device"), "Writes `splits` partial (C x W) sums to each of grad_parts and fisher_parts.");
  mod.def(
      "head_influence_cuda",
      [](uintptr_t e, uintptr_t h, uintptr_t m, uintptr_t out, int64_t n, int64_t c, int64_t d,
         bool bias, const std::string& dtype, uintptr_t stream, int device) {
        auto p = make_influence(e, h, m, out, n, c, d, bias, dtype, true);
        py::gil_scoped_release release;
        head_influence_cuda(p, reinterpret_cast<void*>(stream), device);
      },
      py::arg("e"), py::arg("h"), py::arg("m"), py::arg("out"), py::arg("n"), py::arg("c"),
      py::arg("d"), py::arg("bias"), py::arg("dtype"), py::arg("stream"), py::arg("device"),
      "E, H of `dtype`; M and out in float32 (float64 for float64).");
#else
  mod.attr("with_cuda") = false;
  mod.attr("cuda_sass_archs") = std::vector<std::string>{};
  mod.attr("cuda_ptx_archs") = std::vector<std::string>{};
#endif
}
