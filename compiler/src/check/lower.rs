//! Lowering: a checked [`Network`] becomes the graph IR, one node per
//! layer and one edge per tensor a layer reads.

use super::network::Network;
use crate::ir::graph::{DType, Edge, Graph, Node, NodeKind};
use petgraph::stable_graph::{NodeIndex, StableDiGraph};

impl Graph {
    /// Lower a checked network (which is valid by construction; callers
    /// still [`Graph::validate`] it).
    pub fn from_network(net: &Network) -> Graph {
        let mut g = StableDiGraph::new();
        let mut producer: Vec<Option<NodeIndex>> = vec![None; net.tensors.len()];
        let mut inputs = Vec::new();
        for (index, input) in net.inputs.iter().enumerate() {
            let n = g.add_node(Node {
                name: input.name.clone(),
                kind: NodeKind::Input { index },
                shape: net.shape(input.tensor).clone(),
                params: Vec::new(),
                origin: Vec::new(),
                write_into: None,
            });
            producer[input.tensor] = Some(n);
            inputs.push(n);
        }
        for layer in &net.layers {
            let n = g.add_node(Node {
                name: layer.name.clone(),
                kind: NodeKind::Op(layer.op.clone()),
                shape: net.shape(layer.output).clone(),
                params: layer.params.clone(),
                origin: vec![layer.call_path.clone()],
                write_into: None,
            });
            for (port, &t) in layer.inputs.iter().enumerate() {
                // The checker creates tensors before their consumers, so
                // every input has a producer.
                if let Some(src) = producer[t] {
                    g.add_edge(
                        src,
                        n,
                        Edge {
                            shape: net.shape(t).clone(),
                            dtype: DType::F32,
                            port,
                        },
                    );
                }
            }
            producer[layer.output] = Some(n);
        }
        let outputs = net.outputs.iter().filter_map(|&t| producer[t]).collect();
        Graph {
            name: net.name.clone(),
            batch: net.batch,
            g,
            inputs,
            outputs,
        }
    }
}
