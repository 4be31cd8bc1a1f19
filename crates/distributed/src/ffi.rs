//! The C interface of `csrc/dist.h`. Every `*mut c_char` returned is null on success, otherwise an
//! owned error message for [`take_error`].
use std::ffi::{c_char, c_void, CStr};

#[repr(C)]
pub struct Group {
    _private: [u8; 0],
}

pub const SUM: i32 = 0;
pub const AVG: i32 = 1;

extern "C" {
    pub fn dino_dist_init(
        master_addr: *const c_char,
        master_port: u16,
        rank: i32,
        world_size: i32,
        timeout_ms: i64,
        out: *mut *mut Group,
    ) -> *mut c_char;
    pub fn dino_dist_all_reduce(group: *mut Group, tensor: *mut c_void, op: i32) -> *mut c_char;
    pub fn dino_dist_broadcast(group: *mut Group, tensor: *mut c_void, root: i32) -> *mut c_char;
    pub fn dino_dist_barrier(group: *mut Group) -> *mut c_char;
    pub fn dino_dist_destroy(group: *mut Group);
    pub fn dino_dist_free_error(message: *mut c_char);
    pub fn dino_fused_adamw(
        params: *const *mut c_void,
        grads: *const *mut c_void,
        exp_avgs: *const *mut c_void,
        exp_avg_sqs: *const *mut c_void,
        steps: *const *mut c_void,
        n: i64,
        lr: f64,
        beta1: f64,
        beta2: f64,
        weight_decay: f64,
        eps: f64,
    ) -> *mut c_char;
    pub fn dino_foreach_norm(
        tensors: *const *mut c_void,
        n: i64,
        out: *mut *mut c_void,
    ) -> *mut c_char;
}

/// Turns a shim return value into a `Result`, releasing the message.
pub fn take_error(message: *mut c_char) -> anyhow::Result<()> {
    if message.is_null() {
        return Ok(());
    }
    // SAFETY: a non-null return is a NUL-terminated string the shim allocated and we now own.
    let text = unsafe { CStr::from_ptr(message) }
        .to_string_lossy()
        .into_owned();
    unsafe { dino_dist_free_error(message) };
    Err(anyhow::anyhow!(text))
}
