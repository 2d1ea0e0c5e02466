//! The in-memory back end: emit with `cranelift-jit`, run on netc's thread pool.

use super::{changed_guard, emit, guarded, CodegenError, Lowered, GUARD_FLOATS as GUARD, SENTINEL};
use crate::target::Target;
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{default_libcall_names, Linkage};
use netc_runtime::Tensor;

type Forward = unsafe extern "C" fn(*const *const f32, *const *mut f32, *const f32, *mut f32);

/// A compiled model, ready to run.
pub struct JitModel {
    // Owns the executable memory `forward` points into.
    _module: JITModule,
    forward: Forward,
    lowered: Lowered,
    arena: Vec<f32>,
    pool: netc_runtime::threads::Pool,
}

#[derive(Debug, thiserror::Error)]
pub enum JitRunError {
    #[error(
        "internal error: generated code wrote outside its {buffer} (guard float {index} changed)"
    )]
    OutOfBounds { buffer: String, index: usize },
    #[error("internal error: generated code modified input {0}")]
    InputModified(usize),
    #[error("internal error: generated code left element {index} of output {output} unwritten")]
    Unwritten { output: usize, index: usize },
    #[error("the model takes {expected} inputs, {found} given")]
    InputCount { expected: usize, found: usize },
    #[error("outputs must have shapes {expected:?}, found {found:?}")]
    OutputShapes {
        expected: Vec<Vec<usize>>,
        found: Vec<Vec<usize>>,
    },
    #[error("input {index} must have shape {expected:?}, found {found:?}")]
    InputShape {
        index: usize,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
}

impl JitModel {
    /// Generate native code for `lowered` on `target` (which must run on
    /// this machine); kernels run on `threads` threads (0: one per core).
    pub fn compile(
        lowered: Lowered,
        target: &Target,
        threads: usize,
    ) -> Result<JitModel, CodegenError> {
        let host = netc_runtime::cpu::Features::detect();
        if !target.runs_on(host) {
            return Err(CodegenError::Isa(format!(
                "cannot run code for {target} here: this CPU is {}",
                host.level()
            )));
        }
        let isa = target
            .isa(false)
            .map_err(|e| CodegenError::Isa(e.to_string()))?;
        let mut builder = JITBuilder::with_isa(isa, default_libcall_names());
        for (name, ptr) in netc_runtime::abi::symbols() {
            builder.symbol(name, ptr);
        }
        let mut module = JITModule::new(builder);
        let id = emit(&mut module, &lowered, "netc_forward", Linkage::Export)?;
        module.finalize_definitions()?;
        let code = module.get_finalized_function(id);
        // SAFETY: `code` is the function just defined with this signature.
        let forward: Forward = unsafe { std::mem::transmute::<*const u8, Forward>(code) };
        let pool = netc_runtime::threads::Pool::new(threads)
            .map_err(|e| CodegenError::Isa(format!("thread pool: {e}")))?;
        // The arena sits between two guard regions checked after every run.
        let arena = guarded(&vec![0.0; lowered.arena_floats]);
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
        self.pool.threads()
    }

    /// Run on `inputs` (shapes as compiled), returning every output.
    ///
    /// Inputs and outputs are staged in buffers between guard regions, and
    /// after the run every guard (inputs, outputs, weights, arena) is
    /// checked, the inputs compared with what was passed and every output
    /// element checked to be written: a stray write is an error, a stray
    /// read of a guard (NaN) shows in the outputs. [`JitModel::run_into`] is
    /// the copy-free path for benchmarks.
    pub fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>, JitRunError> {
        self.check_inputs(inputs)?;
        let staged_in: Vec<Vec<f32>> = inputs.iter().map(|t| guarded(t.data())).collect();
        let mut staged_out: Vec<Vec<f32>> = self
            .lowered
            .output_shapes
            .iter()
            .map(|s| vec![f32::from_bits(SENTINEL); s.iter().product::<usize>() + 2 * GUARD])
            .collect();
        let in_ptrs: Vec<*const f32> = staged_in.iter().map(|b| b[GUARD..].as_ptr()).collect();
        let out_ptrs: Vec<*mut f32> = staged_out
            .iter_mut()
            .map(|b| b[GUARD..].as_mut_ptr())
            .collect();
        // SAFETY: every staged buffer holds its tensor's elements after the
        // leading guard.
        unsafe { self.call(&in_ptrs, &out_ptrs) };
        let guard_error = |buffer: String, buf: &[f32]| {
            changed_guard(buf).map_or(Ok(()), |index| {
                Err(JitRunError::OutOfBounds { buffer, index })
            })
        };
        for (i, (staged, x)) in staged_in.iter().zip(inputs).enumerate() {
            guard_error(format!("input {i}"), staged)?;
            let same = |(a, b): (&f32, &f32)| a.to_bits() == b.to_bits();
            if !staged[GUARD..GUARD + x.numel()]
                .iter()
                .zip(x.data())
                .all(same)
            {
                return Err(JitRunError::InputModified(i));
            }
        }
        self.check_guards()?;
        let mut outputs = Vec::with_capacity(staged_out.len());
        for (output, (staged, shape)) in staged_out
            .into_iter()
            .zip(&self.lowered.output_shapes)
            .enumerate()
        {
            guard_error(format!("output {output}"), &staged)?;
            let data = &staged[GUARD..staged.len() - GUARD];
            if let Some(index) = data.iter().position(|v| v.to_bits() == SENTINEL) {
                return Err(JitRunError::Unwritten { output, index });
            }
            // The shapes come from the same lowering that sized `data`.
            let tensor = Tensor::new(shape.clone(), data.to_vec());
            outputs.push(tensor.map_err(|_| JitRunError::OutputShapes {
                expected: self.lowered.output_shapes.clone(),
                found: vec![vec![data.len()]],
            })?);
        }
        Ok(outputs)
    }

    /// Run writing into preallocated outputs (no allocation, no staging:
    /// for benchmarks). The arena and weight guards are still checked.
    pub fn run_into(
        &mut self,
        inputs: &[Tensor],
        outputs: &mut [Tensor],
    ) -> Result<(), JitRunError> {
        self.check_inputs(inputs)?;
        self.check_output_shapes(outputs.iter().map(|t| t.shape().to_vec()).collect())?;
        let in_ptrs: Vec<*const f32> = inputs.iter().map(|t| t.data().as_ptr()).collect();
        let out_ptrs: Vec<*mut f32> = outputs
            .iter_mut()
            .map(|t| t.data_mut().as_mut_ptr())
            .collect();
        // SAFETY: shapes were checked above.
        unsafe { self.call(&in_ptrs, &out_ptrs) };
        self.check_guards()
    }

    /// Run on borrowed buffers (the Python package's arrays, in place):
    /// `inputs[i]` holds input `i`'s elements in its compiled shape, and
    /// `outputs[i]` receives output `i`'s. Lengths are checked; the arena
    /// and weight guards too.
    pub fn run_slices(
        &mut self,
        inputs: &[&[f32]],
        outputs: &mut [&mut [f32]],
    ) -> Result<(), JitRunError> {
        // A buffer of the right length stands for its compiled shape; one
        // of another length is reported by its length.
        let as_shape = |len: usize, shape: Option<&Vec<usize>>| match shape {
            Some(s) if s.iter().product::<usize>() == len => s.clone(),
            _ => vec![len],
        };
        let (ins, outs) = (&self.lowered.input_shapes, &self.lowered.output_shapes);
        self.check_input_shapes(
            inputs
                .iter()
                .enumerate()
                .map(|(i, x)| as_shape(x.len(), ins.get(i)))
                .collect(),
        )?;
        self.check_output_shapes(
            outputs
                .iter()
                .enumerate()
                .map(|(i, o)| as_shape(o.len(), outs.get(i)))
                .collect(),
        )?;
        let in_ptrs: Vec<*const f32> = inputs.iter().map(|x| x.as_ptr()).collect();
        let out_ptrs: Vec<*mut f32> = outputs.iter_mut().map(|o| o.as_mut_ptr()).collect();
        // SAFETY: every buffer's length was checked against its shape.
        unsafe { self.call(&in_ptrs, &out_ptrs) };
        self.check_guards()
    }

    fn check_inputs(&self, inputs: &[Tensor]) -> Result<(), JitRunError> {
        self.check_input_shapes(inputs.iter().map(|t| t.shape().to_vec()).collect())
    }

    fn check_input_shapes(&self, found: Vec<Vec<usize>>) -> Result<(), JitRunError> {
        let expected = &self.lowered.input_shapes;
        if found.len() != expected.len() {
            return Err(JitRunError::InputCount {
                expected: expected.len(),
                found: found.len(),
            });
        }
        for (index, (found, shape)) in found.into_iter().zip(expected).enumerate() {
            if found != *shape {
                return Err(JitRunError::InputShape {
                    index,
                    expected: shape.clone(),
                    found,
                });
            }
        }
        Ok(())
    }

    fn check_output_shapes(&self, found: Vec<Vec<usize>>) -> Result<(), JitRunError> {
        if found != self.lowered.output_shapes {
            return Err(JitRunError::OutputShapes {
                expected: self.lowered.output_shapes.clone(),
                found,
            });
        }
        Ok(())
    }

    /// Call the generated function on the pool.
    ///
    /// # Safety
    /// `ins` and `outs` point to buffers of the compiled input and output
    /// shapes' sizes, valid for the duration of the call.
    unsafe fn call(&mut self, ins: &[*const f32], outs: &[*mut f32]) {
        // Weight offsets count from the blob's start, guard included.
        let weights = self.lowered.weights.as_ptr();
        // SAFETY: the arena is longer than its leading guard.
        let arena = unsafe { self.arena.as_mut_ptr().add(GUARD) };
        let forward = self.forward;
        // SAFETY: (the caller's contract) the generated code reads and
        // writes only inside the inputs, outputs, weights and arena, whose
        // sizes the same lowering computed. Kernels split their work on
        // the pool entered here.
        self.pool
            .enter(|| unsafe { forward(ins.as_ptr(), outs.as_ptr(), weights, arena) });
    }

    fn check_guards(&self) -> Result<(), JitRunError> {
        for (buffer, buf) in [("arena", &self.arena), ("weights", &self.lowered.weights)] {
            if let Some(index) = changed_guard(buf) {
                return Err(JitRunError::OutOfBounds {
                    buffer: buffer.into(),
                    index,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{Options, Pipeline};
    use crate::weights::Weights;

    fn tiny() -> JitModel {
        let pipeline = Pipeline::new(Options {
            threads: 1,
            ..Options::default()
        });
        let g = pipeline
            .check_source(
                "t.net",
                "model m(x: [N, 2, 4, 4]) { x -> conv(3, 3, pad: 1) -> relu }",
            )
            .unwrap();
        let w = Weights::random(&g, 1);
        pipeline.jit(pipeline.optimize(g, w).unwrap()).unwrap()
    }

    #[test]
    fn runs_and_checks_its_guards() {
        let mut m = tiny();
        let x = Tensor::zeros(vec![1, 2, 4, 4]);
        m.run(std::slice::from_ref(&x)).unwrap();
        // Simulate a stray write just past the arena.
        let end = m.arena.len() - 1;
        m.arena[end] = 1.0;
        assert!(matches!(m.run(&[x]), Err(JitRunError::OutOfBounds { .. })));
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
