//! `netc bench --train`: the time of one training step, split per layer
//! type into forward, backward and the optimiser's update, and the step's
//! memory against inference's.

use super::{cpu_name, layer_type, median};
use crate::ir::graph::NodeKind;
use crate::train::exec::Phase;
use crate::train::optim;
use crate::train::real::Buf;
use crate::train::Executor;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Instant;

/// One layer type's median milliseconds per step.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TypeTimes {
    pub forward_ms: f64,
    pub backward_ms: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct TrainReport {
    pub model: String,
    pub cpu: String,
    pub threads: usize,
    pub batch: usize,
    pub iters: usize,
    pub optimizer: String,
    /// Median milliseconds of a whole step (forward, loss, backward,
    /// update).
    pub step_ms: f64,
    pub images_per_s: f64,
    pub forward_ms: f64,
    pub backward_ms: f64,
    pub update_ms: f64,
    pub by_type: BTreeMap<String, TypeTimes>,
    /// Forward values and saved state backward reads (the plan's count).
    pub kept_bytes: u64,
    /// Largest activations + gradients held at once during a step, as
    /// measured.
    pub step_peak_bytes: u64,
    /// Parameters, their gradients and the optimiser's state.
    pub parameter_bytes: u64,
    /// The optimised inference model's activation arena at this batch.
    pub inference_arena_bytes: u64,
    pub learnable_params: u64,
}

/// Time `iters` training steps (after `warmup`) of `ex` on a fixed random
/// batch with Adam.
pub fn measure(
    ex: &mut Executor<f32>,
    batch: usize,
    iters: usize,
    warmup: usize,
    inference_arena_bytes: u64,
) -> Result<TrainReport, String> {
    let tg = &ex.tg;
    let shape = tg.graph.g[tg.graph.inputs[0]].shape.dims().to_vec();
    let numel: usize = shape.iter().product();
    let mut rng = netc_runtime::init::SplitMix64::new(1);
    let data: Vec<f32> = (0..numel).map(|_| rng.uniform() as f32).collect();
    let x = Buf::from_f32(&shape, &data);
    let labels: Vec<usize> = (0..batch).map(|i| i % tg.classes).collect();
    let cfg = optim::Config {
        kind: optim::Kind::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        },
        lr: 1e-4,
        weight_decay: 0.0,
        schedule: optim::Schedule::Constant,
        warmup: 0,
        clip: None,
    };
    let mut state = optim::State::default();
    let types: BTreeMap<_, String> = tg
        .order
        .iter()
        .filter_map(|&n| match &tg.graph.g[n].kind {
            NodeKind::Op(op) => Some((n, layer_type(op))),
            NodeKind::Input { .. } => None,
        })
        .collect();
    let (mut steps, mut fwd, mut bwd, mut upd) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut per_type: BTreeMap<String, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    let mut peak = 0;
    for i in 0..warmup + iters {
        ex.timings = Some(Vec::new());
        let t = Instant::now();
        let pass = ex
            .forward_backward(&x, &labels, i as u64)
            .map_err(|e| e.to_string())?;
        let u = Instant::now();
        state.step(&cfg, &mut ex.params, &pass.grads);
        let update = u.elapsed().as_secs_f64() * 1e3;
        let total = t.elapsed().as_secs_f64() * 1e3;
        peak = peak.max(pass.peak_bytes);
        if i < warmup {
            continue;
        }
        let mut sums: BTreeMap<&str, (f64, f64)> =
            types.values().map(|t| (t.as_str(), (0.0, 0.0))).collect();
        let (mut f, mut b) = (0.0, 0.0);
        for (n, phase, s) in ex.timings.take().unwrap_or_default() {
            let ms = s * 1e3;
            let Some(kind) = types.get(&n) else { continue };
            let e = sums.entry(kind.as_str()).or_default();
            match phase {
                Phase::Forward => {
                    e.0 += ms;
                    f += ms;
                }
                Phase::Backward => {
                    e.1 += ms;
                    b += ms;
                }
            }
        }
        for (kind, (f, b)) in sums {
            let e = per_type.entry(kind.to_string()).or_default();
            e.0.push(f);
            e.1.push(b);
        }
        steps.push(total);
        fwd.push(f);
        bwd.push(b);
        upd.push(update);
    }
    ex.timings = None;
    let step_ms = median(steps);
    let by_type = per_type
        .into_iter()
        .map(|(k, (f, b))| {
            (
                k,
                TypeTimes {
                    forward_ms: median(f),
                    backward_ms: median(b),
                },
            )
        })
        .filter(|(_, t)| t.forward_ms + t.backward_ms > 0.0)
        .collect();
    let param_floats: u64 = ex.params.iter().map(|p| p.data.len() as u64).sum();
    let learnable = ex.tg.learnable();
    Ok(TrainReport {
        model: ex.tg.graph.name.clone(),
        cpu: cpu_name(),
        threads: rayon::current_num_threads(),
        batch,
        iters,
        optimizer: "adam".into(),
        step_ms,
        images_per_s: batch as f64 / (step_ms / 1e3),
        forward_ms: median(fwd),
        backward_ms: median(bwd),
        update_ms: median(upd),
        by_type,
        kept_bytes: ex.tg.kept_bytes(),
        step_peak_bytes: peak,
        // Values, gradients and Adam's two moments of every learnable
        // tensor; buffers once.
        parameter_bytes: 4 * (param_floats + 3 * learnable),
        inference_arena_bytes,
        learnable_params: learnable,
    })
}

/// The report as a table for the terminal.
pub fn table(r: &TrainReport) -> String {
    use crate::units::human_bytes;
    let mut s = format!(
        "{}: training step, batch {}, {} threads, {} ({} iterations, Adam)\n\
         step {:.2} ms median ({:.0} images/s): forward {:.2} ms, backward {:.2} ms, update {:.2} ms\n\n",
        r.model, r.batch, r.threads, r.cpu, r.iters, r.step_ms, r.images_per_s, r.forward_ms, r.backward_ms, r.update_ms
    );
    let mut rows: Vec<(&String, &TypeTimes)> = r.by_type.iter().collect();
    rows.sort_by(|a, b| {
        (b.1.forward_ms + b.1.backward_ms).total_cmp(&(a.1.forward_ms + a.1.backward_ms))
    });
    s += &format!(
        "{:<16} {:>11} {:>12} {:>9} {:>7}\n",
        "type", "forward ms", "backward ms", "bwd/fwd", "share"
    );
    let total = (r.forward_ms + r.backward_ms).max(1e-9);
    for (kind, t) in rows {
        let ratio = if t.forward_ms > 0.0 {
            format!("{:.2}", t.backward_ms / t.forward_ms)
        } else {
            "—".into()
        };
        s += &format!(
            "{:<16} {:>11.3} {:>12.3} {:>9} {:>6.1}%\n",
            kind,
            t.forward_ms,
            t.backward_ms,
            ratio,
            100.0 * (t.forward_ms + t.backward_ms) / total
        );
    }
    s += &format!(
        "\nmemory: backward keeps {} of activations; a step peaks at {} of activations and \
         gradients (inference's arena at this batch: {}); parameters, gradients and Adam state {}\n",
        human_bytes(r.kept_bytes),
        human_bytes(r.step_peak_bytes),
        human_bytes(r.inference_arena_bytes),
        human_bytes(r.parameter_bytes),
    );
    s
}
