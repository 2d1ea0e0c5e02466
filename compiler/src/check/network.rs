//! The checked network: every layer instantiated with concrete shapes,
//! parameter names and the source span it came from.

pub use crate::ir::graph::Param;
pub use crate::ir::op::ReceptiveField;
use crate::ir::op::{Op, ParamKind};
use crate::ir::shape::Shape;
use crate::source::{CallPath, Span};

pub type TensorId = usize;

#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub shape: Shape,
    /// `None` once spatial structure is gone (after flatten/dense).
    pub rf: Option<ReceptiveField>,
}

#[derive(Clone, Debug)]
pub struct NetInput {
    pub name: String,
    pub tensor: TensorId,
}

#[derive(Clone, Debug)]
pub struct Layer {
    /// Dotted path, unique in the network.
    pub name: String,
    pub op: Op,
    pub inputs: Vec<TensorId>,
    pub output: TensorId,
    /// The expression in the `.net` source that created this layer.
    pub span: Span,
    /// The block calls that led to `span`, outermost first.
    pub call_path: CallPath,
    pub params: Vec<Param>,
}

#[derive(Clone, Debug)]
pub struct Network {
    pub name: String,
    pub batch: usize,
    pub tensors: Vec<TensorInfo>,
    pub inputs: Vec<NetInput>,
    pub layers: Vec<Layer>,
    pub outputs: Vec<TensorId>,
}

impl Network {
    pub fn shape(&self, t: TensorId) -> &Shape {
        &self.tensors[t].shape
    }

    pub fn params(&self) -> impl Iterator<Item = &Param> {
        self.layers.iter().flat_map(|l| l.params.iter())
    }

    pub fn learnable_params(&self) -> u64 {
        self.params()
            .filter(|p| p.spec.kind == ParamKind::Learnable)
            .map(|p| p.spec.shape.numel() as u64)
            .sum()
    }

    pub fn buffer_params(&self) -> u64 {
        self.params()
            .filter(|p| p.spec.kind == ParamKind::Buffer)
            .map(|p| p.spec.shape.numel() as u64)
            .sum()
    }

    pub fn macs(&self) -> u64 {
        self.layers
            .iter()
            .map(|l| l.op.macs(self.shape(l.output)))
            .sum()
    }

    /// Bytes of every intermediate and output tensor, none reused.
    pub fn activation_bytes(&self) -> u64 {
        self.layers
            .iter()
            .map(|l| 4 * self.shape(l.output).numel() as u64)
            .sum()
    }
}
