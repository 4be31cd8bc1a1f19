//! The DINO self-distillation trainer: loss, EMA teacher, AdamW / SGD / LARS with DINO's
//! schedules and per-parameter clipping, fp16 loss scaling, checkpoints, metrics, and the
//! training loop behind `dino train`.
//!
//! The pieces can be used alone. The DINO loss on fixed logits (2 global + 2 local crops,
//! batch 1, K = 4 prototypes), with the official temperatures and centering:
//!
//! ```
//! use dino_train::loss::DinoLoss;
//! use tch::{Kind, Tensor};
//!
//! let cfg = dino_config::LossConfig::default(); // student 0.1, teacher 0.04, center 0.9
//! let mut loss = DinoLoss::new(4, 4, &cfg, 1)?;
//! let student = Tensor::randn([4, 4], (Kind::Float, tch::Device::Cpu)); // [n_crops·B, K]
//! let teacher = Tensor::randn([2, 4], (Kind::Float, tch::Device::Cpu)); // [2·B, K]
//! let out = loss.step(&student, &teacher, 0)?; // uses the center, then updates it
//! assert!(out.stats.loss.is_finite() && out.stats.loss > 0.0);
//! assert_eq!(loss.n_loss_terms(), 6); // 2 teacher views × 3 other views
//!
//! // The official lr schedule: linear warm-up, then cosine to min_lr, one value per iteration.
//! let lr = dino_train::schedule::cosine_scheduler(0.001, 1e-6, 3, 10, 1, 0.0)?;
//! assert_eq!(lr.len(), 30);
//! assert_eq!(lr[0], 0.0);
//! assert!((lr[10] - 0.001).abs() < 1e-12);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! `dino train` runs [`trainer::train`]; see `docs/ARCHITECTURE.md` for where each concept of
//! the paper lives.

pub mod accumulation;
pub mod bench;
pub mod checkpoint;
pub mod collapse;
pub mod curves;
pub mod distributed;
pub mod epoch_sums;
pub mod grad_scaler;
/// `dino train --init-from`: student and teacher from an imported or earlier run's weights.
pub mod init_from;
pub mod input;
pub mod loss;
pub mod method;
pub mod metrics;
pub mod objective;
pub mod online_knn;
pub mod optim;
pub mod phases;
pub mod run_logger;
pub mod runtime;
pub mod save_policy;
pub mod schedule;
pub mod supervised;
pub mod teacher;
pub mod trainer;
