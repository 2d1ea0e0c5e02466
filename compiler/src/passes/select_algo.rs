//! Convolution algorithm selection.
//!
//! A stride-1, unpadded, ungrouped 1×1 conv is a plain matrix multiply of
//! the weight (out×in) with the input viewed as in×(H·W): no im2col, no
//! window arithmetic. Everything else is marked for direct convolution.
//! Counts only the 1×1 convs lowered to matrix multiplies.

use super::PassError;
use crate::ir::op::{ConvAlgo, Op};
use crate::ir::Graph;
use crate::weights::Weights;

pub fn run(graph: &mut Graph, _: &mut Weights) -> Result<usize, PassError> {
    let mut pointwise = 0;
    let nodes: Vec<_> = graph.g.node_indices().collect();
    for n in nodes {
        if let Some(Op::Conv(c)) = graph.op_mut(n) {
            c.algo = if c.is_pointwise() {
                pointwise += 1;
                ConvAlgo::Pointwise
            } else {
                ConvAlgo::Direct
            };
        }
    }
    Ok(pointwise)
}

#[cfg(test)]
mod tests {
    use super::super::testing::graph;
    use super::*;

    #[test]
    fn only_unpadded_stride_1_1x1_is_pointwise() {
        let (mut g, mut w) = graph("model m(x: [N, 2, 5, 5]) {\n x -> [conv(2, 1), conv(2, 1, stride: 2), conv(2, 1, pad: 1), conv(2, 3)] as s\n}");
        assert_eq!(run(&mut g, &mut w).unwrap(), 1);
    }
}
