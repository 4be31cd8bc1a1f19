// libtorch's fused / multi-tensor optimizer kernels behind a C interface (fused.h). Nothing of
// c10d here: this file only shares the shim's build (build.rs compiles it against the same
// libtorch headers torch-sys uses) and its error conventions.

#include "fused.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

char* fused_message(const std::string& message) {
  char* out = static_cast<char*>(std::malloc(message.size() + 1));
  if (out != nullptr) {
    std::memcpy(out, message.c_str(), message.size() + 1);
  }
  return out;
}

template <typename F>
char* fused_guarded(const char* what, F&& body) {
  try {
    body();
    return nullptr;
  } catch (const c10::Error& e) {
    return fused_message(std::string(what) + ": " + e.what_without_backtrace());
  } catch (const std::exception& e) {
    return fused_message(std::string(what) + ": " + e.what());
  } catch (...) {
    return fused_message(std::string(what) + ": unknown C++ exception");
  }
}

std::vector<at::Tensor> tensors(void* const* ptrs, int64_t n) {
  std::vector<at::Tensor> out;
  out.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    out.push_back(*static_cast<at::Tensor*>(ptrs[i]));
  }
  return out;
}

}  // namespace

extern "C" char* dino_fused_adamw(
    void* const* params,
    void* const* grads,
    void* const* exp_avgs,
    void* const* exp_avg_sqs,
    void* const* steps,
    int64_t n,
    double lr,
    double beta1,
    double beta2,
    double weight_decay,
    double eps) {
  return fused_guarded("_fused_adamw_", [&] {
    at::NoGradGuard no_grad;
    auto p = tensors(params, n);
    auto g = tensors(grads, n);
    auto m = tensors(exp_avgs, n);
    auto v = tensors(exp_avg_sqs, n);
    auto s = tensors(steps, n);
    at::_fused_adamw_(p, g, m, v, {}, s, lr, beta1, beta2, weight_decay, eps,
                      /*amsgrad=*/false, /*maximize=*/false);
  });
}

extern "C" char* dino_foreach_norm(void* const* ptrs, int64_t n, void** out) {
  return fused_guarded("_foreach_norm", [&] {
    at::NoGradGuard no_grad;
    auto norms = at::_foreach_norm(tensors(ptrs, n), 2);
    for (int64_t i = 0; i < n; ++i) {
      out[i] = new at::Tensor(norms[static_cast<size_t>(i)]);
    }
  });
}
