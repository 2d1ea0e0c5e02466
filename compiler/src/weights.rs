//! Binding weight tensors to a network's parameters by name.
//!
//! A file must provide exactly the parameters the model declares, with the
//! declared shapes: a missing key, an unexpected key or a shape mismatch is
//! an error naming the key. PyTorch's `num_batches_tracked` counters are
//! the one exception: they are ignored.

use crate::check::Param;
use crate::ir::graph::Graph;
use crate::ir::op::{Op, WeightLayout};
use netc_runtime::init::{random_tensor, Init};
use netc_runtime::weights::WeightFile;
use netc_runtime::Tensor;
use std::collections::HashMap;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BindError {
    #[error("{file}: missing tensor `{key}` (expected shape {expected}){more}")]
    Missing {
        file: PathBuf,
        key: String,
        expected: String,
        /// ", and N more: a, b, …" when several are missing.
        more: String,
    },
    #[error(
        "{file}: unexpected tensor `{key}` (shape {found}); the model has no such parameter{more}"
    )]
    Unexpected {
        file: PathBuf,
        key: String,
        found: String,
        more: String,
    },
    #[error("{file}: tensor `{key}` has shape {found}, the model expects {expected}")]
    Shape {
        file: PathBuf,
        key: String,
        expected: String,
        found: String,
    },
}

/// A parameter holding NaN or infinite values.
#[derive(Clone, Debug, PartialEq)]
pub struct NonFinite {
    pub key: String,
    /// How many elements are NaN or ±inf, and the flat index of the first.
    pub count: usize,
    pub first: usize,
    pub numel: usize,
}

impl std::fmt::Display for NonFinite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "tensor `{}` has {} NaN or infinite value(s) of {} (first at flat index {})",
            self.key, self.count, self.numel, self.first
        )
    }
}

/// Parameter tensors by name.
#[derive(Clone, Debug, Default)]
pub struct Weights {
    map: HashMap<String, Tensor>,
}

fn more(extra: &[&str]) -> String {
    match extra.len() {
        0 => String::new(),
        n => {
            let shown: Vec<&str> = extra.iter().take(5).copied().collect();
            let ellipsis = if n > 5 { ", …" } else { "" };
            format!(", and {n} more: {}{ellipsis}", shown.join(", "))
        }
    }
}

impl Weights {
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.map.get(name)
    }

    pub fn insert(&mut self, name: String, t: Tensor) {
        self.map.insert(name, t);
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Total bytes as f32.
    pub fn bytes(&self) -> u64 {
        self.map.values().map(|t| 4 * t.numel() as u64).sum()
    }

    /// Parameters with NaN or infinite values, by key. A file from anywhere
    /// may hold them, and they propagate silently into every output.
    pub fn non_finite(&self) -> Vec<NonFinite> {
        let mut found: Vec<NonFinite> = self
            .map
            .iter()
            .filter_map(|(key, t)| {
                let bad = |v: &f32| !v.is_finite();
                let first = t.data().iter().position(bad)?;
                Some(NonFinite {
                    key: key.clone(),
                    count: t.data().iter().filter(|v| bad(v)).count(),
                    first,
                    numel: t.numel(),
                })
            })
            .collect();
        found.sort_by(|a, b| a.key.cmp(&b.key));
        found
    }

    /// Bind a loaded file to the parameters of `graph`.
    pub fn bind(graph: &Graph, file: WeightFile) -> Result<Weights, BindError> {
        let params: Vec<&Param> = graph
            .g
            .node_weights()
            .flat_map(|n| n.params.iter())
            .collect();
        let path = file.path.clone();
        let mut available: HashMap<String, Tensor> = file
            .tensors
            .into_iter()
            .filter(|(k, _)| !k.ends_with("num_batches_tracked"))
            .collect();
        let mut map = HashMap::new();
        let mut missing = Vec::new();
        for p in &params {
            match available.remove(&p.name) {
                Some(t) => {
                    if t.shape() != p.spec.shape.dims() {
                        return Err(BindError::Shape {
                            file: path,
                            key: p.name.clone(),
                            expected: p.spec.shape.to_string(),
                            found: t.shape_string(),
                        });
                    }
                    map.insert(p.name.clone(), t);
                }
                None => missing.push(*p),
            }
        }
        if let Some(first) = missing.first() {
            let rest: Vec<&str> = missing[1..].iter().map(|p| p.name.as_str()).collect();
            return Err(BindError::Missing {
                file: path,
                key: first.name.clone(),
                expected: first.spec.shape.to_string(),
                more: more(&rest),
            });
        }
        let mut extra: Vec<(&String, &Tensor)> = available.iter().collect();
        extra.sort_by_key(|(k, _)| k.as_str());
        if let Some((key, t)) = extra.first() {
            let rest: Vec<&str> = extra[1..].iter().map(|(k, _)| k.as_str()).collect();
            return Err(BindError::Unexpected {
                file: path,
                key: (*key).clone(),
                found: t.shape_string(),
                more: more(&rest),
            });
        }
        Ok(Weights { map })
    }

    /// Initial weights for training from scratch: He-normal conv and
    /// dense weights (the same streams as [`Weights::random`]), zero
    /// biases, and batch norm as PyTorch starts it (scale 1, shift 0,
    /// running mean 0, running variance 1).
    pub fn for_training(graph: &Graph, seed: u64) -> Weights {
        let mut w = Weights::random(graph, seed);
        for node in graph.g.node_weights() {
            let Some(op) = node.op() else { continue };
            for p in &node.params {
                let fill = match (op, p.spec.role) {
                    (Op::BatchNorm { .. }, "weight" | "running_var") => 1.0,
                    (_, "weight") => continue,
                    _ => 0.0,
                };
                let t = Tensor::new(
                    p.spec.shape.dims().to_vec(),
                    vec![fill; p.spec.shape.numel()],
                );
                if let Ok(t) = t {
                    w.map.insert(p.name.clone(), t);
                }
            }
        }
        w
    }

    /// Deterministic random weights for every parameter of `graph`: He
    /// initialisation for conv and dense weights, small random biases and
    /// batch-norm statistics away from the identity, so every op matters.
    pub fn random(graph: &Graph, seed: u64) -> Weights {
        use rayon::prelude::*;
        let mut wanted = Vec::new();
        for node in graph.g.node_weights() {
            let Some(op) = node.op() else { continue };
            for p in &node.params {
                let dims = p.spec.shape.dims().to_vec();
                let init = match (op, p.spec.role) {
                    (Op::Conv(_), "weight") => Init::He {
                        fan_in: dims[1..].iter().product(),
                    },
                    (Op::Dense(d), "weight") => Init::He {
                        fan_in: match d.layout {
                            WeightLayout::OutIn => dims[1],
                            WeightLayout::InOut => dims[0],
                        },
                    },
                    (Op::BatchNorm { .. }, "weight" | "running_var") => {
                        Init::Uniform { lo: 0.5, hi: 1.5 }
                    }
                    (Op::BatchNorm { .. }, _) => Init::Normal { std: 0.1 },
                    _ => Init::Normal { std: 0.05 },
                };
                wanted.push((p.name.clone(), dims, init));
            }
        }
        // Each tensor's values come from its own seeded stream, so making
        // them on several threads changes none of them.
        let map = wanted
            .into_par_iter()
            .map(|(name, dims, init)| {
                let t = random_tensor(seed, &name, dims, init);
                (name, t)
            })
            .collect::<HashMap<_, _>>();
        Weights { map }
    }
}
