//! The reference kernels run against a memory plan: every tensor is read
//! from and written to its planned place in one arena, as generated code
//! will. If the plan let two live tensors overlap, or a view or concat slot
//! were misplaced, outputs would differ from [`super::run`]'s; the arena
//! starts filled with NaN so reads of never-written memory show too.

use super::{eval, node_param, RunError};
use crate::ir::graph::NodeKind;
use crate::ir::op::Op;
use crate::ir::Graph;
use crate::plan::{MemoryPlan, TensorLoc};
use crate::weights::Weights;
use netc_runtime::Tensor;

fn read(loc: &TensorLoc, shape: &[usize], arena: &[f32], inputs: &[Tensor]) -> Tensor {
    let src: &[f32] = match loc.input {
        Some(i) => inputs[i].data(),
        None => arena,
    };
    let mut data = Vec::with_capacity(shape.iter().product());
    for n in 0..shape[0] {
        data.extend_from_slice(&src[loc.offset + n * loc.batch_stride..][..loc.item]);
    }
    match Tensor::new(shape.to_vec(), data) {
        Ok(t) => t,
        Err(e) => unreachable!("planned read of a validated shape: {e}"),
    }
}

fn write(loc: &TensorLoc, t: &Tensor, arena: &mut [f32]) {
    for (n, item) in t.data().chunks(loc.item).enumerate() {
        arena[loc.offset + n * loc.batch_stride..][..loc.item].copy_from_slice(item);
    }
}

/// Run `graph` inside one arena laid out by `plan` (made for this graph).
pub fn run(
    graph: &Graph,
    plan: &MemoryPlan,
    weights: &Weights,
    inputs: &[Tensor],
) -> Result<Vec<Tensor>, RunError> {
    if inputs.len() != graph.inputs.len() {
        return Err(RunError::InputCount {
            expected: graph.inputs.len(),
            found: inputs.len(),
        });
    }
    let loc = |n| {
        plan.locs.get(&n).ok_or_else(|| {
            RunError::Internal(format!("no planned location for {}", graph.g[n].name))
        })
    };
    let mut arena = vec![f32::NAN; plan.arena_floats];
    for &n in &plan.order {
        let node = &graph.g[n];
        let NodeKind::Op(op) = &node.kind else {
            continue;
        };
        let out_loc = *loc(n)?;
        if out_loc.input.is_some() {
            continue; // a view of an input: nothing to compute
        }
        let operands = graph.operands(n);
        match op {
            Op::Slice { .. } | Op::Flatten | Op::Identity => continue,
            Op::Concat => {
                // Placed producers already wrote their slots; copy the rest.
                let hw: usize = node.shape.0[2..].iter().product();
                let mut offset = 0;
                for &p in &operands {
                    let pshape = graph.g[p].shape.dims();
                    if !graph.g[p].placed_in(n) {
                        let t = read(loc(p)?, pshape, &arena, inputs);
                        let slot = TensorLoc {
                            offset: out_loc.offset + offset * hw,
                            item: t.numel() / pshape[0],
                            ..out_loc
                        };
                        write(&slot, &t, &mut arena);
                    }
                    offset += pshape[1];
                }
                continue;
            }
            Op::Conv(_)
            | Op::ConvTranspose(_)
            | Op::BatchNorm { .. }
            | Op::Activation(_)
            | Op::Pool(_)
            | Op::GlobalAvgPool
            | Op::AdaptiveAvgPool { .. }
            | Op::Dense(_)
            | Op::Dropout { .. }
            | Op::Softmax
            | Op::Add
            | Op::Mul
            | Op::MaxUnpool { .. }
            | Op::ChannelShuffle { .. }
            | Op::Resize { .. }
            | Op::Scale { .. } => {}
        }
        let args: Vec<Tensor> = operands
            .iter()
            .map(|&o| Ok(read(loc(o)?, graph.g[o].shape.dims(), &arena, inputs)))
            .collect::<Result<_, RunError>>()?;
        let arg_refs: Vec<&Tensor> = args.iter().collect();
        let param = |role: &str| node_param(node, weights, role);
        let out = eval(op, &arg_refs, node.shape.dims(), &param)?;
        write(&out_loc, &out, &mut arena);
    }
    graph
        .outputs
        .iter()
        .map(|&o| Ok(read(loc(o)?, graph.g[o].shape.dims(), &arena, inputs)))
        .collect()
}
