//! Running a [`TrainGraph`]: the forward pass (training or inference
//! semantics), the loss and its gradient, and the backward pass, freeing
//! each forward value once nothing reads it.

use super::autodiff::{Loss, TrainGraph};
use super::kernels as k;
use super::real::{Buf, Real};
use crate::ir::grad::dropout_train_factor;
use crate::ir::graph::NodeKind;
use crate::ir::op::{Op, ParamKind, PoolKind};
use crate::weights::Weights;
use netc_runtime::init::SplitMix64;
use petgraph::stable_graph::NodeIndex;
use std::collections::HashMap;

/// What a training forward pass records for backward beyond values.
enum Aux<T> {
    Mask(Vec<T>),
    ArgMax(Vec<u32>),
    Stats(k::BatchStats<T>),
}

/// The result of one forward and backward pass.
pub struct Pass<T> {
    /// Mean loss over the batch.
    pub loss: f64,
    /// Items whose highest score is their label.
    pub correct: usize,
    /// Per parameter (in [`TrainGraph::params`] order), its gradient;
    /// `None` for buffers.
    pub grads: Vec<Option<Vec<T>>>,
    /// Largest number of bytes of forward values, saved state and
    /// gradients held at once (as f32).
    pub peak_bytes: u64,
}

/// What a forward pass leaves: the values still needed, saved state, and
/// the bytes held now and at most.
struct Forward<T> {
    values: HashMap<NodeIndex, Buf<T>>,
    aux: HashMap<NodeIndex, Aux<T>>,
    live: u64,
    peak: u64,
}

fn bytes<T>(b: &Buf<T>) -> u64 {
    4 * b.data.len() as u64
}

/// One op's backward result: a gradient per operand (`None` where not
/// wanted) and its parameters' gradients by role.
type OpGrads<T> = (Vec<Option<Buf<T>>>, Vec<(&'static str, Vec<T>)>);

/// Which half of the step a timing belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Forward,
    Backward,
}

/// A training graph with its parameters in the step's number type.
pub struct Executor<T> {
    pub tg: TrainGraph,
    pub params: Vec<Buf<T>>,
    /// Seeds dropout masks: step `s` draws from `(seed, s, node)`.
    pub seed: u64,
    /// When set, every op's forward and backward time is appended here
    /// (`netc bench --train`).
    pub timings: Option<Vec<(NodeIndex, Phase, f64)>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("no initial value for parameter `{0}`")]
    MissingWeight(String),
    #[error("input has shape {found}, the model expects {expected}")]
    InputShape { expected: String, found: String },
    #[error("label {label} at batch position {index} is outside the model's {classes} classes")]
    Label {
        label: usize,
        index: usize,
        classes: usize,
    },
}

impl<T: Real> Executor<T> {
    pub fn new(tg: TrainGraph, weights: &Weights, seed: u64) -> Result<Self, ExecError> {
        let params = tg
            .params
            .iter()
            .map(|p| {
                let t = weights
                    .get(&p.name)
                    .ok_or_else(|| ExecError::MissingWeight(p.name.clone()))?;
                Ok(Buf::from_f32(&p.shape, t.data()))
            })
            .collect::<Result<_, ExecError>>()?;
        Ok(Executor {
            tg,
            params,
            seed,
            timings: None,
        })
    }

    /// The parameters as named f32 tensors (what `netc run` loads).
    pub fn weights(&self) -> Weights {
        let mut w = Weights::default();
        for (p, b) in self.tg.params.iter().zip(&self.params) {
            if let Ok(t) = netc_runtime::Tensor::new(b.shape.clone(), b.to_f32()) {
                w.insert(p.name.clone(), t);
            }
        }
        w
    }

    fn param(&self, n: NodeIndex, role: &str) -> &[T] {
        let node = &self.tg.graph.g[n];
        // Every role an op reads was declared with it, and `new` bound
        // every declared name.
        let name = node.param(role).map(|p| p.name.as_str()).unwrap_or("");
        self.tg
            .param_index
            .get(name)
            .map(|&i| self.params[i].data.as_slice())
            .unwrap_or(&[])
    }

    fn check_input(&self, x: &Buf<T>) -> Result<(), ExecError> {
        let want = self.tg.graph.g[self.tg.graph.inputs[0]].shape.dims();
        if x.shape != want {
            return Err(ExecError::InputShape {
                expected: format!("{want:?}"),
                found: format!("{:?}", x.shape),
            });
        }
        Ok(())
    }

    /// Class scores with inference semantics (running statistics, dropout
    /// scaled as the model says): what the compiled model would output at
    /// the loss's node.
    pub fn predict(&mut self, x: &Buf<T>) -> Result<Buf<T>, ExecError> {
        self.check_input(x)?;
        let mut f = self.forward(x, None);
        Ok(f.values
            .remove(&self.tg.logits)
            .unwrap_or_else(|| Buf::zeros(&[0])))
    }

    /// The forward pass: with `train` (the step number, seeding dropout)
    /// training semantics, saving what backward reads and updating
    /// batch-norm running statistics; without, inference semantics,
    /// keeping only the logits. Each value is freed after its last forward
    /// reader unless backward reads it too.
    fn forward(&mut self, x: &Buf<T>, train: Option<u64>) -> Forward<T> {
        let tg = &self.tg;
        let mut uses: HashMap<NodeIndex, usize> = HashMap::new();
        for &n in &tg.order {
            for o in tg.graph.operands(n) {
                *uses.entry(o).or_default() += 1;
            }
        }
        let keep = |o: &NodeIndex| *o == tg.logits || (train.is_some() && tg.kept.contains(o));
        let mut f = Forward {
            values: HashMap::new(),
            aux: HashMap::new(),
            live: 0,
            peak: 0,
        };
        let mut running = Vec::new();
        for &n in &tg.order {
            let out = match &tg.graph.g[n].kind {
                NodeKind::Input { .. } => x.clone(),
                NodeKind::Op(op) => {
                    let operands = tg.graph.operands(n);
                    let args: Vec<&Buf<T>> = operands.iter().map(|o| &f.values[o]).collect();
                    let t = std::time::Instant::now();
                    let stats = train.map(|_| &mut running);
                    let (out, saved) = self.forward_op(n, op, &args, stats, train.unwrap_or(0));
                    let seconds = t.elapsed().as_secs_f64();
                    if let Some(times) = &mut self.timings {
                        times.push((n, Phase::Forward, seconds));
                    }
                    if let (Some(s), true) = (saved, tg.wants_grad.contains(&n)) {
                        f.live += match &s {
                            Aux::Mask(m) => 4 * m.len() as u64,
                            Aux::ArgMax(a) => 4 * a.len() as u64,
                            Aux::Stats(s) => 8 * s.mean.len() as u64,
                        };
                        f.aux.insert(n, s);
                    }
                    for o in operands {
                        if let Some(u) = uses.get_mut(&o) {
                            *u -= 1;
                            if *u == 0 && !keep(&o) {
                                if let Some(v) = f.values.remove(&o) {
                                    f.live -= bytes(&v);
                                }
                            }
                        }
                    }
                    out
                }
            };
            f.live += bytes(&out);
            f.peak = f.peak.max(f.live);
            f.values.insert(n, out);
        }
        for (i, new) in running {
            self.params[i].data = new;
        }
        f
    }

    /// One op forward. With `train` (the step's running statistics to
    /// update), batch norm uses the batch's statistics and dropout draws
    /// a mask; the second value is what backward needs saved.
    fn forward_op(
        &self,
        n: NodeIndex,
        op: &Op,
        args: &[&Buf<T>],
        train: Option<&mut Vec<(usize, Vec<T>)>>,
        step: u64,
    ) -> (Buf<T>, Option<Aux<T>>) {
        let node = &self.tg.graph.g[n];
        let shape = node.shape.dims();
        let x = args[0];
        let bias = |present: bool| present.then(|| self.param(n, "bias"));
        match op {
            Op::Conv(c) => (
                k::conv_forward(x, self.param(n, "weight"), bias(c.bias), c, shape),
                None,
            ),
            Op::ConvTranspose(c) => (
                k::conv_transpose_forward(x, self.param(n, "weight"), bias(c.bias), c, shape),
                None,
            ),
            Op::Dense(d) => (
                k::dense_forward(x, self.param(n, "weight"), bias(d.bias), d),
                None,
            ),
            Op::BatchNorm { eps, .. } => {
                let (gamma, beta) = (self.param(n, "weight"), self.param(n, "bias"));
                match train {
                    Some(updates) => {
                        let (y, stats) = k::batch_norm_train(x, gamma, beta, *eps);
                        // PyTorch's running estimates: momentum 0.1, the
                        // unbiased batch variance.
                        let m = T::from_f64(0.1);
                        let keep = T::from_f64(0.9);
                        for (role, batch) in [
                            ("running_mean", &stats.mean),
                            ("running_var", &stats.unbiased_var),
                        ] {
                            let old = self.param(n, role);
                            let new = old.iter().zip(batch).map(|(&o, &b)| keep * o + m * b);
                            if let Some(p) = node.param(role) {
                                let i = self.tg.param_index[&p.name];
                                updates.push((i, new.collect()));
                            }
                        }
                        (y, Some(Aux::Stats(stats)))
                    }
                    None => {
                        let stats = [
                            gamma,
                            beta,
                            self.param(n, "running_mean"),
                            self.param(n, "running_var"),
                        ];
                        (k::batch_norm_eval(x, stats, *eps), None)
                    }
                }
            }
            Op::Activation(a) => (k::activation_forward(x, *a), None),
            Op::Pool(p) => {
                let (y, arg) = k::pool_forward(x, p, shape);
                let aux = (p.kind == PoolKind::Max).then_some(Aux::ArgMax(arg));
                (y, aux)
            }
            Op::GlobalAvgPool | Op::AdaptiveAvgPool { .. } => {
                (k::adaptive_avg_forward(x, shape), None)
            }
            Op::Flatten | Op::Identity => (
                Buf {
                    shape: shape.to_vec(),
                    data: x.data.clone(),
                },
                None,
            ),
            Op::Dropout { ratio, scale } => match train {
                Some(_) => {
                    let factor = T::from_f64(dropout_train_factor(*ratio, *scale));
                    let mut rng = SplitMix64::new(
                        self.seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ n.index() as u64,
                    );
                    let mask: Vec<T> = (0..x.data.len())
                        .map(|_| {
                            if rng.uniform() >= *ratio as f64 {
                                factor
                            } else {
                                T::ZERO
                            }
                        })
                        .collect();
                    let mut y = x.clone();
                    y.data.iter_mut().zip(&mask).for_each(|(v, &m)| *v = *v * m);
                    (y, Some(Aux::Mask(mask)))
                }
                None => {
                    let mut y = x.clone();
                    let s = T::from_f64(*scale as f64);
                    y.data.iter_mut().for_each(|v| *v = *v * s);
                    (y, None)
                }
            },
            Op::Scale { factor } => {
                let mut y = x.clone();
                let s = T::from_f64(*factor as f64);
                y.data.iter_mut().for_each(|v| *v = *v * s);
                (y, None)
            }
            Op::Softmax => (k::softmax_forward(x), None),
            Op::Concat => (k::concat_forward(args, shape), None),
            Op::Slice { start, .. } => (k::channel_block(x, shape, *start, false), None),
            Op::Add => {
                let mut y = x.clone();
                for a in &args[1..] {
                    y.add_assign(a);
                }
                (y, None)
            }
            Op::Mul => (k::mul_forward(x, args[1]), None),
            Op::ChannelShuffle { groups } => (k::channel_shuffle(x, *groups), None),
            Op::MaxUnpool { window, ceil } => {
                let (y, arg) = k::max_unpool_forward(x, args[1], *window, *ceil);
                (y, Some(Aux::ArgMax(arg)))
            }
            Op::Resize { mode, .. } => (k::resize(x, shape, *mode, false), None),
        }
    }

    /// Forward with training semantics, the loss, and backward: the
    /// parameters' gradients for this batch. Batch-norm running statistics
    /// are updated; dropout masks come from `(seed, step)`.
    pub fn forward_backward(
        &mut self,
        x: &Buf<T>,
        labels: &[usize],
        step: u64,
    ) -> Result<Pass<T>, ExecError> {
        self.check_input(x)?;
        let classes = self.tg.classes;
        if let Some((index, &label)) = labels.iter().enumerate().find(|(_, &l)| l >= classes) {
            return Err(ExecError::Label {
                label,
                index,
                classes,
            });
        }
        let Forward {
            mut values,
            mut aux,
            mut live,
            mut peak,
        } = self.forward(x, Some(step));
        let tg = &self.tg;

        // The loss and its gradient at the logits.
        let logits = &values[&tg.logits];
        let (loss, correct, dlogits) = loss_and_grad(tg.loss, logits, labels, classes);
        if !tg.kept.contains(&tg.logits) {
            if let Some(v) = values.remove(&tg.logits) {
                live -= bytes(&v);
            }
        }

        // Backward in reverse order, each gradient accumulated in place.
        let mut grads: HashMap<NodeIndex, Buf<T>> = HashMap::new();
        live += bytes(&dlogits);
        grads.insert(tg.logits, dlogits);
        let mut pgrads: Vec<Option<Vec<T>>> = vec![None; tg.params.len()];
        for &n in tg.order.iter().rev() {
            let NodeKind::Op(op) = &tg.graph.g[n].kind else {
                continue;
            };
            if !tg.wants_grad.contains(&n) {
                continue;
            }
            let Some(dy) = grads.remove(&n) else {
                continue;
            };
            live -= bytes(&dy);
            let operands = tg.graph.operands(n);
            let wants: Vec<bool> = operands
                .iter()
                .enumerate()
                .map(|(port, o)| op.differentiable_port(port) && tg.wants_grad.contains(o))
                .collect();
            let saved = aux.remove(&n);
            let t = std::time::Instant::now();
            let (dxs, dparams) = self.backward_op(n, op, &operands, &wants, &values, saved, &dy);
            let seconds = t.elapsed().as_secs_f64();
            if let Some(times) = &mut self.timings {
                times.push((n, Phase::Backward, seconds));
            }
            for (p, dx) in dxs.into_iter().enumerate() {
                let Some(dx) = dx else { continue };
                if !wants[p] {
                    continue;
                }
                match grads.get_mut(&operands[p]) {
                    Some(g) => g.add_assign(&dx),
                    None => {
                        live += bytes(&dx);
                        grads.insert(operands[p], dx);
                    }
                }
            }
            let node = &tg.graph.g[n];
            for (role, g) in dparams {
                let Some(p) = node.param(role) else { continue };
                let i = tg.param_index[&p.name];
                match &mut pgrads[i] {
                    Some(acc) => acc.iter_mut().zip(&g).for_each(|(a, &b)| *a += b),
                    None => {
                        live += 4 * g.len() as u64;
                        pgrads[i] = Some(g);
                    }
                }
            }
            peak = peak.max(live);
        }
        for (i, p) in tg.params.iter().enumerate() {
            if p.kind == ParamKind::Learnable && pgrads[i].is_none() {
                pgrads[i] = Some(vec![T::ZERO; self.params[i].data.len()]);
            }
        }
        Ok(Pass {
            loss,
            correct,
            grads: pgrads,
            peak_bytes: peak,
        })
    }

    /// One op's backward: a gradient per operand (`None` where not
    /// wanted) and the parameters' gradients by role.
    #[allow(clippy::too_many_arguments)]
    fn backward_op(
        &self,
        n: NodeIndex,
        op: &Op,
        operands: &[NodeIndex],
        wants: &[bool],
        values: &HashMap<NodeIndex, Buf<T>>,
        saved: Option<Aux<T>>,
        dy: &Buf<T>,
    ) -> OpGrads<T> {
        let tg = &self.tg;
        let in_shape = |p: usize| tg.graph.g[operands[p]].shape.dims().to_vec();
        let value = |p: usize| &values[&operands[p]];
        let want_x = wants.first().copied().unwrap_or(false);
        let layer = |g: k::LayerGrads<T>| {
            let mut params = vec![("weight", g.dw)];
            if let Some(db) = g.db {
                params.push(("bias", db));
            }
            (vec![g.dx], params)
        };
        let scaled = |s: f64| {
            let mut dx = dy.clone();
            dx.shape = in_shape(0);
            let s = T::from_f64(s);
            dx.data.iter_mut().for_each(|v| *v = *v * s);
            dx
        };
        match op {
            Op::Conv(c) => layer(k::conv_backward(
                value(0),
                self.param(n, "weight"),
                dy,
                c,
                want_x,
            )),
            Op::ConvTranspose(c) => layer(k::conv_transpose_backward(
                value(0),
                self.param(n, "weight"),
                dy,
                c,
                want_x,
            )),
            Op::Dense(d) => layer(k::dense_backward(
                value(0),
                self.param(n, "weight"),
                dy,
                d,
                want_x,
            )),
            Op::BatchNorm { .. } => {
                let Some(Aux::Stats(stats)) = saved else {
                    return (vec![None], Vec::new());
                };
                let (dx, dg, db) =
                    k::batch_norm_backward(value(0), self.param(n, "weight"), &stats, dy);
                (vec![Some(dx)], vec![("weight", dg), ("bias", db)])
            }
            Op::Activation(a) => (
                vec![Some(k::activation_backward(value(0), dy, *a))],
                Vec::new(),
            ),
            Op::Pool(p) => {
                let arg = match saved {
                    Some(Aux::ArgMax(a)) => a,
                    _ => Vec::new(),
                };
                (
                    vec![Some(k::pool_backward(&in_shape(0), p, &arg, dy))],
                    Vec::new(),
                )
            }
            Op::GlobalAvgPool | Op::AdaptiveAvgPool { .. } => (
                vec![Some(k::adaptive_avg_backward(&in_shape(0), dy))],
                Vec::new(),
            ),
            Op::Flatten | Op::Identity => (vec![Some(scaled(1.0))], Vec::new()),
            Op::Dropout { .. } => {
                let mut dx = dy.clone();
                if let Some(Aux::Mask(mask)) = saved {
                    dx.data
                        .iter_mut()
                        .zip(&mask)
                        .for_each(|(g, &m)| *g = *g * m);
                }
                (vec![Some(dx)], Vec::new())
            }
            Op::Scale { factor } => (vec![Some(scaled(*factor as f64))], Vec::new()),
            Op::Softmax => (vec![Some(k::softmax_backward(&values[&n], dy))], Vec::new()),
            Op::Concat => {
                let mut start = 0;
                let dxs = (0..operands.len())
                    .map(|p| {
                        let shape = in_shape(p);
                        let dx = wants[p].then(|| k::channel_block(dy, &shape, start, false));
                        start += shape[1];
                        dx
                    })
                    .collect();
                (dxs, Vec::new())
            }
            Op::Slice { start, .. } => (
                vec![Some(k::channel_block(dy, &in_shape(0), *start, true))],
                Vec::new(),
            ),
            Op::Add => (
                (0..operands.len())
                    .map(|p| wants[p].then(|| dy.clone()))
                    .collect(),
                Vec::new(),
            ),
            Op::Mul => {
                let (da, db) = k::mul_backward(value(0), value(1), dy);
                (vec![Some(da), Some(db)], Vec::new())
            }
            Op::Resize { mode, .. } => (
                vec![Some(k::resize(dy, &in_shape(0), *mode, true))],
                Vec::new(),
            ),
            // The inverse permutation: the shuffle with the other factor.
            Op::ChannelShuffle { groups } => (
                vec![Some(k::channel_shuffle(dy, dy.shape[1] / groups))],
                Vec::new(),
            ),
            Op::MaxUnpool { .. } => {
                let arg = match saved {
                    Some(Aux::ArgMax(a)) => a,
                    _ => Vec::new(),
                };
                (
                    vec![Some(k::max_unpool_backward(&in_shape(0), &arg, dy)), None],
                    Vec::new(),
                )
            }
        }
    }
}

/// The mean loss over the batch, the number of correct predictions, and
/// the loss's gradient at the logits.
fn loss_and_grad<T: Real>(
    loss: Loss,
    logits: &Buf<T>,
    labels: &[usize],
    classes: usize,
) -> (f64, usize, Buf<T>) {
    let n = logits.shape[0];
    let mut grad = Buf::zeros(&logits.shape);
    let (mut total, mut correct) = (0.0, 0);
    for (i, &label) in labels.iter().enumerate().take(n) {
        let row = &logits.data[i * classes..][..classes];
        let best = (0..classes).fold(0, |b, c| if row[c] > row[b] { c } else { b });
        correct += (best == label) as usize;
        let g = &mut grad.data[i * classes..][..classes];
        match loss {
            Loss::CrossEntropy => {
                let max = row.iter().map(|v| v.to_f64()).fold(f64::MIN, f64::max);
                let sum: f64 = row.iter().map(|v| (v.to_f64() - max).exp()).sum();
                total += sum.ln() + max - row[label].to_f64();
                for c in 0..classes {
                    let p = (row[c].to_f64() - max).exp() / sum;
                    let target = (c == label) as u8 as f64;
                    g[c] = T::from_f64((p - target) / n as f64);
                }
            }
            Loss::Mse => {
                let count = (n * classes) as f64;
                for c in 0..classes {
                    let d = row[c].to_f64() - (c == label) as u8 as f64;
                    total += d * d * n as f64 / count;
                    g[c] = T::from_f64(2.0 * d / count);
                }
            }
        }
    }
    (total / n as f64, correct, grad)
}
