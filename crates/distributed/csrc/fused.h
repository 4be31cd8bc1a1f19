// C interface of libtorch's multi-tensor optimizer kernels that tch does not expose, compiled
// with the c10d shim (dist.h's conventions: NULL on success, otherwise an owned error message to
// release with `dino_dist_free_error`; tensors are `at::Tensor*`, tch's `Tensor::as_mut_ptr()`).
#pragma once

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// `at::_fused_adamw_` (torch.optim.AdamW(fused=True)) over `n` parameters: params, grads,
// exp_avgs and exp_avg_sqs updated in place, `steps` the per-parameter step counts (float
// tensors, already incremented for this step, as torch's `_fused_adamw` passes them). No
// amsgrad, no maximize, no grad scale.
char* dino_fused_adamw(
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
    double eps);

// `at::_foreach_norm(tensors, 2)`: writes `n` new `at::Tensor*` (0-dim norms) into `out`, which
// the caller owns (tch's `Tensor::from_ptr`).
char* dino_foreach_norm(void* const* tensors, int64_t n, void** out);

#ifdef __cplusplus
}
#endif
