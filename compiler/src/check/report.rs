//! What `netc check` prints: a per-layer table, JSON, or the parameter list.

use super::network::*;
use crate::ir::op::ParamKind;
use crate::source::{Located, SourceMap};
use serde::Serialize;

#[derive(Serialize)]
pub struct LayerRow {
    pub name: String,
    pub op: String,
    pub shape: String,
    pub params: u64,
    pub macs: u64,
    pub receptive_field: Option<ReceptiveField>,
    /// Where the layer was instantiated (see [`SourceMap::call_path`]).
    pub source: String,
    pub call_site: Vec<Located>,
}

#[derive(Serialize)]
pub struct Summary {
    pub model: String,
    pub batch: usize,
    /// Learnable parameters (batch-norm running statistics excluded).
    pub params: u64,
    /// Batch-norm running statistics.
    pub buffers: u64,
    pub macs: u64,
    pub weight_bytes: u64,
    pub activation_bytes: u64,
    pub inputs: Vec<(String, String)>,
    pub outputs: Vec<String>,
    pub layers: Vec<LayerRow>,
}

pub fn summary(net: &Network, sources: &SourceMap) -> Summary {
    let layers = net
        .layers
        .iter()
        .map(|l| LayerRow {
            name: l.name.clone(),
            op: l.op.describe(),
            shape: net.shape(l.output).to_string(),
            params: l
                .params
                .iter()
                .filter(|p| p.spec.kind == ParamKind::Learnable)
                .map(|p| p.spec.shape.numel() as u64)
                .sum(),
            macs: l.op.macs(net.shape(l.output)),
            receptive_field: net.tensors[l.output].rf,
            source: sources.call_path(&l.call_path),
            call_site: sources.locate(&l.call_path),
        })
        .collect();
    let params = net.learnable_params();
    let buffers = net.buffer_params();
    Summary {
        model: net.name.clone(),
        batch: net.batch,
        params,
        buffers,
        macs: net.macs(),
        weight_bytes: 4 * (params + buffers),
        activation_bytes: net.activation_bytes(),
        inputs: net
            .inputs
            .iter()
            .map(|i| (i.name.clone(), net.shape(i.tensor).to_string()))
            .collect(),
        outputs: net
            .outputs
            .iter()
            .map(|&t| net.shape(t).to_string())
            .collect(),
        layers,
    }
}

/// `1234567` → `1,234,567`.
pub fn grouped(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn rf_text(rf: Option<ReceptiveField>) -> String {
    match rf {
        None => "-".into(),
        Some(r) if r.size[0] == r.size[1] && r.jump[0] == r.jump[1] => {
            format!("{} / {}", r.size[0], r.jump[0])
        }
        Some(r) => format!("{}x{} / {}x{}", r.size[0], r.size[1], r.jump[0], r.jump[1]),
    }
}

pub fn table(s: &Summary) -> String {
    let header = [
        "layer",
        "op",
        "output",
        "params",
        "MACs",
        "RF / jump",
        "source",
    ];
    let rows: Vec<[String; 7]> = s
        .layers
        .iter()
        .map(|l| {
            [
                l.name.clone(),
                l.op.clone(),
                l.shape.clone(),
                if l.params == 0 {
                    "-".into()
                } else {
                    grouped(l.params)
                },
                if l.macs == 0 {
                    "-".into()
                } else {
                    grouped(l.macs)
                },
                rf_text(l.receptive_field),
                l.source.clone(),
            ]
        })
        .collect();
    let mut width = header.map(|h| h.chars().count());
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut out = String::new();
        for (i, (c, w)) in cells.iter().zip(width).enumerate() {
            let pad = w - c.chars().count();
            // Numbers right-aligned, text left-aligned.
            if i == 3 || i == 4 {
                out += &" ".repeat(pad);
                out += c;
            } else {
                out += c;
                out += &" ".repeat(pad);
            }
            out += "  ";
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = format!("model {} (batch {})\n", s.model, s.batch);
    out += &line(&header.map(String::from));
    out += &line(&width.map(|w| "-".repeat(w)));
    for r in &rows {
        out += &line(r);
    }
    out += "\n";
    out += &format!(
        "params:      {} learnable, {} buffers\n",
        grouped(s.params),
        grouped(s.buffers)
    );
    out += &format!(
        "MACs:        {} ({:.2} G)\n",
        grouped(s.macs),
        s.macs as f64 / 1e9
    );
    out += &format!(
        "weights:     {} ({})\n",
        grouped(s.weight_bytes),
        crate::units::human_bytes(s.weight_bytes)
    );
    out += &format!(
        "activations: {} ({}, all intermediates, no reuse)\n",
        grouped(s.activation_bytes),
        crate::units::human_bytes(s.activation_bytes)
    );
    out
}

/// One line per parameter tensor: `name<TAB>d0xd1x…`, in definition order.
pub fn params(net: &Network) -> String {
    net.params()
        .map(|p| format!("{}\t{}\n", p.name, p.spec.shape))
        .collect()
}
