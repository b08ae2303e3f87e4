//! [`Distillation`]: the loss object the training loop takes in place of plain
//! cross-entropy, combining soft targets, logit matching, hints and attention transfer
//! against a [`Teacher`].

use std::collections::BTreeSet;

use ndarray::{Array2, ArrayD, ArrayView1, ArrayView2};

use super::attention::{Attention, attention_transfer};
use super::hint::{Regressor, RegressorGradients, RegressorKind, hint_loss};
use super::logits::logit_matching;
use super::soft::{SoftTargets, ensemble_soft_targets, soft_target_loss};
use super::teacher::Teacher;
use crate::error::{Error, Result};
use crate::io::idx::Dataset;
use crate::model::Model;
use crate::nn::{Gradients, Network, Sgd};

/// A FitNets hint: the output of the student's layer `student_layer` (the guided
/// layer), through a regressor, is pulled to the output of the teacher's layer
/// `teacher_layer` (the hint layer), with weight `weight`. Layers are indices into
/// [`Network::layers`]; the output of a layer is the activation just after it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HintPair {
    /// The student's guided layer.
    pub student_layer: usize,
    /// The teacher's hint layer.
    pub teacher_layer: usize,
    /// The weight of this hint's loss (≥ 0).
    pub weight: f32,
}

/// A pair of conv layers whose attention maps are matched (attention transfer): same
/// spatial size, any channel counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerPair {
    /// The student's layer.
    pub student_layer: usize,
    /// The teacher's layer.
    pub teacher_layer: usize,
}

/// The settings of a [`Distillation`], unchecked (checked by [`Distillation::new`]).
///
/// The loss is `α·T²·KL(teacher_T ‖ student_T) + (1 − α)·CE(labels, student)`
/// `+ logit_weight·½‖z_s − z_t‖² + Σ weight·½‖r(v_s) − u_t‖² + β/2·Σ‖q_s − q_t‖²`
/// (each term averaged over the batch); with `hints_only`, only the hint terms
/// (FitNets' first stage: train the student up to its guided layers).
#[derive(Clone, Debug, PartialEq)]
pub struct DistillConfig {
    /// The soft targets' temperature `T > 0` (Hinton et al. use 20 on MNIST).
    pub temperature: f32,
    /// The weight `α ∈ [0, 1]` of the soft term; the labels get `1 − α`.
    pub alpha: f32,
    /// The weight (≥ 0) of logit matching against the teacher's logits (the mean
    /// over an ensemble); 0 turns it off.
    pub logit_weight: f32,
    /// FitNets hints.
    pub hints: Vec<HintPair>,
    /// Attention transfer pairs.
    pub attention: Vec<LayerPair>,
    /// The attention-transfer weight `β ≥ 0`. Our maps are normalised over the whole
    /// map and the squared distance summed over it, so the paper's `β = 1000` (with a
    /// mean over `h·w` positions) is about `1000/(h·w)` here.
    pub beta: f32,
    /// The attention map's exponent `p ≥ 1` (the paper's 2).
    pub attention_p: f32,
    /// Only the hint terms (FitNets' stage 1).
    pub hints_only: bool,
    /// Seed of the regressors' initialisation.
    pub seed: u64,
}

impl Default for DistillConfig {
    /// `T = 4`, `α = 0.9`, no logit matching, no hints, no attention (`β = 1`,
    /// `p = 2` once pairs are given), seed 0.
    fn default() -> DistillConfig {
        DistillConfig {
            temperature: 4.0,
            alpha: 0.9,
            logit_weight: 0.0,
            hints: Vec::new(),
            attention: Vec::new(),
            beta: 1.0,
            attention_p: 2.0,
            hints_only: false,
            seed: 0,
        }
    }
}

/// One batch's distillation loss and gradients.
#[derive(Clone, Debug)]
pub struct DistillStep {
    /// The total loss.
    pub loss: f32,
    /// The student's parameters' gradients (zero where a mask prunes).
    pub gradients: Gradients,
    /// The hint regressors' gradients, in the order of the hints.
    pub regressor_gradients: Vec<RegressorGradients>,
}

/// Knowledge distillation as a training loss: the student learns from `teacher` (in
/// evaluation mode, its outputs computed once per batch) and, unless `α = 1`, from the
/// labels. Use [`Distillation::train_epoch`] where [`train_epoch`](crate::nn::train_epoch)
/// would be used: it works for every form a parameter can be fine-tuned in (dense,
/// pruned, weight-shared, factorized), since [`Sgd`] applies the gradients in each
/// form; [`Distillation::train_epoch_quantized`] fine-tunes with quantization-aware
/// training. The teacher is usually the uncompressed model: distillation as recovery.
///
/// ```
/// use ndarray::Array2;
/// use slimnn::Model;
/// use slimnn::distill::{DistillConfig, Distillation, Teacher};
/// use slimnn::io::idx::Dataset;
/// use slimnn::nn::{Network, Sgd, train_epoch};
///
/// let data = Dataset {
///     images: Array2::from_shape_fn((64, 4), |(i, j)| ((i * 4 + j) as f32 * 0.37).sin()),
///     labels: (0..64).map(|i| (i % 2) as u8).collect(),
///     image_shape: vec![4],
/// };
/// let mut big = Model::new();
/// let teacher_net = Network::mlp(&mut big, &[4, 32, 2], 1)?;
/// let mut sgd = Sgd::new(0.1, 0.9, 0.0)?;
/// for epoch in 0..5 {
///     train_epoch(&teacher_net, &mut big, &mut sgd, &data, 16, epoch)?;
/// }
/// let mut small = Model::new();
/// let student = Network::mlp(&mut small, &[4, 4, 2], 2)?;
/// let config = DistillConfig { temperature: 4.0, alpha: 0.7, ..Default::default() };
/// let mut kd = Distillation::new(config, Teacher::new(teacher_net, big)?, &student, &small)?;
/// let mut sgd = Sgd::new(0.1, 0.9, 0.0)?;
/// for epoch in 0..3 {
///     kd.train_epoch(&student, &mut small, &mut sgd, &data, 16, epoch)?;
/// }
/// # Ok::<(), slimnn::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Distillation {
    teacher: Teacher,
    soft: SoftTargets,
    logit_weight: f32,
    hints: Vec<(HintPair, Regressor)>,
    attention: Vec<LayerPair>,
    at: Attention,
    hints_only: bool,
}

fn check_weight(name: &'static str, w: f32) -> Result<f32> {
    if w >= 0.0 && w.is_finite() {
        Ok(w)
    } else {
        Err(Error::invalid(name, w, "a finite weight ≥ 0"))
    }
}

/// The shape of one example after the student's layer `layer`.
fn student_shape(net: &Network, model: &Model, layer: usize) -> Result<Vec<usize>> {
    net.shapes(model)?.get(layer + 1).cloned().ok_or_else(|| {
        Error::invalid(
            "student layer",
            layer,
            format!(
                "the index of one of the student's {} layers",
                net.layers().len()
            ),
        )
    })
}

impl Distillation {
    /// Checks `config` against the teacher and the student (`student` over
    /// `student_model`): the settings' ranges, the same inputs and classes, hint and
    /// attention layers that exist, hint layers whose shapes a regressor can map (a
    /// vector to a vector: Linear; feature maps to feature maps of the same spatial
    /// size: 1×1 convolution), attention pairs of the same spatial size. Creates the
    /// hint regressors (from `config.seed`).
    pub fn new(
        config: DistillConfig,
        teacher: Teacher,
        student: &Network,
        student_model: &Model,
    ) -> Result<Distillation> {
        let soft = SoftTargets::new(config.temperature, config.alpha)?;
        let logit_weight = check_weight("logit_weight", config.logit_weight)?;
        let at = Attention::new(config.beta, config.attention_p)?;
        student.check(student_model)?;
        let (si, ti) = (student.inputs(student_model)?, teacher.inputs()?);
        let sc = student_shape(student, student_model, student.layers().len() - 1)?;
        let tc = teacher.classes()?;
        if si != ti || sc.iter().product::<usize>() != tc {
            return Err(Error::ShapeMismatch {
                what: "student's [inputs, classes] (the teacher's)".into(),
                expected: vec![ti, tc],
                got: vec![si, sc.iter().product()],
            });
        }
        if config.hints_only && config.hints.is_empty() {
            return Err(Error::invalid(
                "hints_only",
                true,
                "at least one hint pair (hint training trains up to the guided layers)",
            ));
        }
        if (teacher.members() > 1) && !(config.hints.is_empty() && config.attention.is_empty()) {
            return Err(Error::invalid(
                "teacher",
                format!("an ensemble of {}", teacher.members()),
                "a single teacher for hints and attention transfer",
            ));
        }
        let mut hints = Vec::new();
        for (k, h) in config.hints.iter().enumerate() {
            check_weight("hint weight", h.weight)?;
            let s = student_shape(student, student_model, h.student_layer)?;
            let t = teacher.output_shape(h.teacher_layer)?;
            let kind = match (s.len(), t.len()) {
                (1, 1) => RegressorKind::Linear,
                (3, 3) if s[1..] == t[1..] => RegressorKind::Conv1x1,
                _ => {
                    return Err(Error::ShapeMismatch {
                        what: format!(
                            "teacher hint layer {} for student layer {} (a regressor maps \
                             vectors to vectors, feature maps to maps of the same size)",
                            h.teacher_layer, h.student_layer
                        ),
                        expected: match s.len() {
                            3 => vec![t.first().copied().unwrap_or(0), s[1], s[2]],
                            _ => vec![t.iter().product()],
                        },
                        got: t,
                    });
                }
            };
            let seed = config.seed ^ (k as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            hints.push((*h, Regressor::new(kind, s[0], t[0], seed)?));
        }
        for p in &config.attention {
            let s = student_shape(student, student_model, p.student_layer)?;
            let t = teacher.output_shape(p.teacher_layer)?;
            if s.len() != 3 || t.len() != 3 {
                return Err(Error::bad_shape(
                    format!(
                        "attention pair (student layer {}, teacher layer {})",
                        p.student_layer, p.teacher_layer
                    ),
                    if s.len() != 3 { &s } else { &t },
                    "attention maps are taken of feature maps [c, h, w]",
                ));
            }
            if s[1..] != t[1..] {
                return Err(Error::ShapeMismatch {
                    what: format!(
                        "spatial size of the teacher's layer {} (paired with the student's \
                         layer {} for attention transfer)",
                        p.teacher_layer, p.student_layer
                    ),
                    expected: s[1..].to_vec(),
                    got: t[1..].to_vec(),
                });
            }
        }
        Ok(Distillation {
            teacher,
            soft,
            logit_weight,
            hints,
            attention: config.attention,
            at,
            hints_only: config.hints_only,
        })
    }

    /// The teacher.
    pub fn teacher(&self) -> &Teacher {
        &self.teacher
    }

    /// The soft-target settings.
    pub fn soft_targets(&self) -> SoftTargets {
        self.soft
    }

    /// The hint regressors, in the order of the hints.
    pub fn regressors(&self) -> impl Iterator<Item = &Regressor> {
        self.hints.iter().map(|(_, r)| r)
    }

    /// Replaces the regressor of hint `index` (e.g. one trained before); it must map
    /// the guided layer's output to the hint layer's.
    pub fn set_regressor(
        &mut self,
        index: usize,
        regressor: Regressor,
        student: &Network,
        student_model: &Model,
    ) -> Result<()> {
        let Some((h, _)) = self.hints.get(index) else {
            return Err(Error::invalid(
                "hint",
                index,
                format!("the index of one of the {} hints", self.hints.len()),
            ));
        };
        let s = student_shape(student, student_model, h.student_layer)?;
        let t = self.teacher.output_shape(h.teacher_layer)?;
        let batch = |s: &[usize]| {
            std::iter::once(1)
                .chain(s.iter().copied())
                .collect::<Vec<_>>()
        };
        let out = regressor.output_shape(&batch(&s))?;
        if out != batch(&t) {
            return Err(Error::ShapeMismatch {
                what: format!("output of the regressor of hint {index}"),
                expected: batch(&t),
                got: out,
            });
        }
        self.hints[index].1 = regressor;
        Ok(())
    }

    /// Whether only the hint terms count (FitNets' stage 1).
    pub fn hints_only(&self) -> bool {
        self.hints_only
    }

    /// The loss on a batch `x` with `labels`, the student's gradients and the
    /// regressors'. The teacher runs once, in evaluation mode; the student in training
    /// mode with dropout masks from `seed` if given, in evaluation mode otherwise. With
    /// `hints_only`, only the parameters of the student's layers up to its last guided
    /// layer get gradients.
    pub fn loss_and_gradients(
        &self,
        student: &Network,
        student_model: &Model,
        x: ArrayView2<'_, f32>,
        labels: ArrayView1<'_, u8>,
        seed: Option<u64>,
    ) -> Result<DistillStep> {
        if labels.len() != x.nrows() {
            return Err(Error::ShapeMismatch {
                what: "labels".into(),
                expected: vec![x.nrows()],
                got: vec![labels.len()],
            });
        }
        let teacher_layers = self.teacher_layers();
        let outputs = self.teacher.outputs(x, &teacher_layers)?;
        self.loss_and_gradients_from(student, student_model, x, labels, seed, &outputs)
    }

    /// The layers of the teacher whose outputs the loss needs (hint layers, then
    /// attention layers), to pass to [`Teacher::outputs`].
    pub fn teacher_layers(&self) -> Vec<usize> {
        self.hints
            .iter()
            .map(|(h, _)| h.teacher_layer)
            .chain(self.attention.iter().map(|p| p.teacher_layer))
            .collect()
    }

    /// As [`loss_and_gradients`](Distillation::loss_and_gradients), with the teacher's
    /// outputs on `x` given (from [`Teacher::outputs`] with
    /// [`teacher_layers`](Distillation::teacher_layers)): for a caller that computes
    /// them once and reuses them, e.g. over the epochs of a fixed training set.
    pub fn loss_and_gradients_from(
        &self,
        student: &Network,
        student_model: &Model,
        x: ArrayView2<'_, f32>,
        labels: ArrayView1<'_, u8>,
        seed: Option<u64>,
        teacher: &super::TeacherOutputs,
    ) -> Result<DistillStep> {
        let (t_logits, t_taps) = teacher;
        if t_logits.len() != self.teacher.members() || t_taps.len() != self.teacher_layers().len() {
            return Err(Error::ShapeMismatch {
                what: "teacher outputs [logits of each member, outputs of teacher_layers()]".into(),
                expected: vec![self.teacher.members(), self.teacher_layers().len()],
                got: vec![t_logits.len(), t_taps.len()],
            });
        }
        let student_layers: Vec<usize> = self
            .hints
            .iter()
            .map(|(h, _)| h.student_layer)
            .chain(self.attention.iter().map(|p| p.student_layer))
            .collect();
        let mut regressor_gradients = Vec::with_capacity(self.hints.len());
        let (loss, mut gradients) =
            student.gradients_with(student_model, x, seed, &student_layers, |logits, taps| {
                let mut loss = 0.0f32;
                let mut logit_grad = Array2::zeros(logits.raw_dim());
                let mut tap_grads: Vec<Option<ArrayD<f32>>> = vec![None; taps.len()];
                if !self.hints_only {
                    let views: Vec<_> = t_logits.iter().map(|l| l.view()).collect();
                    let targets = ensemble_soft_targets(&views, self.soft.temperature())?;
                    let (l, g) = soft_target_loss(logits, targets.view(), labels, &self.soft)?;
                    loss += l;
                    logit_grad += &g;
                    if self.logit_weight > 0.0 {
                        let mut mean = Array2::<f32>::zeros(logits.raw_dim());
                        for t in t_logits {
                            mean += t;
                        }
                        mean /= t_logits.len() as f32;
                        let (l, g) = logit_matching(logits, mean.view())?;
                        loss += self.logit_weight * l;
                        logit_grad.scaled_add(self.logit_weight, &g);
                    }
                }
                for (k, (h, r)) in self.hints.iter().enumerate() {
                    let guided = r.forward(taps[k].view())?;
                    let (l, dg) = hint_loss(guided.view(), t_taps[k].view())?;
                    loss += h.weight * l;
                    let g = r.backward(taps[k].view(), (dg * h.weight).view())?;
                    tap_grads[k] = Some(g.input.clone());
                    regressor_gradients.push(g);
                }
                if !self.hints_only {
                    let offset = self.hints.len();
                    for k in 0..self.attention.len() {
                        let (l, g) = attention_transfer(
                            taps[offset + k].view(),
                            t_taps[offset + k].view(),
                            &self.at,
                        )?;
                        loss += l;
                        tap_grads[offset + k] = Some(g);
                    }
                }
                Ok((loss, logit_grad, tap_grads))
            })?;
        if self.hints_only {
            let last = self.hints.iter().map(|(h, _)| h.student_layer).max();
            let keep = params_up_to(student, last.unwrap_or(0));
            // BatchNorm's running statistics travel as `<name>#running`.
            gradients.retain(|name, _| {
                let param = name.strip_suffix(crate::nn::RUNNING_STAT_SUFFIX);
                keep.contains(param.unwrap_or(name))
            });
        }
        Ok(DistillStep {
            loss,
            gradients,
            regressor_gradients,
        })
    }

    /// One pass over `data` in shuffled mini-batches of `batch` (as
    /// [`train_epoch`](crate::nn::train_epoch): the order from `seed`, the student in
    /// training mode), updating the student with `sgd` and the hint regressors by SGD
    /// with `sgd`'s learning rate and momentum. Returns the mean training loss.
    pub fn train_epoch(
        &mut self,
        student: &Network,
        student_model: &mut Model,
        sgd: &mut Sgd,
        data: &Dataset,
        batch: usize,
        seed: u64,
    ) -> Result<f64> {
        crate::nn::for_each_batch(data, batch, seed, |x, y, batch_seed| {
            let step = self.loss_and_gradients(student, student_model, x, y, Some(batch_seed))?;
            self.apply(sgd, student_model, &step, |_, g| Ok(g))
        })
    }

    /// As [`train_epoch`](Distillation::train_epoch), for quantization-aware training
    /// of `latent` with `qat`: each batch's loss is taken on the quantized model and
    /// the gradients reach the latent weights by the straight-through estimator.
    #[allow(clippy::too_many_arguments)] // train_epoch's arguments and the QAT settings
    pub fn train_epoch_quantized<Q: crate::quant::Quantizer>(
        &mut self,
        qat: &crate::nn::QuantAwareTraining<Q>,
        student: &Network,
        latent: &mut Model,
        sgd: &mut Sgd,
        data: &Dataset,
        batch: usize,
        seed: u64,
    ) -> Result<f64> {
        qat.check_latent(latent)?;
        crate::nn::for_each_batch(data, batch, seed, |x, y, batch_seed| {
            let quantized = qat.quantized(latent)?;
            let step = self.loss_and_gradients(student, &quantized, x, y, Some(batch_seed))?;
            self.apply(sgd, latent, &step, |latent, g| {
                qat.straight_through(latent, &quantized, g)
            })
        })
    }

    /// Updates the regressors and the student from `step` (the student's gradients
    /// mapped by `map`): nothing changes unless every update is valid.
    fn apply(
        &mut self,
        sgd: &mut Sgd,
        model: &mut Model,
        step: &DistillStep,
        map: impl FnOnce(&Model, Gradients) -> Result<Gradients>,
    ) -> Result<f32> {
        let mut regressors: Vec<Regressor> = self.hints.iter().map(|(_, r)| r.clone()).collect();
        for (r, g) in regressors.iter_mut().zip(&step.regressor_gradients) {
            r.step(g, sgd.lr(), sgd.momentum())?;
        }
        let grads = map(model, step.gradients.clone())?;
        sgd.step(model, &grads)?;
        for ((_, r), new) in self.hints.iter_mut().zip(regressors) {
            *r = new;
        }
        Ok(step.loss)
    }
}

/// The parameter names of the student's layers `0..=last`.
fn params_up_to(net: &Network, last: usize) -> BTreeSet<&str> {
    let mut names = BTreeSet::new();
    for layer in net.layers().iter().take(last + 1) {
        names.extend(layer.param_names());
    }
    names
}
