//! The DINO self-distillation trainer: loss, EMA teacher, AdamW with DINO's schedules and
//! per-parameter clipping, checkpoints, metrics, and the training loop behind `dino train`.

pub mod checkpoint;
pub mod loss;
pub mod metrics;
pub mod optim;
pub mod pretrained;
pub mod runtime;
pub mod schedule;
pub mod teacher;
pub mod trainer;
