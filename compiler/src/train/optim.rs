//! Optimisers and learning-rate schedules, with PyTorch's update rules
//! (`torch.optim.SGD`, `Adam`, `AdamW`; `clip_grad_norm_`), so a step here
//! and a step there agree given the same gradients.

use super::real::{Buf, Real};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Kind {
    /// `buf = momentum·buf + g` (the first step `buf = g`), then
    /// `p −= lr·(g + momentum·buf)` with Nesterov or `p −= lr·buf`.
    Sgd { momentum: f64, nesterov: bool },
    /// L2 weight decay added to the gradient.
    Adam { beta1: f64, beta2: f64, eps: f64 },
    /// Decoupled weight decay: `p −= lr·wd·p` before the Adam step.
    AdamW { beta1: f64, beta2: f64, eps: f64 },
}

/// The learning rate over steps.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Schedule {
    Constant,
    /// Multiply by `gamma` every `every` steps.
    Step {
        every: u64,
        gamma: f64,
    },
    /// Cosine from the base rate to 0 over `total` steps.
    Cosine {
        total: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub kind: Kind,
    pub lr: f64,
    pub weight_decay: f64,
    pub schedule: Schedule,
    /// Linear warm-up from lr/warmup to lr over this many steps.
    pub warmup: u64,
    /// Clip the gradients' global L2 norm to this.
    pub clip: Option<f64>,
}

impl Config {
    /// The learning rate of step `t` (0-based).
    pub fn lr_at(&self, t: u64) -> f64 {
        let base = match self.schedule {
            Schedule::Constant => self.lr,
            Schedule::Step { every, gamma } => self.lr * gamma.powi((t / every.max(1)) as i32),
            Schedule::Cosine { total } => {
                let f = (t.min(total) as f64) / total.max(1) as f64;
                self.lr * 0.5 * (1.0 + (std::f64::consts::PI * f).cos())
            }
        };
        if t < self.warmup {
            base * (t + 1) as f64 / self.warmup as f64
        } else {
            base
        }
    }
}

/// Per-parameter optimiser state (momentum buffer, or Adam's moments),
/// kept in f32 as PyTorch keeps it for f32 parameters, so a checkpoint
/// holds it exactly.
#[derive(Clone, Debug, Default)]
pub struct State {
    /// Steps taken.
    pub t: u64,
    pub first: Vec<Vec<f32>>,
    pub second: Vec<Vec<f32>>,
}

/// The gradients' global L2 norm.
pub fn global_norm<T: Real>(grads: &[Option<Vec<T>>]) -> f64 {
    grads
        .iter()
        .flatten()
        .flat_map(|g| g.iter())
        .map(|v| v.to_f64().powi(2))
        .sum::<f64>()
        .sqrt()
}

impl State {
    /// Apply one update to every parameter that has a gradient. Returns
    /// the learning rate used and the gradients' norm before clipping.
    pub fn step<T: Real>(
        &mut self,
        cfg: &Config,
        params: &mut [Buf<T>],
        grads: &[Option<Vec<T>>],
    ) -> (f64, f64) {
        if self.first.len() != params.len() {
            self.first = params.iter().map(|_| Vec::new()).collect();
            self.second = params.iter().map(|_| Vec::new()).collect();
        }
        let norm = global_norm(grads);
        let clip = match cfg.clip {
            Some(max) if norm > max => max / (norm + 1e-6),
            _ => 1.0,
        };
        let lr = cfg.lr_at(self.t);
        self.t += 1;
        let t = self.t as i32;
        let wd = cfg.weight_decay;
        for (i, (p, g)) in params.iter_mut().zip(grads).enumerate() {
            let Some(g) = g else { continue };
            let (m1, m2) = (&mut self.first[i], &mut self.second[i]);
            // A tensor without state (the first step, or a checkpoint from
            // another optimiser) starts from zeros.
            let fresh = m1.len() != g.len();
            if fresh {
                *m1 = vec![0.0; g.len()];
            }
            if !matches!(cfg.kind, Kind::Sgd { .. }) && m2.len() != g.len() {
                *m2 = vec![0.0; g.len()];
            }
            // Elementwise, in parallel chunks: the update of one value
            // depends on nothing else.
            const CHUNK: usize = 1 << 14;
            let chunks = p.data.par_chunks_mut(CHUNK).zip(g.par_chunks(CHUNK));
            match cfg.kind {
                Kind::Sgd { momentum, nesterov } => {
                    chunks
                        .zip(m1.par_chunks_mut(CHUNK))
                        .for_each(|((p, g), m1)| {
                            for ((pv, gv), b) in p.iter_mut().zip(g).zip(m1) {
                                let w = pv.to_f64();
                                let mut grad = gv.to_f64() * clip + wd * w;
                                if momentum != 0.0 {
                                    let buf = if fresh {
                                        grad
                                    } else {
                                        momentum * *b as f64 + grad
                                    };
                                    *b = buf as f32;
                                    grad = if nesterov { grad + momentum * buf } else { buf };
                                }
                                *pv = T::from_f64(w - lr * grad);
                            }
                        })
                }
                Kind::Adam { beta1, beta2, eps } | Kind::AdamW { beta1, beta2, eps } => {
                    let decoupled = matches!(cfg.kind, Kind::AdamW { .. });
                    let (c1, c2) = (1.0 - beta1.powi(t), 1.0 - beta2.powi(t));
                    chunks
                        .zip(m1.par_chunks_mut(CHUNK))
                        .zip(m2.par_chunks_mut(CHUNK))
                        .for_each(|(((p, g), m1), m2)| {
                            for (((pv, gv), m1), m2) in p.iter_mut().zip(g).zip(m1).zip(m2) {
                                let mut w = pv.to_f64();
                                let mut grad = gv.to_f64() * clip;
                                if decoupled {
                                    w *= 1.0 - lr * wd;
                                } else {
                                    grad += wd * w;
                                }
                                let m = beta1 * *m1 as f64 + (1.0 - beta1) * grad;
                                let v = beta2 * *m2 as f64 + (1.0 - beta2) * grad * grad;
                                (*m1, *m2) = (m as f32, v as f32);
                                w -= lr * (m / c1) / ((v / c2).sqrt() + eps);
                                *pv = T::from_f64(w);
                            }
                        })
                }
            }
        }
        (lr, norm)
    }
}
