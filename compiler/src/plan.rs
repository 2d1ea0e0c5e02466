//! Memory planning: where every tensor lives.
//!
//! The last lowering step before code generation, and a mandatory one: the
//! optimised graph goes in, a [`MemoryPlan`] comes out and is handed to
//! codegen (or the planned interpreter), which only read it.
//!
//! Each node's output gets a [`TensorLoc`]: an offset in one activation
//! arena (or in a caller's input buffer) and a batch stride — a batch item
//! is always contiguous, but a channel slice of a wider tensor (a concat
//! slot, a `slice` view) is strided across the batch.
//!
//! - Views (`slice`, `flatten`) alias their operand.
//! - Producers placed by `concat_elim` alias their slot in the concat.
//! - Elementwise ops (activation, scale, dropout, batch norm) run in place
//!   when nothing reads their operand's buffer afterwards.
//! - A conv or dense whose epilogue adds a residual writes over that
//!   residual when nothing reads it afterwards ([`overwritable_residual`]):
//!   each output line is then read once and written once, where a fresh
//!   buffer costs a third stream (ResNet-50's 56×56 expand convs at batch
//!   8 read a 25.7 MB residual and wrote a 25.7 MB output).
//! - Every other op gets a fresh buffer. A buffer lives from its first
//!   writer to the last reader of anything aliasing it; buffers are given
//!   arena offsets greedily, largest first, lowest offset that does not
//!   overlap a buffer with an overlapping lifetime.
//!
//! Codegen only reads the plan. Network inputs are never written.

use crate::ir::graph::{GraphError, NodeKind};
use crate::ir::op::{residual_inputs, Memory, Op};
use crate::ir::Graph;
use netc_runtime::kernels::gemm::single_pass_k;
use petgraph::stable_graph::NodeIndex;
use std::collections::HashMap;

/// Arena offsets are multiples of 16 floats (64 bytes, one AVX-512 vector).
pub const ALIGN: usize = 16;

/// Where a tensor lives: item `n` occupies `offset + n·batch_stride ..
/// + item` of the arena, or of input `input` when that is set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorLoc {
    pub input: Option<usize>,
    pub offset: usize,
    pub batch_stride: usize,
    pub item: usize,
}

/// One arena allocation and the live range (positions in `order`).
#[derive(Clone, Debug)]
pub struct Buffer {
    pub offset: usize,
    pub size: usize,
    pub first: usize,
    pub last: usize,
    pub members: Vec<NodeIndex>,
}

#[derive(Clone, Debug)]
pub struct MemoryPlan {
    /// Execution order the lifetimes refer to.
    pub order: Vec<NodeIndex>,
    pub locs: HashMap<NodeIndex, TensorLoc>,
    pub buffers: Vec<Buffer>,
    pub arena_floats: usize,
    /// Every op output in its own buffer, nothing reused.
    pub naive_floats: usize,
    pub in_place: usize,
}

fn align(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

/// Where a tensor sits relative to its root (a buffer or an input).
#[derive(Clone, Copy, Debug)]
enum Root {
    Buffer(usize),
    Input(usize),
}

#[derive(Clone, Copy, Debug)]
struct Rel {
    root: Root,
    offset: usize,
    batch_stride: usize,
}

fn is_view(op: &Op) -> bool {
    op.memory() == Memory::View
}

fn is_elementwise(op: &Op) -> bool {
    op.memory() == Memory::Elementwise
}

/// Plan where every tensor of `graph` lives. Fails only on a graph that
/// does not validate (a cycle).
pub fn plan(graph: &Graph) -> Result<MemoryPlan, GraphError> {
    let order = graph.topo_order()?;
    let pos: HashMap<NodeIndex, usize> = order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    let end = order.len();
    let last_use: HashMap<NodeIndex, usize> = order
        .iter()
        .map(|&n| {
            let users = graph
                .users(n)
                .into_iter()
                .map(|u| pos[&u])
                .max()
                .unwrap_or(pos[&n]);
            let out = if graph.outputs.contains(&n) {
                end
            } else {
                users
            };
            (n, out)
        })
        .collect();
    let item = |n: NodeIndex| -> usize { graph.g[n].shape.0[1..].iter().product() };
    let batch = |n: NodeIndex| graph.g[n].shape.0[0];

    let mut rel: HashMap<NodeIndex, Rel> = HashMap::new();
    let mut buffers: Vec<Buffer> = Vec::new();
    let fresh = |n: NodeIndex, buffers: &mut Vec<Buffer>| -> Rel {
        buffers.push(Buffer {
            offset: 0,
            size: align(batch(n) * item(n)),
            first: 0,
            last: 0,
            members: vec![n],
        });
        Rel {
            root: Root::Buffer(buffers.len() - 1),
            offset: 0,
            batch_stride: item(n),
        }
    };

    // Concats and the producers placed in them, consumers first.
    for &n in order.iter().rev() {
        let node = &graph.g[n];
        if let Some(slot) = node.write_into {
            let Some(&c) = rel.get(&slot.concat) else {
                continue;
            };
            let hw: usize = node.shape.0[2..].iter().product();
            let r = Rel {
                offset: c.offset + slot.channel_offset * hw,
                ..c
            };
            if let Root::Buffer(b) = r.root {
                buffers[b].members.push(n);
            }
            rel.insert(n, r);
        } else if matches!(node.op(), Some(Op::Concat)) {
            let r = fresh(n, &mut buffers);
            rel.insert(n, r);
        }
    }
    let mut in_place = 0;
    for &n in &order {
        if rel.contains_key(&n) {
            continue;
        }
        let node = &graph.g[n];
        let r = match &node.kind {
            NodeKind::Input { index } => Rel {
                root: Root::Input(*index),
                offset: 0,
                batch_stride: item(n),
            },
            NodeKind::Op(op) => {
                let operand = graph.operands(n).first().copied();
                let src = operand.and_then(|o| rel.get(&o).copied());
                match (op, src) {
                    (Op::Slice { start, .. }, Some(s)) => {
                        let hw: usize = node.shape.0[2..].iter().product();
                        Rel {
                            offset: s.offset + start * hw,
                            ..s
                        }
                    }
                    (op, Some(s)) if is_view(op) => s,
                    (
                        op,
                        Some(
                            s @ Rel {
                                root: Root::Buffer(b),
                                ..
                            },
                        ),
                    ) if is_elementwise(op) => {
                        // In place only if nothing reads the operand's
                        // buffer after this node.
                        let busy = buffers[b].members.iter().any(|m| last_use[m] > pos[&n]);
                        if busy {
                            fresh(n, &mut buffers)
                        } else {
                            in_place += 1;
                            s
                        }
                    }
                    _ => {
                        let ctx = Liveness {
                            rel: &rel,
                            buffers: &buffers,
                            last_use: &last_use,
                            pos: &pos,
                        };
                        match overwritable_residual(graph, n, &ctx) {
                            Some(s) => {
                                in_place += 1;
                                s
                            }
                            None => fresh(n, &mut buffers),
                        }
                    }
                }
            }
        };
        if let Root::Buffer(b) = r.root {
            if !buffers[b].members.contains(&n) {
                buffers[b].members.push(n);
            }
        }
        rel.insert(n, r);
    }
    for b in &mut buffers {
        b.first = b.members.iter().map(|m| pos[m]).min().unwrap_or(0);
        b.last = b.members.iter().map(|m| last_use[m]).max().unwrap_or(0);
    }
    let arena_floats = assign_offsets(&mut buffers);
    let naive_floats = order
        .iter()
        .filter(|&&n| graph.op(n).is_some_and(|op| !is_view(op)))
        .map(|&n| align(batch(n) * item(n)))
        .sum();
    let locs = rel
        .into_iter()
        .map(|(n, r)| {
            let (input, base) = match r.root {
                Root::Input(i) => (Some(i), 0),
                Root::Buffer(b) => (None, buffers[b].offset),
            };
            (
                n,
                TensorLoc {
                    input,
                    offset: base + r.offset,
                    batch_stride: r.batch_stride,
                    item: item(n),
                },
            )
        })
        .collect();
    Ok(MemoryPlan {
        order,
        locs,
        buffers,
        arena_floats,
        naive_floats,
        in_place,
    })
}

/// What [`plan`] knows while placing node after node.
struct Liveness<'a> {
    rel: &'a HashMap<NodeIndex, Rel>,
    buffers: &'a [Buffer],
    last_use: &'a HashMap<NodeIndex, usize>,
    pos: &'a HashMap<NodeIndex, usize>,
}

/// The residual a conv or dense `n` may write its output over, if any.
///
/// Contract: the kernels read each residual element, then write the output
/// element at the same place, in the same task, once — which holds when the
/// reduction is never split into K blocks (a split stores partial sums
/// into the output before the last block adds the residual), so only when
/// it is at most [`single_pass_k`] long. The residual must be a
/// whole buffer of the output's shape and layout that nothing reads after
/// `n`, and that `n`'s main input does not share.
fn overwritable_residual(graph: &Graph, n: NodeIndex, live: &Liveness) -> Option<Rel> {
    let op = graph.op(n)?;
    if residual_inputs(op.epilogue()) == 0 {
        return None;
    }
    let (reduction, strides) = if let Op::Conv(c) = op {
        let k = c.window.kernel;
        (
            c.in_channels / c.groups.max(1) * k[0] * k[1],
            Some(c.window.stride),
        )
    } else if let Op::Dense(d) = op {
        (d.in_features, None)
    } else {
        return None;
    };
    if reduction > single_pass_k(strides) {
        return None;
    }
    let operands = graph.operands(n);
    let (input, residuals) = operands.split_first()?;
    let input_root = live.rel.get(input).map(|r| r.root);
    let shape = &graph.g[n].shape;
    let item: usize = shape.0[1..].iter().product();
    residuals.iter().find_map(|r| {
        let rel = *live.rel.get(r)?;
        let Root::Buffer(b) = rel.root else {
            return None;
        };
        let whole = rel.offset == 0
            && rel.batch_stride == item
            && graph.g[*r].shape == *shape
            && live.buffers[b].size == align(shape.0[0] * item);
        let shared = matches!(input_root, Some(Root::Buffer(i)) if i == b);
        let busy = live.buffers[b]
            .members
            .iter()
            .any(|m| live.last_use[m] > live.pos[&n]);
        (whole && !shared && !busy).then_some(rel)
    })
}

/// Greedy by size: each buffer at the lowest aligned offset that overlaps
/// no already-placed buffer alive at the same time. Returns the arena size.
fn assign_offsets(buffers: &mut [Buffer]) -> usize {
    let mut by_size: Vec<usize> = (0..buffers.len()).collect();
    by_size.sort_by_key(|&i| (std::cmp::Reverse(buffers[i].size), i));
    let mut placed: Vec<usize> = Vec::new();
    let mut arena = 0;
    for i in by_size {
        let (first, last, size) = (buffers[i].first, buffers[i].last, buffers[i].size);
        let mut busy: Vec<(usize, usize)> = placed
            .iter()
            .map(|&j| &buffers[j])
            .filter(|b| b.first <= last && first <= b.last)
            .map(|b| (b.offset, b.offset + b.size))
            .collect();
        busy.sort_unstable();
        let mut offset = 0;
        for (start, stop) in busy {
            if offset + size <= start {
                break;
            }
            offset = offset.max(align(stop));
        }
        buffers[i].offset = offset;
        arena = arena.max(offset + size);
        placed.push(i);
    }
    arena
}

impl MemoryPlan {
    /// Pairs of buffers that are alive together and overlap in the arena
    /// (always empty for a correct plan).
    pub fn conflicts(&self) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for (i, a) in self.buffers.iter().enumerate() {
            for (j, b) in self.buffers.iter().enumerate().skip(i + 1) {
                let live_together = a.first <= b.last && b.first <= a.last;
                let overlap = a.offset < b.offset + b.size && b.offset < a.offset + a.size;
                if live_together && overlap && a.size > 0 && b.size > 0 {
                    out.push((i, j));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passes::testing::graph;

    #[test]
    fn reuses_dead_buffers_and_runs_relu_in_place() {
        let (g, _) = graph("model m(x: [N, 4, 8, 8]) {\n x -> [conv(4, 3, pad: 1), relu, conv(4, 3, pad: 1), relu, conv(4, 3, pad: 1)] as s\n}");
        let plan = plan(&g).unwrap();
        assert!(plan.conflicts().is_empty());
        assert_eq!(plan.in_place, 2);
        // Three conv outputs of 2·4·8·8 floats, but at most two live at once.
        assert_eq!(plan.naive_floats, 5 * 512);
        assert_eq!(plan.arena_floats, 2 * 512);
    }

    /// Plan `src` after epilogue fusion; for its conv with a fused add,
    /// whether the output was placed over the residual.
    fn overwrites_residual(src: &str) -> bool {
        let (mut g, mut w) = graph(src);
        crate::passes::fuse_epilogue::run(&mut g, &mut w).unwrap();
        let plan = plan(&g).unwrap();
        assert!(plan.conflicts().is_empty());
        let conv =
            g.g.node_indices()
                .find(|&n| matches!(g.op(n), Some(Op::Conv(c)) if residual_inputs(&c.epilogue) > 0))
                .unwrap();
        let residual = g.operands(conv)[1];
        plan.locs[&conv] == plan.locs[&residual]
    }

    #[test]
    fn a_dead_residual_is_overwritten_by_the_conv_adding_it() {
        // The residual `r` dies at the add: overwritten (and only then).
        // The add fuses into its last operand, the 3×3 conv.
        let body = "r = x -> conv(8, 1)\n h = x -> conv(8, 3, pad: 1)";
        let src =
            |tail: &str, c: usize| format!("model m(x: [N, {c}, 6, 6]) {{\n {body}\n {tail}\n}}");
        assert!(overwrites_residual(&src(
            "add(r, h -> conv(8, 3, pad: 1)) -> relu",
            8
        )));
        // Still read afterwards.
        assert!(!overwrites_residual(&src(
            "y = add(r, h -> conv(8, 3, pad: 1))\n concat(y, r)",
            8
        )));
        // The conv's own input: its other tasks still read it.
        assert!(!overwrites_residual(&src("add(r, r -> conv(8, 1))", 8)));
        // A reduction longer than one K block (160·3·3 > 1152).
        let long = "model m(x: [N, 8, 6, 6]) {\n r = x -> conv(32, 1)\n h = x -> conv(160, 1)\n add(r, h -> conv(32, 3, pad: 1))\n}";
        assert!(!overwrites_residual(long));
    }

    #[test]
    fn conflicts_detects_overlap() {
        let (g, _) = graph(
            "model m(x: [N, 2, 4, 4]) {\n a = x -> conv(2, 1)\n b = x -> conv(2, 1)\n add(a, b)\n}",
        );
        let mut plan = plan(&g).unwrap();
        assert!(plan.conflicts().is_empty());
        // Force two simultaneously live buffers onto one offset.
        let offsets: Vec<usize> = plan.buffers.iter().map(|b| b.offset).collect();
        let (i, j) = (0..plan.buffers.len())
            .flat_map(|i| (0..plan.buffers.len()).map(move |j| (i, j)))
            .find(|&(i, j)| {
                i < j
                    && plan.buffers[i].first <= plan.buffers[j].last
                    && plan.buffers[j].first <= plan.buffers[i].last
            })
            .unwrap();
        plan.buffers[j].offset = offsets[i];
        assert!(!plan.conflicts().is_empty());
    }
}
