//! The DINO method: student and teacher networks, the loss with its center, the optimizer and
//! the EMA, with one training step split as dinov2's `SSLMetaArch` splits it —
//! [`DinoMethod::forward_backward`] (teacher on the 2 global crops without gradient, student on
//! all crops, loss, center update, backward), [`DinoMethod::optimizer_step`] (per-parameter
//! clipping, last layer frozen in the first epochs, AdamW / SGD / LARS; under fp16 the loss
//! scaler's unscale, skip and update around them) and
//! [`DinoMethod::update_teacher`] (EMA). The loop around it is [`crate::trainer::train`].
//!
//! Data parallel: [`Dist`] hooks average the center and the gradients across processes inside
//! these calls (see [`crate::distributed`]); with one process they do nothing.

use crate::accumulation::Window;
use crate::checkpoint::{CheckpointTensors, LoadedCheckpoint};
use crate::distributed::Dist;
use crate::grad_scaler::{GradScaler, ScalerOptions};
use crate::init_from::{init_student, InitReport};
use crate::input::Normalizer;
use crate::loss::ibot::{IbotPatchLoss, MaskedPatches};
use crate::loss::koleo::{koleo, koleo_term};
use crate::loss::stats::{self, IBOT, KOLEO};
use crate::loss::{DinoLoss, LossError, LossStats, TeacherTargets};
use crate::metrics::check_finite;
use crate::optim::{frozen_last_layer, Optimizer, StepOutcome};
use crate::phases::{Phase, PhaseClock, PhaseTimes};
use crate::teacher::{init_teacher_from_student, FlatEma};
use dino_config::{Centering, Config};
use dino_data::batch::MultiCropBatch;
use dino_model::{
    with_precision, BackboneConfig, ComputePrecision, DinoHead, MultiCropWrapper, TokenScope,
};
use std::cell::RefCell;
use tch::{nn, Device, Kind, Tensor};

/// The student's forward on all crops: backbone CLS features `[n_crops·B, D]`, head output
/// `[n_crops·B, K]`, and under iBOT the head outputs of the masked patches `[M, K]`.
type StudentForward = (Tensor, Tensor, Option<Tensor>);

/// Everything one DINO training step changes, and how it changes it.
pub struct DinoMethod {
    /// Student variables (`backbone.*`, `head.*`, the official PyTorch names).
    pub student_vs: nn::VarStore,
    /// Student network (all crops, stochastic depth).
    pub student: MultiCropWrapper,
    /// Teacher variables, same names.
    pub teacher_vs: nn::VarStore,
    /// Teacher network (2 global crops, no stochastic depth, never gets gradients).
    pub teacher: MultiCropWrapper,
    /// The DINO loss and its center.
    pub loss: DinoLoss,
    /// The optimizer (`optim.optimizer`) over the student's trainable parameters.
    pub optimizer: Optimizer,
    /// The fp16 loss scaler (`runtime.precision = "fp16"` only).
    pub scaler: Option<GradScaler>,
    /// The teacher's EMA over the optimizer's flat groups.
    ema: FlatEma,
    param_names: Vec<String>,
    input: Normalizer,
    device: Device,
    precision: ComputePrecision,
    seed: u64,
    clip_grad: f64,
    freeze_last_layer: usize,
    freeze_backbone_epochs: usize,
    /// Whether the current step's epoch is inside `schedule.freeze_backbone_epochs` (set by
    /// [`Self::forward_backward_crops`] and [`Self::optimizer_step`], read by
    /// [`Self::update_teacher`], which the loop calls after them in the same step).
    backbone_frozen: bool,
    per_crop_group: bool,
    /// Teacher forward beside the student forward, one thread each ([`Self::forward_overlapped`]).
    overlap_teacher: bool,
    /// The backbone tokens the DINO loss reads (CLS only: `model.cls_only_last_block`), for
    /// student and teacher alike. A method with a patch-token loss (iBOT) would ask for
    /// [`TokenScope::AllTokens`] here.
    scope: TokenScope,
    /// Sum of the batch centers of the current accumulation window's micro-batches.
    center_sum: Option<Tensor>,
    /// `loss.koleo_weight` (0: no KoLeo term).
    koleo_weight: f64,
    /// iBOT's separate heads (`ibot.separate_head`: student, teacher at `ibot_head.*`); `None`
    /// with the head shared with DINO or iBOT off.
    ibot_heads: Option<(DinoHead, DinoHead)>,
    /// Sum of the iBOT batch centers of the current window's micro-batches that masked any
    /// patch, and their number.
    ibot_center_sum: Option<(Tensor, usize)>,
    /// The phase clock of `dino bench train`'s time split (off in training).
    clock: RefCell<Option<PhaseClock>>,
}

impl DinoMethod {
    /// Builds the student from `tch::manual_seed(runtime.seed)` and the teacher as its copy
    /// (official: `teacher.load_state_dict(student.state_dict())`, teacher without drop-path),
    /// then the optimizer over the student and the loss for `n_crops` crops. With several
    /// processes every rank starts from rank 0's weights (DDP's broadcast at construction).
    ///
    /// # Errors
    /// Model configuration errors, libtorch errors, a failed broadcast.
    pub fn new(
        cfg: &Config,
        n_crops: usize,
        device: Device,
        precision: ComputePrecision,
        dist: &Dist,
    ) -> anyhow::Result<Self> {
        let ibot = cfg.ibot.enabled();
        let backbone = BackboneConfig::from_model(&cfg.model)?.with_mask_token(ibot);
        tch::manual_seed(cfg.runtime.seed as i64);
        let student_vs = nn::VarStore::new(device);
        let mut student = MultiCropWrapper::new(&student_vs.root(), &backbone, &cfg.head)?;
        student.pack_groups = cfg.runtime.pack_crop_groups;
        let mut teacher_vs = nn::VarStore::new(device);
        let teacher = MultiCropWrapper::new(
            &teacher_vs.root(),
            backbone.clone().without_drop_path(),
            &cfg.head,
        )?;
        // dinov2 builds `ibot_head` after `dino_head`, in student and teacher alike.
        let ibot_heads = if ibot && cfg.ibot.separate_head {
            let head = ibot_head_config(cfg);
            let d = backbone.embed_dim();
            Some((
                DinoHead::new(&(student_vs.root() / "ibot_head"), d, &head)?,
                DinoHead::new(&(teacher_vs.root() / "ibot_head"), d, &head)?,
            ))
        } else {
            None
        };
        init_teacher_from_student(&mut teacher_vs, &student_vs)?;
        if dist.world_size > 1 {
            dist.broadcast_from_main(&student_vs)?;
            init_teacher_from_student(&mut teacher_vs, &student_vs)?;
        }
        let optimizer = Optimizer::from_var_store(&student_vs, &cfg.optim)?;
        let ema = FlatEma::new(&teacher_vs, &student_vs, optimizer.flat_groups())?;
        let scaler = if precision.needs_loss_scaling() {
            Some(GradScaler::new(ScalerOptions::default(), device)?)
        } else {
            None
        };
        let mut loss = DinoLoss::new(cfg.head.out_dim, n_crops, &cfg.loss, cfg.optim.epochs)?;
        if ibot {
            let out_dim = match cfg.ibot.separate_head {
                true => cfg.ibot.head_out_dim,
                false => cfg.head.out_dim,
            };
            loss = loss.with_ibot(IbotPatchLoss::new(
                out_dim,
                cfg.ibot.loss_weight,
                &cfg.loss,
            )?);
        }
        let param_names = optimizer.param_names().map(str::to_string).collect();
        Ok(Self {
            student_vs,
            student,
            teacher_vs,
            teacher,
            loss,
            optimizer,
            scaler,
            ema,
            param_names,
            input: Normalizer::new(cfg.augmentation.mean, cfg.augmentation.std, device)?,
            device,
            precision,
            seed: cfg.runtime.seed,
            clip_grad: cfg.optim.clip_grad,
            freeze_last_layer: cfg.schedule.freeze_last_layer,
            freeze_backbone_epochs: cfg.schedule.freeze_backbone_epochs,
            backbone_frozen: false,
            per_crop_group: cfg.optim.backward_per_crop_group,
            overlap_teacher: cfg.runtime.overlap_teacher,
            // The CLS-only last block (`model.cls_only_last_block`) is off under iBOT: its
            // patch loss reads the patch tokens of the last block, student's and teacher's.
            scope: match ibot {
                true => TokenScope::AllTokens,
                false => TokenScope::for_cls_loss(cfg.model.cls_only_last_block),
            },
            center_sum: None,
            koleo_weight: cfg.loss.koleo_weight,
            ibot_heads,
            ibot_center_sum: None,
            clock: RefCell::new(None),
        })
    }

    /// Restores student, teacher, optimizer state, center and, under fp16, the loss scaler from
    /// a checkpoint. As the official `restart_from_checkpoint`, a scaler state is used only by an
    /// fp16 run, and an fp16 run resuming a checkpoint without one starts a fresh scaler (said in
    /// the log).
    ///
    /// # Errors
    /// A checkpoint that does not fit these networks or this optimizer, or a malformed scaler
    /// state.
    pub fn restore(&mut self, ck: &LoadedCheckpoint) -> anyhow::Result<()> {
        ck.restore_student(&self.student_vs)?;
        ck.restore_teacher(&self.teacher_vs)?;
        self.optimizer.load_state(&ck.optim_state())?;
        for name in self.loss.centering_state_names() {
            self.loss
                .set_centering_state(name, ck.center_state(name)?)?;
        }
        if let Some(scaler) = &mut self.scaler {
            let state = ck.scaler_state();
            if state.is_empty() {
                tracing::info!(
                    "the checkpoint has no fp16 loss-scaler state (written in {}): the scaler \
                     starts again at its initial scale",
                    if ck.meta.precision.is_empty() {
                        "another precision"
                    } else {
                        ck.meta.precision.as_str()
                    }
                );
            } else {
                scaler
                    .load_state(&state)
                    .map_err(|e| anyhow::anyhow!("checkpoint loss scaler: {e}"))?;
            }
        }
        Ok(())
    }

    /// The backbone tokens the step reads ([`TokenScope::AllTokens`] under iBOT, whatever
    /// `model.cls_only_last_block` says).
    pub fn token_scope(&self) -> TokenScope {
        self.scope
    }

    /// The device the networks live on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// The forward precision in force (`fp32`, `bf16` or `fp16`).
    pub fn precision(&self) -> ComputePrecision {
        self.precision
    }

    /// The first half of a step at global iteration `it` (official `train_one_epoch` up to
    /// `loss.backward()`): teacher forward on the 2 global crops without gradient, student
    /// forward on all crops, the loss against the current center, then backward, with
    /// `zero_grad` before the first micro-batch of the accumulation `window` and, after its
    /// last, the center update and the gradients averaged across ranks
    /// ([`crate::accumulation`]; [`Window::SINGLE`] is the official step). Returns the loss of
    /// this micro-batch over all ranks (the mean over ranks, which every rank logs and checks)
    /// and the teacher diagnostics.
    ///
    /// Under `model.cls_only_last_block` (default) teacher and student run their ViT's last
    /// block for the CLS token only ([`TokenScope::ClsOnly`]): the loss reads nothing else, and
    /// the math is the full block's up to float rounding. Under `runtime.overlap_teacher` (CPU,
    /// two or more libtorch threads, no iBOT, joint backward) the teacher's forward runs in a
    /// second thread beside the student's (`forward_overlapped`); under
    /// `runtime.pack_crop_groups` the student's global and local crops go through each ViT
    /// block together (`dino_model::VisionTransformer::forward_groups`).
    ///
    /// Stochastic depth draws from libtorch's generator seeded by (`runtime.seed`,
    /// micro-batch index, rank), so a resumed run draws the masks an uninterrupted one draws.
    /// While the batch's epoch is inside `schedule.freeze_backbone_epochs`, both backbones run
    /// in evaluation mode (BatchNorm statistics used and left alone, no stochastic depth).
    ///
    /// # Host syncs per step
    /// One, as the official loop's `math.isfinite(loss.item())`: the loss is read back for the
    /// finiteness check before backward, and the loss diagnostics (teacher entropy, mean
    /// entropy, center norm), computed on the device beside it, come back in the same read
    /// (one small copy; a sync costs the same for one value or four). Nothing else in
    /// [`Self::forward_backward`], [`Self::optimizer_step`] or [`Self::update_teacher`] waits
    /// for the device: the batch goes up from pinned memory without blocking (CUDA), the
    /// gradients are written into the flat buffers on the device, the clip norms and
    /// coefficients stay there ([`crate::optim::ClipNorms`]), and the update and the EMA are
    /// device ops. Exceptions: under fp16 the loss scaler's skip decision reads the scale and
    /// its inf flag back (one more, as torch's `GradScaler.step`); with
    /// `optim.backward_per_crop_group` each crop group's partial loss is checked before its
    /// backward (one per group, and one for the diagnostics); with several processes the
    /// logged loss is averaged over the ranks after that read (a collective on a host value).
    ///
    /// # Errors
    /// A non-finite loss ([`crate::metrics::NonFiniteLoss`], before backward, so no gradient
    /// of it exists), libtorch errors, a failed collective.
    pub fn forward_backward(
        &mut self,
        batch: &MultiCropBatch,
        it: usize,
        window: Window,
        dist: &Dist,
    ) -> anyhow::Result<LossStats> {
        let crops = self.input_crops(batch)?;
        let position = (batch.epoch as usize, batch.step as usize);
        let masks = self.input_masks(batch)?;
        self.forward_backward_masked(&crops, masks.as_ref(), position, it, window, dist)
    }

    /// The iBOT masks of `batch` as a bool `[2·B, N]` tensor on the device (view-major, as
    /// the global crops), or `None` when the batch has none.
    ///
    /// # Errors
    /// libtorch errors.
    pub fn input_masks(&self, batch: &MultiCropBatch) -> anyhow::Result<Option<Tensor>> {
        if !batch.has_masks() {
            return Ok(None);
        }
        let n = batch.mask_patches() as i64;
        let bytes: Vec<u8> = batch.masks.iter().map(|&m| u8::from(m)).collect();
        let t = Tensor::from_slice(&bytes)
            .f_reshape([2 * batch.batch_size as i64, n])?
            .f_to_kind(Kind::Bool)?
            .f_to_device(self.device)?;
        Ok(Some(t))
    }

    /// Whether the iBOT term is on (`ibot.loss_weight > 0`): the step then needs the batch's
    /// masks.
    pub fn uses_masks(&self) -> bool {
        self.loss.ibot().is_some()
    }

    /// The crops of `batch` as the networks take them: normalized float on the device (official
    /// `ToTensor + Normalize`), `[2·B, 3, Hg, Wg]` globals first, then `[n_local·B, 3, Hl, Wl]`
    /// locals when there are any.
    ///
    /// # Errors
    /// libtorch errors.
    pub fn input_crops(&self, batch: &MultiCropBatch) -> anyhow::Result<Vec<Tensor>> {
        let b = batch.batch_size as i64;
        let (g, l) = (batch.global_size as i64, batch.local_size as i64);
        let mut crops = vec![self.input.to_input(&batch.globals, [2 * b, 3, g, g])?];
        if batch.n_local > 0 {
            crops.push(
                self.input
                    .to_input(&batch.locals, [batch.n_local as i64 * b, 3, l, l])?,
            );
        }
        Ok(crops)
    }

    /// [`Self::forward_backward`] on crops already on the device ([`Self::input_crops`]):
    /// `crops[0]` the globals (the teacher's input), `position` = (epoch, micro-batch in
    /// epoch), used in messages. `dino bench train` times this on fixed crops to measure the
    /// step without the loader.
    ///
    /// With `optim.backward_per_crop_group` the student runs one crop group at a time (one
    /// view of B crops at a time: `student_crop_groups`), each group's loss
    /// terms back-propagated before the next group's forward, against teacher targets computed
    /// once; the logged loss is combined from the same terms in the joint loss's order.
    /// Stochastic depth draws its masks per forward, so with `model.drop_path_rate > 0` they
    /// differ from the joint forward's (the same distribution: independent per sample and
    /// block); without it the gradients equal the joint ones up to float rounding.
    ///
    /// # Errors
    /// As [`Self::forward_backward`].
    pub fn forward_backward_crops(
        &mut self,
        crops: &[Tensor],
        position: (usize, usize),
        it: usize,
        window: Window,
        dist: &Dist,
    ) -> anyhow::Result<LossStats> {
        self.forward_backward_masked(crops, None, position, it, window, dist)
    }

    /// [`Self::forward_backward_crops`] with the global crops' iBOT masks (`[2·B, N]` bool,
    /// [`Self::input_masks`]; required when iBOT is on, ignored when it is off): the student
    /// sees its `mask_token` at the masked patches of its global crops, the teacher the
    /// unmasked crops, and the iBOT term (`crate::loss::ibot`) joins the DINO loss before
    /// the one backward; its center moves after the window as DINO's does.
    ///
    /// # Errors
    /// As [`Self::forward_backward`]; iBOT on without masks.
    pub fn forward_backward_masked(
        &mut self,
        crops: &[Tensor],
        masks: Option<&Tensor>,
        (epoch, step): (usize, usize),
        it: usize,
        window: Window,
        dist: &Dist,
    ) -> anyhow::Result<LossStats> {
        let Some(globals) = crops.first().map(Tensor::shallow_clone) else {
            anyhow::bail!("no crops: the teacher needs the global crops first");
        };
        let masked = match (self.uses_masks(), masks) {
            (false, _) => None,
            (true, Some(m)) => Some(MaskedPatches::from_masks(m)?),
            (true, None) => anyhow::bail!(
                "ibot.loss_weight > 0 needs the batch's masks (the loader draws them when the \
                 config has iBOT on)"
            ),
        };
        seed_iteration(self.seed, window.micro_index(it), dist.rank);
        self.clock_begin();
        self.backbone_frozen = epoch < self.freeze_backbone_epochs;
        let backbone_train = !self.backbone_frozen;
        let (precision, device, scope) = (self.precision, self.device, self.scope);
        // Under bf16 / fp16 autocast the logits come out bf16 / fp16; the loss (softmax over
        // out_dim prototypes at temperature 0.04-0.1) and the center run in fp32. A frozen
        // backbone runs in evaluation mode (see `schedule.freeze_backbone_epochs`).
        let overlap = self.overlap_teacher
            && masked.is_none()
            && !self.per_crop_group
            && device == Device::Cpu
            && tch::get_num_threads() >= 2;
        let mut student_forward = None;
        let (teacher_out, teacher_patches) = match &masked {
            None if overlap => {
                let (t, s) = self.forward_overlapped(crops, globals, backbone_train)?;
                student_forward = Some(s);
                (t, None)
            }
            None => (
                tch::no_grad(|| {
                    with_precision(precision, device, || {
                        self.teacher
                            .forward_modes(&[globals], backbone_train, true, scope)
                    })
                })?
                .to_kind(Kind::Float),
                None,
            ),
            Some(m) => {
                let (cls, patches) = self.teacher_ibot(&globals, m, backbone_train)?;
                (cls, Some(patches))
            }
        };
        if window.is_first() {
            self.optimizer.zero_grad();
        }
        let ibot = match (&masked, &teacher_patches, masks) {
            (Some(m), Some(t), Some(mask)) => Some(IbotStep {
                masks: mask,
                masked: m,
                targets: self.ibot_targets(t, m, epoch, dist)?,
            }),
            _ => None,
        };
        let stats = if self.per_crop_group {
            self.student_backward_per_group(
                crops,
                &teacher_out,
                ibot.as_ref(),
                (epoch, step),
                window,
                dist,
            )?
        } else {
            let forward = match student_forward {
                Some((features, out)) => (features, out, None),
                None => self.student_forward_joint(crops, ibot.as_ref())?,
            };
            self.student_backward_joint(
                forward,
                &teacher_out,
                ibot.as_ref(),
                (epoch, step),
                window,
                dist,
            )?
        };
        if let Some(t) = &teacher_patches {
            self.ibot_center_add(t)?;
        }
        // Official update_center: all-reduce of the teacher logits' sum / (2 · global batch),
        // i.e. the mean over ranks of each rank's mean (equal per-rank batches); with
        // accumulation the mean over the window's micro-batches too, once at its end. Under
        // Sinkhorn-Knopp the center is not used, and (as the official `sinkhorn_knopp` branch)
        // not updated: it stays in the checkpoint as it was.
        let uses_center = self.loss.centering() == Centering::Center;
        if uses_center {
            let batch_center = DinoLoss::batch_center(&teacher_out)?;
            self.center_sum = Some(match self.center_sum.take() {
                None => batch_center,
                Some(sum) => sum.f_add(&batch_center)?,
            });
        }
        if window.is_last() {
            if let Some(mut center) = self.center_sum.take() {
                if window.len > 1 {
                    center = center.f_div_scalar(window.len as f64)?;
                }
                dist.average(&mut center)?;
                self.loss.update_center(&center)?;
            }
            self.ibot_center_update(dist)?;
            // DDP: the gradient of the global batch mean is the mean of the ranks' gradients.
            if dist.world_size > 1 {
                dist.average_grads(&mut self.optimizer.grad_buffers(&Default::default())?)?;
            }
        }
        self.clock_mark(Phase::Backward);
        Ok(stats)
    }

    /// From the student's forward on all crops at once ([`Self::student_forward_joint`], or
    /// [`Self::forward_overlapped`]'s): the loss, one backward (the official step). With
    /// `loss.koleo_weight > 0` the KoLeo term on the student's backbone CLS features of the two
    /// global crops is added to the DINO loss before the one backward.
    ///
    /// With iBOT (`ibot`), the iBOT term on the masked patches' head outputs joins the sum
    /// before the one backward.
    fn student_backward_joint(
        &mut self,
        (features, student_out, student_patches): StudentForward,
        teacher_out: &Tensor,
        ibot: Option<&IbotStep>,
        (epoch, step): (usize, usize),
        window: Window,
        dist: &Dist,
    ) -> anyhow::Result<LossStats> {
        let student_out = student_out.to_kind(Kind::Float);
        let sum = |t: &mut Tensor| {
            dist.sum(t)
                .map_err(|e| LossError::Collective(format!("{e:#}")))
        };
        let (dino, targets) = self.loss.loss_and_targets_across(
            &student_out,
            teacher_out,
            epoch,
            dist.world_size,
            &sum,
        )?;
        let koleo = if self.koleo_weight > 0.0 {
            let globals = features.f_narrow(0, 0, 2 * targets.batch())?;
            Some(koleo_term(&globals, self.koleo_weight)?)
        } else {
            None
        };
        let ibot_term = match (ibot, &student_patches, self.loss.ibot()) {
            (Some(ib), Some(p), Some(term)) => {
                Some(term.term(&p.to_kind(Kind::Float), &ib.targets, ib.masked)?)
            }
            _ => None,
        };
        self.clock_mark(Phase::Forward);
        // The step's one host sync: the loss for the finiteness check, with the diagnostics
        // (and the KoLeo and iBOT terms) computed on the device beside it (a sync costs the
        // same for 1 value or 5).
        let mut stats =
            self.read_step_stats(&dino, koleo.as_ref(), ibot_term.as_ref(), &targets)?;
        self.clock_mark(Phase::Statistics);
        // Every rank logs, checks and stops on the loss of the global batch.
        mean_losses_over_ranks(&mut stats, dist)?;
        check_finite(stats.loss, epoch, step)?;
        let mut loss = dino;
        for term in koleo.iter().chain(&ibot_term) {
            loss = loss.f_add(term)?;
        }
        self.backward(&loss, window)?;
        Ok(stats)
    }

    /// The student on all crops at once ([`Self::student_backward_joint`]'s input): its
    /// backbone CLS features `[n_crops·B, D]` (KoLeo reads them), head output `[n_crops·B, K]`
    /// and, with iBOT (`ibot`), the head outputs of the masked patch tokens of its global crops
    /// (those go through the ViT with their masks, the local crops as before, and the masked
    /// patch tokens through DINO's head or `ibot_head`).
    fn student_forward_joint(
        &self,
        crops: &[Tensor],
        ibot: Option<&IbotStep>,
    ) -> anyhow::Result<StudentForward> {
        let (precision, device, scope) = (self.precision, self.device, self.scope);
        let backbone_train = !self.backbone_frozen;
        // forward_modes' two halves, so the backbone features are at hand for KoLeo.
        Ok(with_precision(precision, device, || {
            let Some(ib) = ibot else {
                let f = self
                    .student
                    .backbone_features(crops, backbone_train, scope)?;
                let out = self.student.head.forward_t(&f, true)?;
                return Ok::<_, dino_model::ModelError>((f, out, None));
            };
            let (cls, patches) =
                self.student_masked_globals(&crops[0], ib.masks, ib.masked, backbone_train)?;
            let f = match crops.get(1..).filter(|l| !l.is_empty()) {
                None => cls,
                Some(locals) => Tensor::f_cat(
                    &[
                        cls,
                        self.student
                            .backbone_features(locals, backbone_train, scope)?,
                    ],
                    0,
                )?,
            };
            let out = self.student.head.forward_t(&f, true)?;
            Ok((f, out, Some(patches)))
        })?)
    }

    /// The teacher's forward on the global crops (no gradient) in a second thread while this
    /// thread runs the student's forward on all crops, the libtorch threads shared between
    /// them (half each; one each on two cores); the count is put back for the backward.
    /// Returns the teacher's output `[2·B, K]` (Float) and the student's backbone CLS features
    /// `[n_crops·B, D]` and head output `[n_crops·B, K]`.
    ///
    /// Why: on a few CPU cores the small matrices of these ViTs keep two threads of one
    /// forward far from twice as fast as one; two forwards side by side use the cores
    /// better. The math is the serial path's (the same ops on the same inputs); only the
    /// rounding of ops whose reductions split by thread count can differ. Every random draw
    /// (stochastic depth) stays on this thread: the teacher draws none.
    fn forward_overlapped(
        &mut self,
        crops: &[Tensor],
        globals: Tensor,
        backbone_train: bool,
    ) -> anyhow::Result<(Tensor, (Tensor, Tensor))> {
        let (precision, device, scope) = (self.precision, self.device, self.scope);
        let threads = tch::get_num_threads();
        let teacher_threads = threads / 2;
        // `&mut`, not `&`: a tensor may move to another thread but not be shared by two.
        let teacher = &mut self.teacher;
        let student = &mut self.student;
        tch::set_num_threads(threads - teacher_threads);
        let (teacher_out, student_out) = std::thread::scope(|s| {
            let worker = s.spawn(move || {
                tch::set_num_threads(teacher_threads);
                tch::no_grad(|| {
                    with_precision(precision, device, || {
                        teacher.forward_modes(&[globals], backbone_train, true, scope)
                    })
                })
            });
            let student_out = with_precision(precision, device, || {
                let f = student.backbone_features(crops, backbone_train, scope)?;
                let out = student.head.forward_t(&f, true)?;
                Ok::<_, dino_model::ModelError>((f, out))
            });
            (worker.join(), student_out)
        });
        tch::set_num_threads(threads);
        let teacher_out =
            teacher_out.map_err(|_| anyhow::anyhow!("the teacher's forward thread panicked"))??;
        Ok((teacher_out.to_kind(Kind::Float), student_out?))
    }

    /// The student's masked global crops (`[V·B, 3, H, W]`, `masks` `[V·B, N]` and the
    /// `masked` patches they give; V = 2, or 1 view of the per-group backward): their backbone
    /// CLS `[V·B, D]` and the head outputs of their masked patch tokens `[M, K]` (DINO's head, or
    /// `ibot_head` with `ibot.separate_head`), in the current precision (dinov2
    /// `ssl_meta_arch.py`: `masks=[masks, None]` for the student's global and local crops).
    fn student_masked_globals(
        &self,
        globals: &Tensor,
        masks: &Tensor,
        masked: &MaskedPatches,
        backbone_train: bool,
    ) -> Result<(Tensor, Tensor), dino_model::ModelError> {
        let vit = self.student.backbone.vit("the iBOT student")?;
        let tokens = vit.forward_features_masked(globals, Some(masks), backbone_train)?;
        let patches = masked.select(&tokens.patches)?;
        let out = match &self.ibot_heads {
            Some((student, _)) => student.forward_t(&patches, true)?,
            None => self.student.head.forward_t(&patches, true)?,
        };
        Ok((tokens.cls, out))
    }

    /// The teacher on the unmasked global crops under iBOT: its head outputs of the CLS tokens
    /// `[2·B, K]` and of the patches the student's masks hide `[M, K]` (Float, no grad; dinov2
    /// `get_teacher_output`).
    fn teacher_ibot(
        &self,
        globals: &Tensor,
        masked: &MaskedPatches,
        backbone_train: bool,
    ) -> anyhow::Result<(Tensor, Tensor)> {
        let (precision, device) = (self.precision, self.device);
        let (cls, patches) = tch::no_grad(|| {
            with_precision(precision, device, || {
                let vit = self.teacher.backbone.vit("the iBOT teacher")?;
                let tokens = vit.forward_features_masked(globals, None, backbone_train)?;
                let cls = self.teacher.head.forward_t(&tokens.cls, true)?;
                let p = masked.select(&tokens.patches)?;
                let patches = match &self.ibot_heads {
                    Some((_, teacher)) => teacher.forward_t(&p, true)?,
                    None => self.teacher.head.forward_t(&p, true)?,
                };
                Ok::<_, dino_model::ModelError>((cls, patches))
            })
        })?;
        Ok((cls.to_kind(Kind::Float), patches.to_kind(Kind::Float)))
    }

    /// The iBOT teacher targets of the masked patches at this epoch's teacher temperature
    /// (Sinkhorn-Knopp over the masked patches of all ranks when `loss.centering` says so).
    fn ibot_targets(
        &self,
        teacher_patches: &Tensor,
        masked: &MaskedPatches,
        epoch: usize,
        dist: &Dist,
    ) -> anyhow::Result<Tensor> {
        let term = self.loss.ibot().expect("iBOT is on");
        let temp = self.loss.teacher_temp(epoch)?;
        let sum = |t: &mut Tensor| {
            dist.sum(t)
                .map_err(|e| LossError::Collective(format!("{e:#}")))
        };
        let mut global_count = masked.count as f64;
        if self.loss.centering() == Centering::SinkhornKnopp && dist.world_size > 1 {
            let mut c = Tensor::from_slice(&[global_count]).f_to_device(self.device)?;
            dist.sum(&mut c)?;
            global_count = c.f_double_value(&[0])?;
        }
        Ok(term.targets(teacher_patches, temp, global_count, &sum)?)
    }

    /// Adds this micro-batch's masked teacher patch outputs (their sum and count) to the
    /// window's; a micro-batch that masked nothing adds nothing.
    fn ibot_center_add(&mut self, teacher_patches: &Tensor) -> anyhow::Result<()> {
        if self.loss.centering() != Centering::Center {
            return Ok(());
        }
        if let Some((sum, n)) = IbotPatchLoss::patch_sum(teacher_patches)? {
            self.ibot_center_sum = Some(match self.ibot_center_sum.take() {
                None => (sum, n),
                Some((s, m)) => (s.f_add(&sum)?, m + n),
            });
        }
        Ok(())
    }

    /// At the end of a window: the iBOT center moves towards the mean of the teacher's outputs
    /// over every masked patch of the window, on every rank (sums and counts all-reduced), so
    /// two processes or two micro-batches equal one (dinov2's `apply_center_update` averages
    /// the ranks' means: the same when every rank masks as many patches). A rank that masked
    /// nothing still joins the all-reduce. Under Sinkhorn-Knopp it is not used and stays (as
    /// DINO's).
    fn ibot_center_update(&mut self, dist: &Dist) -> anyhow::Result<()> {
        if self.loss.centering() != Centering::Center || self.loss.ibot().is_none() {
            return Ok(());
        }
        let k = self.loss.ibot().map_or(0, |t| t.center().size()[1]);
        let (sum, n) = match self.ibot_center_sum.take() {
            Some((sum, n)) => (sum, n),
            None => (Tensor::zeros([1, k], (Kind::Float, self.device)), 0),
        };
        let (sum, n) = if dist.world_size > 1 {
            let count = Tensor::from_slice(&[n as f32])
                .f_to_device(sum.device())?
                .f_reshape([1, 1])?;
            let mut both = Tensor::f_cat(&[sum, count], 1)?;
            dist.sum(&mut both)?;
            let n = both.f_narrow(1, k, 1)?.f_double_value(&[0, 0])?.round() as usize;
            (both.f_narrow(1, 0, k)?, n)
        } else {
            (sum, n)
        };
        if n > 0 {
            let center = sum.f_div_scalar(n as f64)?;
            if let Some(term) = self.loss.ibot_mut() {
                term.update_center(&center)?;
            }
        }
        Ok(())
    }

    /// The student one view at a time: forward, that view's loss terms, backward, so only one
    /// view's activations are alive. A view's terms: its DINO pairs (over `n_loss_terms`),
    /// for a global view its KoLeo (`koleo_weight · KoLeo(view)`, the joint term being the sum
    /// over the two views) and its iBOT term (its masked patches, weighted and divided by 2·B as
    /// in the joint term, against the rows of the teacher targets of its patches), so the views'
    /// terms add up to the joint loss and their gradients to the joint ones up to float
    /// rounding. Each view's partial loss is checked (mean over ranks) before its backward.
    fn student_backward_per_group(
        &mut self,
        crops: &[Tensor],
        teacher_out: &Tensor,
        ibot: Option<&IbotStep>,
        (epoch, step): (usize, usize),
        window: Window,
        dist: &Dist,
    ) -> anyhow::Result<LossStats> {
        let (precision, device, scope) = (self.precision, self.device, self.scope);
        let backbone_train = !self.backbone_frozen;
        let sum = |t: &mut Tensor| {
            dist.sum(t)
                .map_err(|e| LossError::Collective(format!("{e:#}")))
        };
        let targets = self
            .loss
            .targets_across(teacher_out, epoch, dist.world_size, &sum)?;
        let b = targets.batch();
        let ibot_views = match ibot {
            Some(ib) => Some(IbotView::split(ib, b)?),
            None => None,
        };
        let mut values: Vec<((usize, usize), Tensor)> = Vec::new();
        let (mut koleo_values, mut ibot_values) = (Vec::new(), Vec::new());
        let mut first_view = 0usize;
        for (v, view) in student_crop_groups(crops, b)?.into_iter().enumerate() {
            let view_ibot = ibot_views.as_ref().and_then(|vs| vs.get(v));
            let (features, group_out, patches) = with_precision(precision, device, || {
                let (f, patches) = match view_ibot {
                    Some(vi) => {
                        let (cls, p) = self.student_masked_globals(
                            &view,
                            &vi.masks,
                            &vi.masked,
                            backbone_train,
                        )?;
                        (cls, Some(p))
                    }
                    None => (
                        self.student
                            .backbone_features(&[view], backbone_train, scope)?,
                        None,
                    ),
                };
                let out = self.student.head.forward_t(&f, true)?;
                Ok::<_, dino_model::ModelError>((f, out, patches))
            })?;
            let group_out = group_out.to_kind(Kind::Float);
            let terms = self.loss.pair_terms(&group_out, first_view, &targets)?;
            let global = first_view < 2;
            first_view += (group_out.size()[0] / b) as usize;
            let mut partial_terms = Vec::with_capacity(terms.len());
            for (pair, term) in terms {
                values.push((pair, term.f_detach()?));
                partial_terms.push(term);
            }
            let mut partial = if partial_terms.is_empty() {
                None
            } else {
                Some(self.loss.combine(partial_terms)?)
            };
            let mut add = |t: Tensor| -> anyhow::Result<()> {
                partial = Some(match partial.take() {
                    None => t,
                    Some(p) => p.f_add(&t)?,
                });
                Ok(())
            };
            if self.koleo_weight > 0.0 && global {
                let k = koleo(&features)?.f_mul_scalar(self.koleo_weight)?;
                koleo_values.push(k.f_detach()?);
                add(k)?;
            }
            if let (Some(vi), Some(p), Some(term)) = (view_ibot, &patches, self.loss.ibot()) {
                let t = term.term(&p.to_kind(Kind::Float), &vi.targets, &vi.masked)?;
                ibot_values.push(t.f_detach()?);
                add(t)?;
            }
            let Some(partial) = partial else {
                continue;
            };
            check_finite(dist.mean_scalar(partial.f_double_value(&[])?)?, epoch, step)?;
            self.backward(&partial, window)?;
        }
        // The logged loss: the same terms summed in the joint loss's order (j outer, v inner),
        // KoLeo and iBOT as the sums of their views' values, read back in one sync.
        values.sort_by_key(|&(pair, _)| pair);
        let dino = self.loss.combine(values.into_iter().map(|(_, t)| t))?;
        let total = |ts: Vec<Tensor>| -> anyhow::Result<Option<Tensor>> {
            let mut it = ts.into_iter();
            let Some(first) = it.next() else {
                return Ok(None);
            };
            Ok(Some(it.try_fold(first, |a, t| a.f_add(&t))?))
        };
        let (koleo_total, ibot_total) = (total(koleo_values)?, total(ibot_values)?);
        let mut stats =
            self.read_step_stats(&dino, koleo_total.as_ref(), ibot_total.as_ref(), &targets)?;
        mean_losses_over_ranks(&mut stats, dist)?;
        check_finite(stats.loss, epoch, step)?;
        Ok(stats)
    }

    /// The step's statistics in one host sync: the DINO term `dino` and its diagnostics
    /// against `targets`, with the weighted KoLeo and iBOT values (scalars, when those terms are
    /// on) appended to the same tensor, read back and named (`koleo`, `ibot`).
    fn read_step_stats(
        &self,
        dino: &Tensor,
        koleo: Option<&Tensor>,
        ibot: Option<&Tensor>,
        targets: &TeacherTargets,
    ) -> anyhow::Result<LossStats> {
        let ibot_weight = self.loss.ibot().map_or(0.0, IbotPatchLoss::weight);
        let (values, names): (Vec<&Tensor>, Vec<(&str, f64)>) = koleo
            .map(|k| (k, (KOLEO, self.koleo_weight)))
            .into_iter()
            .chain(ibot.map(|t| (t, (IBOT, ibot_weight))))
            .unzip();
        let all = self.loss.stats_tensor_with(dino, &values, targets)?;
        Ok(self.loss.read_stats_with(&all, targets, &names)?)
    }

    /// Backward of `loss` scaled by the window's `1 / accum_steps` (nothing for one
    /// micro-batch) and, under fp16, by the loss scaler.
    fn backward(&mut self, loss: &Tensor, window: Window) -> anyhow::Result<()> {
        let scaled;
        let loss = if window.len > 1 {
            scaled = loss.f_mul_scalar(window.loss_scale())?;
            &scaled
        } else {
            loss
        };
        match &self.scaler {
            // Official fp16: fp16_scaler.scale(loss).backward().
            Some(scaler) => self.optimizer.backward(&scaler.scale_loss(loss)?)?,
            None => self.optimizer.backward(loss)?,
        }
        Ok(())
    }

    /// The optimizer half of a step in `epoch`: per-parameter gradient clipping at
    /// `optim.clip_grad` (official `clip_gradients`; 0 disables it), the last layer's update
    /// cancelled while `epoch < schedule.freeze_last_layer`, then the optimizer at learning rate
    /// `lr` and weight decay `wd` (regularized group).
    ///
    /// Under fp16, as the official loop: the gradients are unscaled before clipping (all of
    /// them, the frozen last layer's included; without clipping, only those the optimizer
    /// steps, inside `fp16_scaler.step`), the optimizer step is skipped when any of them held
    /// inf or NaN, and the scale is updated.
    ///
    /// # Errors
    /// libtorch errors.
    pub fn optimizer_step(
        &mut self,
        lr: f64,
        wd: f64,
        epoch: usize,
    ) -> anyhow::Result<StepOutcome> {
        let mut frozen = frozen_last_layer(
            self.param_names.iter().map(String::as_str),
            epoch,
            self.freeze_last_layer,
        );
        self.backbone_frozen = epoch < self.freeze_backbone_epochs;
        if self.backbone_frozen {
            // The head warm-up: the backbone is left alone as the frozen last layer is.
            let backbone = self.param_names.iter().filter(|n| is_backbone(n));
            frozen.extend(backbone.cloned());
        }
        self.clock_begin();
        let outcome =
            self.optimizer
                .clip_and_step(self.clip_grad, lr, wd, &frozen, self.scaler.as_mut())?;
        self.clock_mark(Phase::Optimizer);
        Ok(outcome)
    }

    /// Starts student and teacher from the weights of `path` (`dino train --init-from`, see
    /// [`crate::init_from`]): the backbone, and the head when the file has one of the same
    /// shapes; the teacher is then the student's copy again.
    ///
    /// # Errors
    /// A file that does not fit the configured backbone (naming the keys), before any variable
    /// changes; libtorch errors.
    pub fn init_from(&mut self, path: &std::path::Path) -> anyhow::Result<InitReport> {
        let report = init_student(path, &self.student_vs)?;
        init_teacher_from_student(&mut self.teacher_vs, &self.student_vs)?;
        Ok(report)
    }

    /// EMA of the student into the teacher with `momentum` (official `m` of the iteration).
    /// While the step's epoch is inside `schedule.freeze_backbone_epochs` the teacher's
    /// backbone is left out: the student's did not move, and averaging equal tensors in floats
    /// would still change them by rounding (`m·t + (1 − m)·t ≠ t` bitwise), so it stays
    /// bitwise what was loaded.
    ///
    /// # Errors
    /// A momentum outside [0, 1], libtorch errors.
    pub fn update_teacher(&self, momentum: f64) -> anyhow::Result<()> {
        self.clock_begin();
        // A frozen backbone is one flat group of its own (`optim::flat::Part::Backbone`), so
        // the skip leaves that whole group out.
        let frozen = self.backbone_frozen;
        self.ema
            .update_except(momentum, |name| frozen && is_backbone(name))?;
        self.clock_mark(Phase::Ema);
        Ok(())
    }

    /// Turns on the phase clock of `dino bench train`'s time split: from now on each phase of
    /// a step is timed (waiting for the device at each boundary) until
    /// [`DinoMethod::take_phase_times`] collects it.
    pub fn enable_phase_clock(&mut self) {
        *self.clock.get_mut() = Some(PhaseClock::new(self.device));
    }

    /// The phase times since the last call (None while the clock is off).
    pub fn take_phase_times(&mut self) -> Option<PhaseTimes> {
        self.clock.get_mut().as_mut().map(PhaseClock::take)
    }

    fn clock_begin(&self) {
        if let Some(c) = self.clock.borrow_mut().as_mut() {
            c.begin();
        }
    }

    fn clock_mark(&self, phase: Phase) {
        if let Some(c) = self.clock.borrow_mut().as_mut() {
            c.mark(phase);
        }
    }

    /// The tensors a checkpoint holds: student, teacher, optimizer state and center.
    ///
    /// # Errors
    /// libtorch errors while collecting the optimizer state.
    pub fn checkpoint_tensors(&self) -> anyhow::Result<CheckpointTensors<'_>> {
        Ok(CheckpointTensors {
            student: &self.student_vs,
            teacher: &self.teacher_vs,
            optim: self.optimizer.state_tensors()?,
            scaler: self
                .scaler
                .as_ref()
                .map(GradScaler::state_tensors)
                .unwrap_or_default(),
            centers: self.loss.centering_states(),
        })
    }
}

/// The iBOT side of one step: the masks, the masked patches they give, and the teacher's
/// targets at those patches `[M, K]`.
struct IbotStep<'a> {
    masks: &'a Tensor,
    masked: &'a MaskedPatches,
    targets: Tensor,
}

/// One global view's share of an [`IbotStep`] for the per-group backward: its masks
/// `[B, N]`, its masked patches (weights and `n_crops` of the whole batch) and its rows of
/// the teacher targets.
struct IbotView {
    masks: Tensor,
    masked: MaskedPatches,
    targets: Tensor,
}

impl IbotView {
    /// The two global views of `ib` (`batch` = B crops each), in crop order.
    fn split(ib: &IbotStep, batch: i64) -> anyhow::Result<Vec<Self>> {
        let n_crops = ib.masks.size()[0];
        // f_split would make a short last view of a batch that is not two views' crops.
        anyhow::ensure!(
            n_crops == 2 * batch,
            "iBOT masks of {n_crops} crops for two global views of {batch} crops each"
        );
        let mut offset = 0i64;
        let mut views = Vec::new();
        for masks in ib.masks.f_split(batch, 0)? {
            let masked = MaskedPatches::of_view(&masks, n_crops)?;
            let targets = ib.targets.f_narrow(0, offset, masked.count)?;
            offset += masked.count;
            views.push(Self {
                masks,
                masked,
                targets,
            });
        }
        Ok(views)
    }
}

/// The separate iBOT head's sizes (`ibot.head_*`; no BatchNorm, the last layer as DINO's).
fn ibot_head_config(cfg: &Config) -> dino_config::HeadConfig {
    dino_config::HeadConfig {
        out_dim: cfg.ibot.head_out_dim,
        hidden_dim: cfg.ibot.head_hidden_dim,
        bottleneck_dim: cfg.ibot.head_bottleneck_dim,
        nlayers: cfg.ibot.head_nlayers,
        use_bn: false,
        norm_last_layer: cfg.head.norm_last_layer,
    }
}

/// Each term's loss replaced by its mean over the ranks (one small all-reduce per term; nothing
/// for a single process), and the total by their sum, in order: every rank logs, checks and
/// stops on the loss of the global batch. The teacher diagnostics (entropies, KL, center norm)
/// stay this rank's.
fn mean_losses_over_ranks(stats: &mut LossStats, dist: &Dist) -> anyhow::Result<()> {
    if dist.world_size == 1 {
        return Ok(());
    }
    for term in &mut stats.terms {
        let mean = dist.mean_scalar(term.loss())?;
        term.set(stats::LOSS, mean);
    }
    *stats = LossStats::from_terms(std::mem::take(&mut stats.terms));
    Ok(())
}

/// Whether a variable of a [`MultiCropWrapper`] store belongs to its backbone (`backbone.*`).
fn is_backbone(name: &str) -> bool {
    name.starts_with("backbone.")
}

/// The student's crop groups of `optim.backward_per_crop_group`, in the joint forward's order:
/// one view at a time (`[B, 3, H, W]`: global view 1, global view 2, then each local view),
/// `batch` = B. Smaller groups than the resolution groups, because with fused attention the
/// activations grow with the tokens, and the 2 global views (2·B·197 tokens at 224 px) and the
/// ten 96-px local views (10·B·37) hold about as many: measured on ViT-S/16, splitting into
/// the two resolution groups only lowered the step's peak 1.5x.
fn student_crop_groups(crops: &[Tensor], batch: i64) -> anyhow::Result<Vec<Tensor>> {
    let mut views = Vec::new();
    for c in crops {
        views.extend(c.f_split(batch, 0)?);
    }
    Ok(views)
}

/// Seeds libtorch's generator for iteration `it` of rank `rank`, so stochastic depth draws
/// depend only on (seed, iteration, rank): a resumed run sees the same masks as an uninterrupted
/// one, and ranks draw different masks for their different images.
pub(crate) fn seed_iteration(seed: u64, it: usize, rank: usize) {
    let mixed = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add((it as u64).wrapping_mul(0xD1B5_4A32_D192_ED03))
        .wrapping_add((rank as u64).wrapping_mul(0x8CB9_2BA7_2F3D_8DD7));
    tch::manual_seed((mixed >> 1) as i64);
}
