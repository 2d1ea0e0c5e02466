//! The in-memory back end: emit with `cranelift-jit`, run on a rayon pool.

use super::{emit, CodegenError, Lowered};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{default_libcall_names, Linkage};
use netc_runtime::Tensor;

type Forward = unsafe extern "C" fn(*const *const f32, *const *mut f32, *const f32, *mut f32);

/// The host's instruction set, with Cranelift optimising for speed.
pub(crate) fn host_isa(pic: bool) -> Result<cranelift_codegen::isa::OwnedTargetIsa, CodegenError> {
    let mut flags = settings::builder();
    let set = |f: &mut settings::Builder, k: &str, v: &str| {
        f.set(k, v).map_err(|e| CodegenError::Isa(e.to_string()))
    };
    set(&mut flags, "opt_level", "speed")?;
    set(&mut flags, "is_pic", if pic { "true" } else { "false" })?;
    let isa = cranelift_native::builder().map_err(|e| CodegenError::Isa(e.to_string()))?;
    isa.finish(settings::Flags::new(flags))
        .map_err(|e| CodegenError::Isa(e.to_string()))
}

/// A compiled model, ready to run.
pub struct JitModel {
    // Owns the executable memory `forward` points into.
    _module: JITModule,
    forward: Forward,
    lowered: Lowered,
    arena: Vec<f32>,
    pool: rayon::ThreadPool,
}

/// Floats of sentinel before and after the arena.
const GUARD: usize = 64;
/// A NaN with a payload no computation produces.
const SENTINEL: u32 = 0x7fc0_5eed;

#[derive(Debug, thiserror::Error)]
pub enum JitRunError {
    #[error("internal error: generated code wrote outside its arena (guard word {0} changed)")]
    OutOfBounds(usize),
    #[error("the model takes {expected} inputs, {found} given")]
    InputCount { expected: usize, found: usize },
    #[error("input {index} must have shape {expected:?}, found {found:?}")]
    InputShape {
        index: usize,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
}

impl JitModel {
    /// Generate native code for `lowered`; kernels run on `threads` threads
    /// (0: one per core).
    pub fn compile(lowered: Lowered, threads: usize) -> Result<JitModel, CodegenError> {
        let mut builder = JITBuilder::with_isa(host_isa(false)?, default_libcall_names());
        for (name, ptr) in netc_runtime::abi::symbols() {
            builder.symbol(name, ptr);
        }
        let mut module = JITModule::new(builder);
        let id = emit(&mut module, &lowered, "netc_forward", Linkage::Export)?;
        module.finalize_definitions()?;
        let code = module.get_finalized_function(id);
        // SAFETY: `code` is the function just defined with this signature.
        let forward: Forward = unsafe { std::mem::transmute::<*const u8, Forward>(code) };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|e| CodegenError::Isa(format!("thread pool: {e}")))?;
        // The arena sits between two guard regions checked after every run.
        let mut arena = vec![f32::from_bits(SENTINEL); lowered.arena_floats + 2 * GUARD];
        arena[GUARD..GUARD + lowered.arena_floats].fill(0.0);
        Ok(JitModel {
            _module: module,
            forward,
            lowered,
            arena,
            pool,
        })
    }

    pub fn lowered(&self) -> &Lowered {
        &self.lowered
    }

    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Run on `inputs` (shapes as compiled), returning every output.
    pub fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>, JitRunError> {
        let mut outputs: Vec<Tensor> = self
            .lowered
            .output_shapes
            .iter()
            .map(|s| Tensor::zeros(s.clone()))
            .collect();
        self.run_into(inputs, &mut outputs)?;
        Ok(outputs)
    }

    /// Run writing into preallocated outputs (no allocation: for benchmarks).
    pub fn run_into(
        &mut self,
        inputs: &[Tensor],
        outputs: &mut [Tensor],
    ) -> Result<(), JitRunError> {
        let expected = &self.lowered.input_shapes;
        if inputs.len() != expected.len() {
            return Err(JitRunError::InputCount {
                expected: expected.len(),
                found: inputs.len(),
            });
        }
        for (index, (x, shape)) in inputs.iter().zip(expected).enumerate() {
            if x.shape() != shape.as_slice() {
                return Err(JitRunError::InputShape {
                    index,
                    expected: shape.clone(),
                    found: x.shape().to_vec(),
                });
            }
        }
        let in_ptrs: Vec<*const f32> = inputs.iter().map(|t| t.data().as_ptr()).collect();
        let out_ptrs: Vec<*mut f32> = outputs
            .iter_mut()
            .map(|t| t.data_mut().as_mut_ptr())
            .collect();
        // Addresses cross into the pool's thread as integers; the buffers
        // outlive the call, which `install` waits for.
        let args = (
            in_ptrs.as_ptr() as usize,
            out_ptrs.as_ptr() as usize,
            self.lowered.weights.as_ptr() as usize,
            // SAFETY: GUARD < arena.len().
            unsafe { self.arena.as_mut_ptr().add(GUARD) } as usize,
        );
        let forward = self.forward;
        // SAFETY: shapes were checked above; the generated code reads and
        // writes only inside the inputs, outputs, weights and arena, whose
        // sizes the same lowering computed.
        self.pool.install(|| unsafe {
            forward(
                args.0 as *const *const f32,
                args.1 as *const *mut f32,
                args.2 as *const f32,
                args.3 as *mut f32,
            )
        });
        self.check_guards()
    }

    fn check_guards(&self) -> Result<(), JitRunError> {
        let n = self.arena.len();
        let guards = (0..GUARD).chain(n - GUARD..n);
        match guards
            .into_iter()
            .find(|&i| self.arena[i].to_bits() != SENTINEL)
        {
            Some(i) => Err(JitRunError::OutOfBounds(i)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{check_source, CheckOptions};
    use crate::ir::Graph;
    use crate::passes;
    use crate::weights::Weights;

    fn tiny() -> JitModel {
        let net = check_source(
            "t.net",
            "model m(x: [N, 2, 4, 4]) { x -> conv(3, 3, pad: 1) -> relu }",
            CheckOptions::default(),
        )
        .map_err(|e| e.1.message)
        .unwrap();
        let mut g = Graph::from_network(&net);
        let mut w = Weights::random(&g, 1);
        passes::optimize(&mut g, &mut w, &passes::Options::default()).unwrap();
        JitModel::compile(crate::codegen::lower(g, &w).unwrap(), 1).unwrap()
    }

    #[test]
    fn runs_and_checks_its_guards() {
        let mut m = tiny();
        let x = Tensor::zeros(vec![1, 2, 4, 4]);
        m.run(std::slice::from_ref(&x)).unwrap();
        // Simulate a stray write just past the arena.
        let end = m.arena.len() - 1;
        m.arena[end] = 1.0;
        assert!(matches!(m.run(&[x]), Err(JitRunError::OutOfBounds(_))));
    }

    #[test]
    fn wrong_input_shape_is_an_error() {
        let mut m = tiny();
        let e = m.run(&[Tensor::zeros(vec![1, 3, 4, 4])]).unwrap_err();
        assert!(
            e.to_string().contains("must have shape [1, 2, 4, 4]"),
            "{e}"
        );
    }
}
