//! Flat parameter groups: the parameters of one group live as views into one contiguous buffer,
//! and so do their gradients, the update rule's buffers and the teacher's copies, so clipping,
//! the update, the EMA and a cross-rank all-reduce are a handful of ops per group instead of
//! several per tensor (≈ 1,070 small kernels a step for the CIFAR-10 preset's 65 tensors before,
//! ≈ 2,600 for ViT-S/16's 157).
//!
//! A parameter keeps its identity when it joins a buffer: [`Layout::adopt`] copies its values in
//! and points the tensor at its slice with `set_data`, so the `VarStore`, the model's fields and
//! autograd (it stays a leaf) all see the same tensor. Checkpoint names and shapes do not change.
//!
//! Groups are cut where the rules differ, so that the usual cases are whole groups: weight
//! decay (regularized or not, official `get_params_groups`), the last layer (frozen in the first
//! epochs, official `cancel_gradients_last_layer`, so its step count lags), the backbone (left
//! alone during `schedule.freeze_backbone_epochs`), and the kind and device. Elementwise
//! arithmetic on a buffer equals the same arithmetic on each slice bit for bit, which is what
//! keeps the flat path equal to the per-parameter one (`tests/optim_flat.rs`).

use tch::{Device, Kind, TchError, Tensor};

/// Elements per chunk when a CPU update walks a group buffer chunk by chunk: 2^18 (1 MiB of
/// f32 per buffer), so AdamW's six buffers of a chunk (parameter, gradient, two moments, two
/// temporaries) stay in cache across its ten passes and memory is read about once. Measured on
/// the AMD EPYC Zen 4 (one thread, 44 M parameters): 188 ms per AdamW step against 288 ms on
/// the whole buffer with preallocated temporaries and 1,092 ms with fresh ones (which glibc
/// maps and the kernel zeroes page by page above 32 MiB); 2^16 and 2^20 gave 213 and 215 ms.
pub const CPU_CHUNK: i64 = 1 << 18;

/// The part of the network a parameter belongs to, by its official name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Part {
    /// `backbone.*` (frozen during `schedule.freeze_backbone_epochs`).
    Backbone,
    /// The head's last layer (any name containing `last_layer`, official
    /// `cancel_gradients_last_layer`), frozen during `schedule.freeze_last_layer` epochs.
    LastLayer,
    /// Everything else (the head's MLP, a classifier, unnamed test parameters).
    Other,
}

impl Part {
    /// The part of parameter `name`.
    pub fn of(name: &str) -> Self {
        if super::is_last_layer(name) {
            Self::LastLayer
        } else if name.starts_with("backbone.") {
            Self::Backbone
        } else {
            Self::Other
        }
    }
}

/// One parameter's slice of its group's buffer.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// The parameter's name (official state-dict key).
    pub name: String,
    /// First element in the buffer.
    pub offset: i64,
    /// Number of elements.
    pub numel: i64,
    /// The parameter's shape.
    pub shape: Vec<i64>,
}

/// The layout of one group: which parameters, in which order, and what they share.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// The network part of every parameter of the group.
    pub part: Part,
    /// Whether the group takes weight decay (official `get_params_groups`).
    pub regularized: bool,
    /// The parameters, in the optimizer's order, back to back.
    pub segments: Vec<Segment>,
    /// Total elements (the buffer's length).
    pub numel: i64,
    /// Element kind of every parameter and buffer of the group.
    pub kind: Kind,
    /// Device of every parameter and buffer of the group.
    pub device: Device,
}

impl Layout {
    /// Splits `params` (name, shape, kind, device), in order, into groups by (part,
    /// regularized, kind, device); a group keeps its parameters in their given order, and the
    /// groups come in the order of their first parameter. Returns each group's layout with the
    /// indices into `params` of its segments.
    pub fn group(params: &[(String, Vec<i64>, Kind, Device)]) -> Vec<(Layout, Vec<usize>)> {
        let mut out: Vec<(Layout, Vec<usize>)> = Vec::new();
        for (i, (name, shape, kind, device)) in params.iter().enumerate() {
            let part = Part::of(name);
            let regularized = super::is_regularized(name, shape);
            let pos = out.iter().position(|(l, _)| {
                l.part == part
                    && l.regularized == regularized
                    && l.kind == *kind
                    && l.device == *device
            });
            let (layout, members) = match pos {
                Some(p) => &mut out[p],
                None => {
                    out.push((
                        Layout {
                            part,
                            regularized,
                            segments: Vec::new(),
                            numel: 0,
                            kind: *kind,
                            device: *device,
                        },
                        Vec::new(),
                    ));
                    out.last_mut().expect("just pushed")
                }
            };
            let numel = shape.iter().product::<i64>();
            layout.segments.push(Segment {
                name: name.clone(),
                offset: layout.numel,
                numel,
                shape: shape.clone(),
            });
            layout.numel += numel;
            members.push(i);
        }
        out
    }

    /// The `(offset, length)` chunks an update walks: [`CPU_CHUNK`]-element chunks on the CPU,
    /// the whole buffer elsewhere (an accelerator wants few large kernels, and its caching
    /// allocator makes temporaries cheap).
    pub fn chunks(&self) -> Vec<(i64, i64)> {
        let step = if self.device == Device::Cpu {
            CPU_CHUNK
        } else {
            self.numel.max(1)
        };
        (0..self.numel)
            .step_by(step as usize)
            .map(|o| (o, step.min(self.numel - o)))
            .collect()
    }

    /// Whether updates of this group go through [`Layout::chunks`] with preallocated
    /// temporaries (on the CPU) rather than whole-buffer ops with fresh ones.
    pub fn chunked(&self) -> bool {
        self.device == Device::Cpu
    }

    /// A zero buffer for this group (`[numel]`, the group's kind and device).
    ///
    /// # Errors
    /// libtorch errors (out of memory).
    pub fn zeros(&self) -> Result<Tensor, TchError> {
        Tensor::f_zeros([self.numel], (self.kind, self.device))
    }

    /// Segment `i` of `buffer` as a tensor of the parameter's shape (a view: writes go to the
    /// buffer).
    ///
    /// # Errors
    /// libtorch errors (a buffer of another length).
    pub fn view(&self, buffer: &Tensor, i: usize) -> Result<Tensor, TchError> {
        let s = &self.segments[i];
        buffer
            .f_narrow(0, s.offset, s.numel)?
            .f_view(s.shape.as_slice())
    }

    /// Copies `tensors` (one per segment, in order, each of its segment's shape) into a new
    /// buffer and makes each of them a view of its slice (`set_data`): every handle to such a
    /// tensor (a `VarStore`'s, a model's field) then reads and writes the buffer, and a
    /// parameter stays an autograd leaf. Returns the buffer.
    ///
    /// # Errors
    /// A tensor of another shape, kind or device than its segment; libtorch errors.
    pub fn adopt(&self, tensors: &mut [Tensor]) -> Result<Tensor, TchError> {
        let buffer = self.zeros()?;
        let _guard = tch::no_grad_guard();
        for (i, t) in tensors.iter_mut().enumerate() {
            let s = &self.segments[i];
            if t.size() != s.shape || t.kind() != self.kind || t.device() != self.device {
                return Err(TchError::Shape(format!(
                    "`{}`: {:?} {:?} on {:?}, its flat group holds {:?} {:?} on {:?}",
                    s.name,
                    t.size(),
                    t.kind(),
                    t.device(),
                    s.shape,
                    self.kind,
                    self.device
                )));
            }
            let mut view = self.view(&buffer, i)?;
            view.f_copy_(t)?;
            t.f_set_data(&view)?;
        }
        Ok(buffer)
    }

    /// The number of elements of every segment, as an Int64 tensor on the group's device (the
    /// `repeats` of `repeat_interleave`, which spreads one value per segment over its slice).
    ///
    /// # Errors
    /// libtorch errors.
    pub fn counts(&self) -> Result<Tensor, TchError> {
        let n: Vec<i64> = self.segments.iter().map(|s| s.numel).collect();
        Tensor::f_from_slice(&n)?.f_to_device(self.device)
    }

    /// The L2 norm of each segment of `buffer`, `[segments]` Float. On the CPU each is
    /// `‖view‖₂` on its own (`linalg_vector_norm`), so every value equals the norm of the
    /// separate tensor bit for bit; on an accelerator all of them come from one
    /// `_foreach_norm` (a few launches instead of one per parameter).
    ///
    /// # Errors
    /// libtorch errors.
    pub fn segment_norms(&self, buffer: &Tensor) -> Result<Tensor, TchError> {
        let views = (0..self.segments.len())
            .map(|i| self.view(buffer, i))
            .collect::<Result<Vec<_>, _>>()?;
        let norms = if self.device == Device::Cpu {
            views
                .iter()
                .map(Tensor::f_norm)
                .collect::<Result<Vec<_>, _>>()?
        } else {
            dino_distributed::fused::foreach_norm(&views.iter().collect::<Vec<_>>())
                .map_err(|e| TchError::Torch(format!("{e:#}")))?
        };
        let norms = norms
            .iter()
            .map(|n| n.f_to_kind(Kind::Float))
            .collect::<Result<Vec<_>, _>>()?;
        Tensor::f_stack(&norms, 0)
    }

    /// Multiplies each segment of `buffer` in place by its factor in `factors` (`[segments]`,
    /// any float kind; cast to the buffer's), as `view *= factor` would for each. On the CPU,
    /// where reading the factors costs no device sync, a factor of exactly 1 is skipped (the
    /// product would equal the input bit for bit) and the others are one op each; on an
    /// accelerator the factors are spread over the buffer (`repeat_interleave`) and applied in
    /// one multiply, without a host sync. `counts` is [`Layout::counts`] (cached by the caller).
    ///
    /// # Errors
    /// libtorch errors.
    pub fn scale_segments(
        &self,
        buffer: &mut Tensor,
        factors: &Tensor,
        counts: &Tensor,
    ) -> Result<(), TchError> {
        let factors = factors.f_to_kind(self.kind)?;
        if self.device == Device::Cpu {
            let host = Vec::<f64>::try_from(&factors.f_to_kind(Kind::Double)?)?;
            for (i, f) in host.iter().enumerate() {
                if *f != 1.0 {
                    let _ = self
                        .view(buffer, i)?
                        .f_mul_(&factors.f_select(0, i as i64)?)?;
                }
            }
        } else {
            let spread = factors.f_repeat_interleave_self_tensor(counts, 0, Some(self.numel))?;
            let _ = buffer.f_mul_(&spread)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &str, shape: &[i64]) -> (String, Vec<i64>, Kind, Device) {
        (name.into(), shape.to_vec(), Kind::Float, Device::Cpu)
    }

    #[test]
    fn groups_follow_decay_part_and_order() {
        let params = [
            p("backbone.blocks.0.attn.qkv.bias", &[6]),
            p("backbone.blocks.0.attn.qkv.weight", &[6, 2]),
            p("backbone.cls_token", &[1, 1, 2]),
            p("head.last_layer.weight_v", &[4, 2]),
            p("head.mlp.0.bias", &[3]),
            p("head.mlp.0.weight", &[3, 2]),
        ];
        let groups = Layout::group(&params);
        let summary: Vec<(Part, bool, Vec<usize>)> = groups
            .iter()
            .map(|(l, m)| (l.part, l.regularized, m.clone()))
            .collect();
        assert_eq!(
            summary,
            [
                (Part::Backbone, false, vec![0]),
                (Part::Backbone, true, vec![1, 2]),
                (Part::LastLayer, true, vec![3]),
                (Part::Other, false, vec![4]),
                (Part::Other, true, vec![5]),
            ]
        );
        let reg = &groups[1].0;
        assert_eq!(reg.numel, 12 + 2);
        assert_eq!(reg.segments[1].offset, 12);
    }

    #[test]
    fn adopted_tensors_are_views_of_the_buffer() {
        // Both matrices, so both regularized: one group (a 1-D tensor would be another).
        let params = [p("a.weight", &[2, 3]), p("b.weight", &[2, 2])];
        let (layout, members) = Layout::group(&params).remove(0);
        assert_eq!(members, [0, 1]);
        let mut ts = vec![
            Tensor::arange(6, (Kind::Float, Device::Cpu)).view([2, 3]),
            Tensor::ones([2, 2], (Kind::Float, Device::Cpu)).set_requires_grad(true),
        ];
        let handle = ts[1].shallow_clone();
        let mut buffer = layout.adopt(&mut ts).unwrap();
        assert_eq!(
            Vec::<f32>::try_from(&buffer).unwrap(),
            [0., 1., 2., 3., 4., 5., 1., 1., 1., 1.]
        );
        let _ = buffer.f_mul_scalar_(2.0).unwrap();
        assert_eq!(
            Vec::<f32>::try_from(&handle.reshape([-1])).unwrap(),
            [2., 2., 2., 2.]
        );
        assert!(handle.requires_grad() && handle.is_leaf());
        let norms = layout.segment_norms(&buffer).unwrap();
        assert_eq!(
            Vec::<f32>::try_from(&norms).unwrap()[1],
            4.0,
            "‖[2, 2, 2, 2]‖"
        );
        let factors = Tensor::from_slice(&[1.0f32, 0.5]);
        layout
            .scale_segments(&mut buffer, &factors, &layout.counts().unwrap())
            .unwrap();
        assert_eq!(
            Vec::<f32>::try_from(&handle.reshape([-1])).unwrap(),
            [1., 1., 1., 1.]
        );
        let mut wrong = vec![Tensor::zeros([3, 2], (Kind::Float, Device::Cpu))];
        let single = Layout::group(&params[..1]).remove(0).0;
        assert!(single.adopt(&mut wrong).is_err());
    }
}
