//! The compiler as one chain: check → lower → optimise → select kernels →
//! plan memory → compile.
//!
//! Every front end (the CLI, the tests, the criterion benches, the fuzz
//! targets) goes through [`Pipeline`], so the order of the stages and the
//! fact that memory planning always runs live in one place. The stages
//! stay separately callable because callers look between them: `netc
//! compile --emit passes` prints the graph before and after the passes,
//! `netc bench` counts the unoptimised MACs, the differential tests run
//! the reference interpreter on the planned graph.

use crate::check::{self, CheckOptions, Limits, Network, Program};
use crate::codegen::{self, jit::JitModel, CodegenError, Lowered};
use crate::interp;
use crate::ir::graph::GraphError;
use crate::ir::Graph;
use crate::passes::{self, PassError, Report};
use crate::plan::{self, MemoryPlan};
use crate::select;
use crate::target::Target;
use crate::weights::Weights;
use netc_runtime::Tensor;
use std::path::Path;

/// Anything that stops a checked model from compiling.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A check error, located and rendered with its source line.
    #[error("{0}")]
    Check(Box<check::Rejected>),
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error(transparent)]
    Pass(#[from] PassError),
    #[error(transparent)]
    Codegen(#[from] CodegenError),
}

/// How to compile: one value for the whole chain.
#[derive(Clone, Debug)]
pub struct Options {
    pub batch: usize,
    /// Binds the inputs' open height and width (`H: 520`, `--size`).
    pub size: Option<[usize; 2]>,
    pub limits: Limits,
    pub passes: passes::Options,
    /// The instruction set kernels are chosen for (`--target`).
    pub target: Target,
    /// Threads for the JIT's kernels (0: one per core).
    pub threads: usize,
    /// Emit a profiling mark after every op (`netc bench`).
    pub profile: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            batch: 1,
            size: None,
            limits: Limits::default(),
            passes: passes::Options::default(),
            target: Target::native(),
            threads: 0,
            profile: false,
        }
    }
}

/// A checked model lowered to the graph IR, with the parsed sources.
pub struct Checked {
    pub program: Program,
    pub network: Network,
    pub graph: Graph,
}

/// An optimised graph with the memory plan made for it and the weights it
/// reads: what every back end (JIT, object file, planned interpreter) takes.
#[derive(Clone)]
pub struct Planned {
    pub graph: Graph,
    pub weights: Weights,
    pub plan: MemoryPlan,
    pub report: Report,
}

/// The chain of stages under one set of [`Options`].
#[derive(Clone, Debug, Default)]
pub struct Pipeline {
    pub options: Options,
}

impl Pipeline {
    pub fn new(options: Options) -> Self {
        Pipeline { options }
    }

    fn check_options(&self) -> CheckOptions {
        CheckOptions {
            batch: self.options.batch,
            size: self.options.size,
            limits: self.options.limits,
        }
    }

    /// Parse and check a model file and its imports, then lower it to a
    /// validated graph.
    pub fn check_file(&self, path: &Path) -> Result<Checked, PipelineError> {
        let (program, network) = check::check_file(path, self.check_options())
            .map_err(|e| PipelineError::Check(Box::new(e)))?;
        let graph = Graph::from_network(&network);
        graph.validate()?;
        Ok(Checked {
            program,
            network,
            graph,
        })
    }

    /// Check model source held in memory (tests, benches) and lower it.
    pub fn check_source(&self, name: &str, text: &str) -> Result<Graph, PipelineError> {
        let net =
            check::check_source(name, text, self.check_options()).map_err(|(sources, d)| {
                PipelineError::Check(Box::new(check::Rejected::new(&sources, &d.into())))
            })?;
        let graph = Graph::from_network(&net);
        graph.validate()?;
        Ok(graph)
    }

    /// Run the enabled passes, then (always) choose every kernel for the
    /// target and plan memory.
    pub fn optimize(&self, graph: Graph, weights: Weights) -> Result<Planned, PipelineError> {
        let (mut graph, mut weights) = (graph, weights);
        let mut report = passes::optimize(&mut graph, &mut weights, &self.options.passes)?;
        select::run(&mut graph, &self.options.target);
        let plan = plan::plan(&graph)?;
        report.arena_bytes = Some(4 * plan.arena_floats as u64);
        report.naive_bytes = Some(4 * plan.naive_floats as u64);
        Ok(Planned {
            graph,
            weights,
            plan,
            report,
        })
    }

    /// Pack the weights and build every kernel's descriptor.
    pub fn lower(&self, planned: Planned) -> Result<Lowered, PipelineError> {
        let mut lowered = codegen::lower(planned.graph, planned.plan, &planned.weights)?;
        lowered.profile = self.options.profile;
        Ok(lowered)
    }

    /// Compile to native code in memory.
    pub fn jit(&self, planned: Planned) -> Result<JitModel, PipelineError> {
        self.jit_lowered(self.lower(planned)?)
    }

    /// Generate native code for an already lowered model (`netc bench`
    /// times lowering and code generation apart).
    pub fn jit_lowered(&self, lowered: Lowered) -> Result<JitModel, PipelineError> {
        Ok(JitModel::compile(
            lowered,
            &self.options.target,
            self.options.threads,
        )?)
    }

    /// Write an object file, its C header and its packed weights; returns
    /// the lowered model (for its sizes) and the C name stem.
    pub fn object(&self, planned: Planned, out: &Path) -> Result<(Lowered, String), PipelineError> {
        let lowered = self.lower(planned)?;
        let stem = codegen::object::write(&lowered, &self.options.target, out)?;
        Ok((lowered, stem))
    }
}

impl Planned {
    /// Run the reference kernels inside the planned arena (`--backend
    /// planned`): a check of the plan, not a fast path.
    pub fn interpret(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, interp::RunError> {
        interp::planned::run(&self.graph, &self.plan, &self.weights, inputs)
    }
}
