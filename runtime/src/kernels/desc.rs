//! The ABI between generated code and the conv/dense kernels: the
//! descriptor the code generator embeds as constant data ([`GemmDesc`]),
//! its kind and epilogue-step codes, and the pointers passed beside it
//! ([`Ptrs`]). Every kernel module reads these; none defines them.

/// How B is read from the input.
pub const KIND_IM2COL: u32 = 0;
pub const KIND_POINTWISE: u32 = 1;
pub const KIND_DENSE: u32 = 2;
/// A dense layer at a batch of at most [`GEMV_MAX_BATCH`], weights packed
/// by [`super::gemv::pack_weights`].
pub const KIND_GEMV: u32 = 3;
/// A 3×3 stride-1 convolution by Winograd F(4×4, 3×3), weights packed by
/// [`super::winograd::pack_weights`].
pub const KIND_WINOGRAD: u32 = 4;
/// The same by Winograd F(2×2, 3×3).
pub const KIND_WINOGRAD_F2: u32 = 5;
/// A 5×5 stride-1 convolution by Winograd F(2×2, 5×5).
pub const KIND_WINOGRAD_F2K5: u32 = 6;
/// A convolution vectorised over output channels, weights packed by
/// [`super::mvec::pack_weights`] (see `mvec.rs`).
pub const KIND_MVEC: u32 = 7;

/// Dense layers up to this batch use the matrix-vector path: a GEMM tile
/// would waste most of its columns, and the layer is bound by reading the
/// weights once (at 8 the GEMM path uses a quarter of its tiles' columns).
pub const GEMV_MAX_BATCH: usize = 8;

/// Epilogue step codes.
pub const STEP_ADD: u32 = 0;
pub const STEP_RELU: u32 = 1;
pub const STEP_LEAKY: u32 = 2;
pub const STEP_SIGMOID: u32 = 3;
pub const STEP_TANH: u32 = 4;
/// Max-pool the result over 2×2 windows at stride 2: only as the last
/// step and with no residual add. The output tensor is then the pooled
/// one, `out_c × ⌊oh/2⌋ × ⌊ow/2⌋` per item (`oh`, `ow` stay the
/// convolution's), so the full-size result is never written out.
pub const STEP_MAXPOOL2: u32 = 5;
/// `relu6(x + 3) / 6`.
pub const STEP_HARDSIGMOID: u32 = 6;
/// `x · relu6(x + 3) / 6`.
pub const STEP_HARDSWISH: u32 = 7;
/// `min(max(x, alpha), beta)` with the step's `alpha` and `beta`.
pub const STEP_CLIP: u32 = 8;
/// `x · sigmoid(x)`.
pub const STEP_SILU: u32 = 9;

pub const MAX_STEPS: usize = 8;
pub const MAX_RESIDUALS: usize = 4;

/// Everything a conv/dense call needs besides pointers; built by the code
/// generator and stored as constant data next to the generated code.
///
/// The pointer array passed alongside is `[x, out, packed_weights, bias
/// (or null), residual 0, …]`. Tensor item `n` starts at `base + n·stride`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GemmDesc {
    pub kind: u32,
    pub batch: u32,
    pub groups: u32,
    pub in_c: u32,
    pub h: u32,
    pub w: u32,
    pub out_c: u32,
    pub oh: u32,
    pub ow: u32,
    pub kh: u32,
    pub kw: u32,
    pub sh: u32,
    pub sw: u32,
    pub pt: u32,
    pub pl: u32,
    pub dh: u32,
    pub dw: u32,
    pub has_bias: u32,
    pub n_res: u32,
    pub n_steps: u32,
    pub steps: [u32; MAX_STEPS],
    /// Each step's first parameter (leaky ReLU's slope, clip's minimum).
    pub alpha: [f32; MAX_STEPS],
    /// Each step's second parameter (clip's maximum).
    pub beta: [f32; MAX_STEPS],
    pub x_bstride: u64,
    pub out_bstride: u64,
    pub res_bstride: [u64; MAX_RESIDUALS],
}

impl GemmDesc {
    /// Rows of A per group.
    pub fn m(&self) -> usize {
        (self.out_c / self.groups) as usize
    }

    /// Reduction length per group.
    pub fn k(&self) -> usize {
        (self.in_c / self.groups * self.kh * self.kw) as usize
    }

    /// Columns of C per (item, group).
    pub fn cols(&self) -> usize {
        if self.is_dense() {
            self.batch as usize
        } else {
            (self.oh * self.ow) as usize
        }
    }

    /// Whether the last step is [`STEP_MAXPOOL2`].
    pub fn pooled(&self) -> bool {
        self.n_steps > 0 && self.steps[self.n_steps as usize - 1] == STEP_MAXPOOL2
    }

    pub(super) fn is_dense(&self) -> bool {
        self.kind == KIND_DENSE || self.kind == KIND_GEMV
    }

    pub(super) fn items(&self) -> usize {
        if self.is_dense() {
            1
        } else {
            self.batch as usize
        }
    }

    /// The descriptor as raw bytes, for embedding in generated code.
    pub fn to_bytes(&self) -> Vec<u8> {
        super::pod_bytes(self)
    }
}

#[derive(Clone, Copy)]
pub(crate) struct Ptrs {
    pub(crate) x: *const f32,
    pub(crate) out: *mut f32,
    pub(crate) a: *const f32,
    pub(crate) bias: *const f32,
    pub(crate) res: [*const f32; MAX_RESIDUALS],
}

// SAFETY: the pointers address buffers the caller keeps alive for the call;
// tasks write disjoint output tiles.
unsafe impl Send for Ptrs {}
unsafe impl Sync for Ptrs {}
