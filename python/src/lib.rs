//! `netc._netc`: the compiler and runtime behind the `netc` Python package.
//!
//! The Python side (`python/netc/__init__.py`) owns the user-facing API —
//! `netc.load`, `Model`, `NetError`, pickling — and calls these functions.
//! Everything goes through `netc::pipeline::Pipeline`, as the CLI does, so
//! a model compiled here is the same code `netc run` runs.

use netc::bench::{self, ModelInfo, Settings};
use netc::check::{self as checker, report, CheckOptions};
use netc::codegen::jit::JitModel;
use netc::onnx::{self, Batch};
use netc::pipeline::{Options, Pipeline, PipelineError};
use netc::target::Target;
use netc::weights::Weights;
use numpy::{PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// An error for Python: `netc.NetError(rendered, file, line, column,
/// message)`, built by the package so it is the class users catch.
fn net_error(
    py: Python<'_>,
    rendered: String,
    location: Option<(String, usize, usize)>,
    message: String,
) -> PyErr {
    let (file, line, column) = match location {
        Some((f, l, c)) => (Some(f), Some(l), Some(c)),
        None => (None, None, None),
    };
    let made = py
        .import("netc")
        .and_then(|m| m.getattr("NetError"))
        .and_then(|cls| cls.call1((rendered.clone(), file, line, column, message)));
    match made {
        Ok(e) => PyErr::from_value(e),
        Err(e) => e,
    }
}

/// Any error of the pipeline, as `NetError` (located for check errors).
fn pipeline_error(py: Python<'_>, e: PipelineError) -> PyErr {
    match e {
        PipelineError::Check(r) => net_error(py, r.rendered.clone(), r.location.clone(), r.message),
        other => {
            let text = other.to_string();
            net_error(py, text.clone(), None, text)
        }
    }
}

fn plain_error(py: Python<'_>, e: impl std::fmt::Display) -> PyErr {
    let text = e.to_string();
    net_error(py, text.clone(), None, text)
}

fn pipeline(
    batch: usize,
    size: Option<(usize, usize)>,
    threads: usize,
    target: &str,
) -> Result<Pipeline, String> {
    let target: Target = target.parse().map_err(|e| format!("{e}"))?;
    Ok(Pipeline::new(Options {
        batch,
        size: size.map(|(h, w)| [h, w]),
        target,
        threads,
        ..Options::default()
    }))
}

/// The model's weights: a file, or random from a seed.
fn weights(
    graph: &netc::ir::Graph,
    file: Option<&Path>,
    seed: Option<u64>,
) -> Result<Weights, String> {
    match file {
        Some(path) => {
            let loaded = netc_runtime::weights::load(path).map_err(|e| e.to_string())?;
            Weights::bind(graph, loaded).map_err(|e| format!("{}: {e}", path.display()))
        }
        None => Ok(Weights::random(graph, seed.unwrap_or(0))),
    }
}

/// A compiled model. Runs hold a lock, so one model serves one call at a
/// time; the GIL is released while it runs.
#[pyclass(module = "netc._netc", frozen)]
struct Compiled {
    model: Mutex<JitModel>,
    name: String,
    inputs: Vec<(String, Vec<usize>)>,
    outputs: Vec<(String, Vec<usize>)>,
    info: BenchInfo,
}

/// What `bench` needs besides the compiled code.
struct BenchInfo {
    sources: netc::source::SourceMap,
    macs: u64,
    weights_bytes: u64,
    batch: usize,
}

#[pymethods]
impl Compiled {
    /// The model's name (from its `model` line).
    #[getter]
    fn name(&self) -> String {
        self.name.clone()
    }

    /// `[(name, shape), ...]` of the inputs, in order.
    #[getter]
    fn inputs(&self) -> Vec<(String, Vec<usize>)> {
        self.inputs.clone()
    }

    /// `[(name, shape), ...]` of the outputs, in order.
    #[getter]
    fn outputs(&self) -> Vec<(String, Vec<usize>)> {
        self.outputs.clone()
    }

    /// Run on C-contiguous float32 arrays of the input shapes (the caller
    /// checks them); returns one new array per output. The inputs are read
    /// in place; the GIL is released during the run.
    fn run<'py>(
        &self,
        py: Python<'py>,
        inputs: Vec<PyReadonlyArrayDyn<'py, f32>>,
    ) -> PyResult<Vec<Bound<'py, PyArrayDyn<f32>>>> {
        if inputs.len() != self.inputs.len() {
            return Err(PyValueError::new_err(format!(
                "{} takes {} input(s), {} given",
                self.name,
                self.inputs.len(),
                inputs.len()
            )));
        }
        let mut slices: Vec<&[f32]> = Vec::with_capacity(inputs.len());
        for (x, (name, shape)) in inputs.iter().zip(&self.inputs) {
            if x.shape() != shape.as_slice() {
                return Err(PyValueError::new_err(format!(
                    "input `{name}` must have shape {shape:?}, found {:?}",
                    x.shape()
                )));
            }
            slices.push(x.as_slice().map_err(|_| {
                PyValueError::new_err(format!("input `{name}` is not C-contiguous"))
            })?);
        }
        let mut outs: Vec<Vec<f32>> = self
            .outputs
            .iter()
            .map(|(_, s)| vec![0.0; s.iter().product()])
            .collect();
        let result = py.detach(|| {
            let mut model = self
                .model
                .lock()
                .map_err(|_| "the model's lock is poisoned".to_string())?;
            let mut views: Vec<&mut [f32]> = outs.iter_mut().map(|o| o.as_mut_slice()).collect();
            model
                .run_slices(&slices, &mut views)
                .map_err(|e| e.to_string())
        });
        result.map_err(PyRuntimeError::new_err)?;
        outs.into_iter()
            .zip(&self.outputs)
            .map(|(data, (_, shape))| numpy::PyArray1::from_vec(py, data).reshape(shape.as_slice()))
            .collect()
    }

    /// Benchmark (the model must have been compiled with `profile=True`):
    /// the JSON `netc bench --format json` prints.
    fn bench(&self, py: Python<'_>, iters: usize, warmup: usize) -> PyResult<String> {
        if iters == 0 {
            return Err(PyValueError::new_err("iters must be at least 1"));
        }
        let info = ModelInfo {
            name: self.name.clone(),
            sources: &self.info.sources,
            macs: self.info.macs,
            weights_bytes: self.info.weights_bytes,
        };
        let settings = Settings {
            batch: self.info.batch,
            iters,
            warmup,
        };
        let report = py.detach(|| {
            let mut model = self
                .model
                .lock()
                .map_err(|_| "the model's lock is poisoned".to_string())?;
            bench::measure(&info, &mut model, settings).map_err(|e| e.to_string())
        });
        let (report, _) = report.map_err(|e| plain_error(py, e))?;
        serde_json::to_string(&report).map_err(|e| plain_error(py, e))
    }
}

/// Check, optimise and JIT-compile a model file.
#[pyfunction]
#[pyo3(signature = (path, weights=None, random_weights=None, size=None, batch=1, threads=0, target="native", profile=false))]
#[allow(clippy::too_many_arguments)]
fn compile(
    py: Python<'_>,
    path: PathBuf,
    weights: Option<PathBuf>,
    random_weights: Option<u64>,
    size: Option<(usize, usize)>,
    batch: usize,
    threads: usize,
    target: &str,
    profile: bool,
) -> PyResult<Compiled> {
    let mut pipe = pipeline(batch, size, threads, target).map_err(|e| plain_error(py, e))?;
    pipe.options.profile = profile;
    let checked = pipe.check_file(&path).map_err(|e| pipeline_error(py, e))?;
    let graph = checked.graph;
    let names = graph.output_names();
    let input_names: Vec<String> = checked
        .network
        .inputs
        .iter()
        .map(|i| i.name.clone())
        .collect();
    let info = BenchInfo {
        macs: graph.macs(),
        weights_bytes: 4 * (checked.network.learnable_params() + checked.network.buffer_params()),
        sources: checked.program.sources,
        batch,
    };
    let w = self::weights(&graph, weights.as_deref(), random_weights)
        .map_err(|e| plain_error(py, e))?;
    let name = graph.name.clone();
    let model = py
        .detach(|| pipe.optimize(graph, w).and_then(|p| pipe.jit(p)))
        .map_err(|e| pipeline_error(py, e))?;
    let lowered = model.lowered();
    let inputs = input_names
        .into_iter()
        .zip(lowered.input_shapes.iter().cloned())
        .collect();
    let outputs = names
        .into_iter()
        .zip(lowered.output_shapes.iter().cloned())
        .collect();
    Ok(Compiled {
        model: Mutex::new(model),
        name,
        inputs,
        outputs,
        info,
    })
}

/// `netc check --format json` of a model file, as a JSON string.
#[pyfunction]
#[pyo3(signature = (path, batch=1, size=None))]
fn check(
    py: Python<'_>,
    path: PathBuf,
    batch: usize,
    size: Option<(usize, usize)>,
) -> PyResult<String> {
    let options = CheckOptions {
        batch,
        size: size.map(|(h, w)| [h, w]),
        ..CheckOptions::default()
    };
    let (program, net) = checker::check_file(&path, options)
        .map_err(|r| net_error(py, r.rendered.clone(), r.location.clone(), r.message))?;
    serde_json::to_string(&report::summary(&net, &program.sources)).map_err(|e| plain_error(py, e))
}

/// Every source file a model reads (the file and its imports), as
/// `[(path, text), ...]`, the model file first: what a pickled model
/// carries.
#[pyfunction]
fn sources(py: Python<'_>, path: PathBuf) -> PyResult<Vec<(String, String)>> {
    let program = checker::load(&path).map_err(|(sources, e)| {
        let r = checker::Rejected::new(&sources, &e);
        net_error(py, r.rendered.clone(), r.location.clone(), r.message)
    })?;
    Ok(program
        .sources
        .files()
        .map(|(_, f)| (f.path.display().to_string(), f.text.clone()))
        .collect())
}

/// Write a model and its weights as ONNX (`netc export`).
#[pyfunction]
#[pyo3(signature = (path, out, weights=None, random_weights=None, batch=None, size=None))]
fn export_onnx(
    py: Python<'_>,
    path: PathBuf,
    out: PathBuf,
    weights: Option<PathBuf>,
    random_weights: Option<u64>,
    batch: Option<usize>,
    size: Option<(usize, usize)>,
) -> PyResult<()> {
    let pipe = pipeline(batch.unwrap_or(1), size, 1, "native").map_err(|e| plain_error(py, e))?;
    let graph = pipe
        .check_file(&path)
        .map_err(|e| pipeline_error(py, e))?
        .graph;
    let w = self::weights(&graph, weights.as_deref(), random_weights)
        .map_err(|e| plain_error(py, e))?;
    let mode = if batch.is_some() {
        Batch::Fixed
    } else {
        Batch::Symbolic
    };
    let model = onnx::export(&graph, &w, mode).map_err(|e| plain_error(py, e))?;
    onnx::write(&out, &model).map_err(|e| plain_error(py, e))
}

#[pymodule]
fn _netc(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Compiled>()?;
    m.add_function(wrap_pyfunction!(compile, m)?)?;
    m.add_function(wrap_pyfunction!(check, m)?)?;
    m.add_function(wrap_pyfunction!(sources, m)?)?;
    m.add_function(wrap_pyfunction!(export_onnx, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
