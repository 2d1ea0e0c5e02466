//! The C ABI: the symbols generated code calls (resolved by the JIT, or by
//! the linker against this crate's static library for `netc compile`), and
//! the entry points a C program uses.

use crate::kernels::{conv_transpose, desc, dispatch, pool, resize, simple, unpool};

/// Run a conv or dense layer; see [`desc::GemmDesc`].
///
/// # Safety
/// `desc` must point to a valid descriptor and `ptrs` to its pointers.
#[no_mangle]
pub unsafe extern "C" fn netc_rt_gemm(desc: *const desc::GemmDesc, ptrs: *const *mut f32) {
    dispatch::run(&*desc, ptrs);
}

/// Elementwise sigmoid (code 0) or tanh (code 1) over `len` floats.
///
/// # Safety
/// `src` and `dst` must hold `len` floats.
#[no_mangle]
pub unsafe extern "C" fn netc_rt_unary(code: u32, src: *const f32, dst: *mut f32, len: u64) {
    simple::unary(code, src, dst, len as usize);
}

/// Copy `len` floats from `src` to `dst` (distinct buffers): network
/// outputs to the caller's buffer and concat operands no producer could
/// write in place. A call rather than an emitted loop, which moved one
/// float per iteration — a 256×56×56 output took about a millisecond.
///
/// # Safety
/// `src` and `dst` must hold `len` floats and not overlap.
#[no_mangle]
pub unsafe extern "C" fn netc_rt_copy(src: *const f32, dst: *mut f32, len: u64) {
    std::ptr::copy_nonoverlapping(src, dst, len as usize);
}

/// Softmax over channels; see [`simple::softmax`].
///
/// # Safety
/// As [`simple::softmax`].
#[no_mangle]
pub unsafe extern "C" fn netc_rt_softmax(
    src: *const f32,
    dst: *mut f32,
    items: u64,
    channels: u64,
    inner: u64,
    src_stride: u64,
    dst_stride: u64,
) {
    simple::softmax(
        src,
        dst,
        items as usize,
        channels as usize,
        inner as usize,
        src_stride as usize,
        dst_stride as usize,
    );
}

/// One pooling layer: `desc` is a [`pool::PoolDesc`].
///
/// # Safety
/// As [`pool::run`].
#[no_mangle]
pub unsafe extern "C" fn netc_rt_pool(desc: *const pool::PoolDesc, x: *const f32, out: *mut f32) {
    pool::run(&*desc, x, out);
}

/// One max-unpooling layer: `desc` is an [`unpool::UnpoolDesc`].
///
/// # Safety
/// As [`unpool::run`].
#[no_mangle]
pub unsafe extern "C" fn netc_rt_unpool(
    desc: *const unpool::UnpoolDesc,
    values: *const f32,
    source: *const f32,
    out: *mut f32,
) {
    unpool::run(&*desc, values, source, out);
}

/// Use `threads` worker threads for every later call (0: one per core).
/// Returns 0 on success, -1 if the thread pool was already started.
#[no_mangle]
pub extern "C" fn netc_set_threads(threads: u32) -> i32 {
    if crate::threads::set_global_threads(threads as usize) {
        0
    } else {
        -1
    }
}

/// Every runtime symbol generated code may reference, with its address.
/// A per-channel gate over every plane; see [`simple::gate_mul`].
///
/// # Safety
/// As [`simple::gate_mul`].
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn netc_rt_gate_mul(
    src: *const f32,
    gate: *const f32,
    dst: *mut f32,
    items: u64,
    channels: u64,
    inner: u64,
    src_stride: u64,
    gate_stride: u64,
    dst_stride: u64,
) {
    let u = |v: u64| v as usize;
    simple::gate_mul(
        src,
        gate,
        dst,
        u(items),
        u(channels),
        u(inner),
        [u(src_stride), u(gate_stride), u(dst_stride)],
    );
}

/// Resize every plane of a tensor; see [`resize::ResizeDesc`].
///
/// # Safety
/// As [`resize::run`], with `desc` pointing at a valid descriptor.
#[no_mangle]
pub unsafe extern "C" fn netc_rt_resize(
    desc: *const resize::ResizeDesc,
    x: *const f32,
    out: *mut f32,
) {
    resize::run(&*desc, x, out);
}

/// One transposed convolution; see [`conv_transpose::ConvTransposeDesc`].
///
/// # Safety
/// As [`conv_transpose::run`], with `desc` pointing at a valid descriptor.
#[no_mangle]
pub unsafe extern "C" fn netc_rt_conv_transpose(
    desc: *const conv_transpose::ConvTransposeDesc,
    x: *const f32,
    w: *const f32,
    bias: *const f32,
    out: *mut f32,
) {
    conv_transpose::run(&*desc, x, w, bias, out);
}

pub fn symbols() -> Vec<(&'static str, *const u8)> {
    vec![
        ("netc_rt_gemm", netc_rt_gemm as *const u8),
        ("netc_rt_unary", netc_rt_unary as *const u8),
        ("netc_rt_copy", netc_rt_copy as *const u8),
        ("netc_rt_softmax", netc_rt_softmax as *const u8),
        ("netc_rt_pool", netc_rt_pool as *const u8),
        ("netc_rt_unpool", netc_rt_unpool as *const u8),
        ("netc_rt_resize", netc_rt_resize as *const u8),
        ("netc_rt_gate_mul", netc_rt_gate_mul as *const u8),
        (
            "netc_rt_conv_transpose",
            netc_rt_conv_transpose as *const u8,
        ),
        ("netc_rt_mark", crate::profile::netc_rt_mark as *const u8),
    ]
}
