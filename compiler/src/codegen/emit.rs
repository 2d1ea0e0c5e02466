//! Cranelift IR for the `forward` function: one straight-line sequence of
//! per-op code in plan order, with constant loop bounds, strides and
//! offsets.

use super::{CodegenError, Lowered};
use crate::ir::graph::NodeKind;
use crate::ir::op::{Activation, Op};
use crate::plan::TensorLoc;
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{
    types, AbiParam, BlockArg, FuncRef, InstBuilder, MemFlagsData, StackSlotData, StackSlotKind,
    Type, Value,
};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{DataDescription, FuncId, Linkage, Module};
use netc_runtime::kernels::desc::MAX_RESIDUALS;
use netc_runtime::kernels::simple::{UNARY_SIGMOID, UNARY_SILU, UNARY_TANH};
use petgraph::stable_graph::NodeIndex;

struct Ctx<'a, 'f> {
    b: FunctionBuilder<'f>,
    ptr: Type,
    inputs: Value,
    outputs: Value,
    weights: Value,
    arena: Value,
    lowered: &'a Lowered,
    gemm: FuncRef,
    pool: FuncRef,
    resize: FuncRef,
    conv_transpose: FuncRef,
    unary: FuncRef,
    copy: FuncRef,
    softmax: FuncRef,
    gate_mul: FuncRef,
    unpool: FuncRef,
    ptr_slot: cranelift_codegen::ir::StackSlot,
}

fn flags() -> MemFlagsData {
    MemFlagsData::trusted()
}

impl Ctx<'_, '_> {
    fn iconst(&mut self, v: i64) -> Value {
        self.b.ins().iconst(types::I64, v)
    }

    fn fconst(&mut self, v: f32) -> Value {
        self.b.ins().f32const(v)
    }

    /// Address of item 0 of a tensor.
    fn base(&mut self, loc: &TensorLoc) -> Value {
        let root = match loc.input {
            Some(i) => self
                .b
                .ins()
                .load(self.ptr, flags(), self.inputs, (8 * i) as i32),
            None => self.arena,
        };
        self.b.ins().iadd_imm_s(root, (4 * loc.offset) as i64)
    }

    /// `base + index·4` with a dynamic element index.
    fn elem(&mut self, base: Value, index: Value) -> Value {
        let bytes = self.b.ins().ishl_imm_u(index, 2);
        self.b.ins().iadd(base, bytes)
    }

    /// Emit `for i in 0..count { body(i) }`.
    fn for_range(&mut self, count: i64, body: impl FnOnce(&mut Self, Value)) {
        self.for_between(None, count, body);
    }

    /// Emit `for i in start..end` where `start` may be dynamic.
    fn for_between(&mut self, start: Option<Value>, end: i64, body: impl FnOnce(&mut Self, Value)) {
        let header = self.b.create_block();
        let body_block = self.b.create_block();
        let exit = self.b.create_block();
        self.b.append_block_param(header, types::I64);
        let start = match start {
            Some(s) => s,
            None => self.iconst(0),
        };
        self.b.ins().jump(header, &[BlockArg::Value(start)]);
        self.b.switch_to_block(header);
        let i = self.b.block_params(header)[0];
        let more = self.b.ins().icmp_imm_s(IntCC::SignedLessThan, i, end);
        self.b.ins().brif(more, body_block, &[], exit, &[]);
        self.b.switch_to_block(body_block);
        self.b.seal_block(body_block);
        body(self, i);
        let next = self.b.ins().iadd_imm_s(i, 1);
        self.b.ins().jump(header, &[BlockArg::Value(next)]);
        self.b.seal_block(header);
        self.b.switch_to_block(exit);
        self.b.seal_block(exit);
    }

    /// Emit `if cond { body }`.
    fn when(&mut self, cond: Value, body: impl FnOnce(&mut Self)) {
        let then = self.b.create_block();
        let done = self.b.create_block();
        self.b.ins().brif(cond, then, &[], done, &[]);
        self.b.switch_to_block(then);
        self.b.seal_block(then);
        body(self);
        self.b.ins().jump(done, &[]);
        self.b.switch_to_block(done);
        self.b.seal_block(done);
    }

    /// For every item `n` and element `i` of a tensor: `dst = f(src…)`.
    fn map(
        &mut self,
        srcs: &[TensorLoc],
        dst: &TensorLoc,
        batch: usize,
        f: &dyn Fn(&mut Self, &[Value]) -> Value,
    ) {
        let src_bases: Vec<Value> = srcs.iter().map(|l| self.base(l)).collect();
        let dst_base = self.base(dst);
        let item = dst.item as i64;
        self.for_range(batch as i64, |c, n| {
            let srcs_n: Vec<Value> = srcs
                .iter()
                .zip(&src_bases)
                .map(|(l, &b)| {
                    let off = c.b.ins().imul_imm_s(n, (4 * l.batch_stride) as i64);
                    c.b.ins().iadd(b, off)
                })
                .collect();
            let off = c.b.ins().imul_imm_s(n, (4 * dst.batch_stride) as i64);
            let dst_n = c.b.ins().iadd(dst_base, off);
            c.for_range(item, |c, i| {
                let vals: Vec<Value> = srcs_n
                    .iter()
                    .map(|&s| {
                        let a = c.elem(s, i);
                        c.b.ins().load(types::F32, flags(), a, 0)
                    })
                    .collect();
                let v = f(c, &vals);
                let a = c.elem(dst_n, i);
                c.b.ins().store(flags(), v, a, 0);
            });
        });
    }

    /// Pointer to item `n` of a tensor whose item 0 is at `base`.
    fn item(&mut self, base: Value, n: Value, stride: usize) -> Value {
        let off = self.b.ins().imul_imm_s(n, (4 * stride) as i64);
        self.b.ins().iadd(base, off)
    }

    /// For every (item, channel) plane: `body(src_plane, dst_plane)`, the
    /// planes of `src_plane_len` and `dst_plane_len` floats.
    fn for_each_plane(
        &mut self,
        (src, dst): (&TensorLoc, &TensorLoc),
        batch: usize,
        channels: i64,
        (src_plane_len, dst_plane_len): (i64, i64),
        body: impl Fn(&mut Self, Value, Value),
    ) {
        let (src_base, dst_base) = (self.base(src), self.base(dst));
        let (sl, dl) = (*src, *dst);
        self.for_range(batch as i64, |c, nn| {
            let s_item = c.item(src_base, nn, sl.batch_stride);
            let d_item = c.item(dst_base, nn, dl.batch_stride);
            c.for_range(channels, |c, ch| {
                let off = c.b.ins().imul_imm_s(ch, 4 * src_plane_len);
                let s_plane = c.b.ins().iadd(s_item, off);
                let off = c.b.ins().imul_imm_s(ch, 4 * dst_plane_len);
                let d_plane = c.b.ins().iadd(d_item, off);
                body(c, s_plane, d_plane);
            });
        });
    }

    fn weight_ptr(&mut self, offset: usize) -> Value {
        self.b.ins().iadd_imm_s(self.weights, (4 * offset) as i64)
    }
}

/// The address of a node's constant runtime descriptor (every node making
/// a runtime call has one: `codegen::lower` built it).
fn descriptor_ptr(
    c: &mut Ctx,
    desc: Option<cranelift_codegen::ir::GlobalValue>,
    node: &str,
) -> Result<Value, CodegenError> {
    let Some(gv) = desc else {
        return Err(CodegenError::Unsupported(format!(
            "`{node}` has no descriptor"
        )));
    };
    Ok(c.b.ins().symbol_value(c.ptr, gv))
}

/// The runtime's unary code for an activation Cranelift cannot compute
/// inline (no `exp` instruction), if it is one.
fn unary_code(a: Activation) -> Option<u32> {
    match a {
        Activation::Sigmoid => Some(UNARY_SIGMOID),
        Activation::Tanh => Some(UNARY_TANH),
        Activation::Silu => Some(UNARY_SILU),
        Activation::Relu
        | Activation::LeakyRelu(_)
        | Activation::HardSigmoid
        | Activation::HardSwish
        | Activation::Clip(..) => None,
    }
}

fn activation(c: &mut Ctx, a: Activation, v: Value) -> Value {
    match a {
        Activation::Relu => {
            let zero = c.fconst(0.0);
            c.b.ins().fmax(v, zero)
        }
        Activation::LeakyRelu(alpha) => {
            let zero = c.fconst(0.0);
            let k = c.fconst(alpha);
            let scaled = c.b.ins().fmul(v, k);
            let pos = c.b.ins().fcmp(FloatCC::GreaterThanOrEqual, v, zero);
            c.b.ins().select(pos, v, scaled)
        }
        Activation::HardSigmoid => hard_sigmoid(c, v),
        Activation::HardSwish => {
            let g = hard_sigmoid(c, v);
            c.b.ins().fmul(v, g)
        }
        Activation::Clip(lo, hi) => {
            let (lo, hi) = (c.fconst(lo), c.fconst(hi));
            let v = c.b.ins().fmax(v, lo);
            c.b.ins().fmin(v, hi)
        }
        // Handled by a runtime call before reaching here.
        Activation::Sigmoid | Activation::Tanh | Activation::Silu => v,
    }
}

/// `relu6(v + 3) / 6`, the order of operations PyTorch uses.
fn hard_sigmoid(c: &mut Ctx, v: Value) -> Value {
    let (three, zero, six) = (c.fconst(3.0), c.fconst(0.0), c.fconst(6.0));
    let s = c.b.ins().fadd(v, three);
    let s = c.b.ins().fmax(s, zero);
    let s = c.b.ins().fmin(s, six);
    c.b.ins().fdiv(s, six)
}

pub(super) fn forward<M: Module>(
    module: &mut M,
    lowered: &Lowered,
    name: &str,
    linkage: Linkage,
) -> Result<FuncId, CodegenError> {
    let ptr = module.target_config().pointer_type();
    let mut sig = module.make_signature();
    for _ in 0..4 {
        sig.params.push(AbiParam::new(ptr));
    }
    let func_id = module.declare_function(name, linkage, &sig)?;

    let import = |module: &mut M, sym: &str, params: &[Type]| -> Result<FuncId, CodegenError> {
        let mut s = module.make_signature();
        for &p in params {
            s.params.push(AbiParam::new(p));
        }
        Ok(module.declare_function(sym, Linkage::Import, &s)?)
    };
    let gemm_id = import(module, "netc_rt_gemm", &[ptr, ptr])?;
    let pool_id = import(module, "netc_rt_pool", &[ptr, ptr, ptr])?;
    let resize_id = import(module, "netc_rt_resize", &[ptr, ptr, ptr])?;
    let conv_t_id = import(module, "netc_rt_conv_transpose", &[ptr, ptr, ptr, ptr, ptr])?;
    let unary_id = import(module, "netc_rt_unary", &[types::I32, ptr, ptr, types::I64])?;
    let copy_id = import(module, "netc_rt_copy", &[ptr, ptr, types::I64])?;
    let mark_id = import(module, "netc_rt_mark", &[types::I32])?;
    // Pointers, then sizes and strides as 64-bit integers.
    let args = |pointers: usize, integers: usize| {
        let mut a = vec![ptr; pointers];
        a.extend(std::iter::repeat_n(types::I64, integers));
        a
    };
    let gate_mul_id = import(module, "netc_rt_gate_mul", &args(3, 6))?;
    let unpool_id = import(module, "netc_rt_unpool", &[ptr, ptr, ptr, ptr])?;
    let softmax_id = import(module, "netc_rt_softmax", &args(2, 5))?;

    // Conv/dense descriptors as read-only data next to the code.
    let plan = &lowered.plan;
    let mut descs = std::collections::HashMap::new();
    for (i, &n) in plan.order.iter().enumerate() {
        if let Some(bytes) = lowered.consts.get(&n).and_then(|c| c.descriptor()) {
            let id =
                module.declare_data(&format!("{name}.desc{i}"), Linkage::Local, false, false)?;
            let mut data = DataDescription::new();
            data.define(bytes.into_boxed_slice());
            data.set_align(8);
            module.define_data(id, &data)?;
            descs.insert(n, id);
        }
    }

    let frontend = module.target_config();
    let mut ctx = module.make_context();
    ctx.func.signature = sig;
    let mut fctx = FunctionBuilderContext::new();
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let gemm = module.declare_func_in_func(gemm_id, b.func);
        let pool = module.declare_func_in_func(pool_id, b.func);
        let resize = module.declare_func_in_func(resize_id, b.func);
        let conv_transpose = module.declare_func_in_func(conv_t_id, b.func);
        let unary = module.declare_func_in_func(unary_id, b.func);
        let copy = module.declare_func_in_func(copy_id, b.func);
        let softmax = module.declare_func_in_func(softmax_id, b.func);
        let gate_mul = module.declare_func_in_func(gate_mul_id, b.func);
        let unpool = module.declare_func_in_func(unpool_id, b.func);
        let mark = module.declare_func_in_func(mark_id, b.func);
        let desc_gvs: std::collections::HashMap<NodeIndex, _> = descs
            .iter()
            .map(|(&n, &id)| (n, module.declare_data_in_func(id, b.func)))
            .collect();
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        b.seal_block(entry);
        let params = b.block_params(entry).to_vec();
        let ptr_slot = b.create_sized_stack_slot(StackSlotData::new(
            StackSlotKind::ExplicitSlot,
            (8 * (4 + MAX_RESIDUALS)) as u32,
            3,
        ));
        let mut c = Ctx {
            b,
            ptr,
            inputs: params[0],
            outputs: params[1],
            weights: params[2],
            arena: params[3],
            lowered,
            gemm,
            pool,
            resize,
            conv_transpose,
            unary,
            copy,
            softmax,
            gate_mul,
            unpool,
            ptr_slot,
        };
        let mark_after = |c: &mut Ctx, index: u32| {
            let i = c.b.ins().iconst(types::I32, index as i64);
            c.b.ins().call(mark, &[i]);
        };
        if lowered.profile {
            mark_after(&mut c, u32::MAX);
        }
        for (i, &n) in plan.order.iter().enumerate() {
            let desc = desc_gvs.get(&n).copied();
            emit_node(&mut c, n, desc)?;
            if lowered.profile && lowered.graph.g[n].op().is_some_and(Op::computes) {
                mark_after(&mut c, i as u32);
            }
        }
        // Copy each output to the caller's contiguous buffer.
        for (i, &o) in lowered.graph.outputs.iter().enumerate() {
            let loc = lowered.loc(o);
            let batch = lowered.graph.g[o].shape.0[0];
            let dst_base = c.b.ins().load(ptr, flags(), c.outputs, (8 * i) as i32);
            let dst = TensorLoc {
                input: None,
                offset: 0,
                batch_stride: loc.item,
                item: loc.item,
            };
            let src_base = c.base(&loc);
            copy_items(&mut c, src_base, &loc, dst_base, &dst, batch);
        }
        c.b.ins().return_(&[]);
        c.b.finalize(frontend);
    }
    module.define_function(func_id, &mut ctx)?;
    module.clear_context(&mut ctx);
    Ok(func_id)
}

/// Copy `batch` items from `src` to `dst` (both given by item-0 pointers).
fn copy_items(
    c: &mut Ctx,
    src_base: Value,
    src: &TensorLoc,
    dst_base: Value,
    dst: &TensorLoc,
    batch: usize,
) {
    let len = c.iconst(src.item as i64);
    c.for_range(batch as i64, |c, n| {
        let s = c.item(src_base, n, src.batch_stride);
        let d = c.item(dst_base, n, dst.batch_stride);
        c.b.ins().call(c.copy, &[s, d, len]);
    });
}

fn emit_node(
    c: &mut Ctx,
    n: NodeIndex,
    desc: Option<cranelift_codegen::ir::GlobalValue>,
) -> Result<(), CodegenError> {
    let lowered = c.lowered;
    let graph = &lowered.graph;
    let node = &graph.g[n];
    let NodeKind::Op(op) = &node.kind else {
        return Ok(());
    };
    let out = lowered.loc(n);
    if out.input.is_some() {
        return Ok(()); // a view of an input
    }
    let operands = graph.operands(n);
    let locs: Vec<TensorLoc> = operands.iter().map(|&o| lowered.loc(o)).collect();
    let batch = node.shape.0[0];
    let consts = lowered.consts.get(&n).cloned().unwrap_or_default();
    match op {
        Op::Conv(_) | Op::Dense(_) => {
            let desc_ptr = descriptor_ptr(c, desc, &node.name)?;
            let slot = c.b.ins().stack_addr(c.ptr, c.ptr_slot, 0);
            let x = c.base(&locs[0]);
            let y = c.base(&out);
            let a = c.weight_ptr(consts.a);
            let bias = match consts.b {
                Some(b) => c.weight_ptr(b),
                None => c.iconst(0),
            };
            let mut ptrs = vec![x, y, a, bias];
            for l in &locs[1..] {
                ptrs.push(c.base(l));
            }
            for (i, p) in ptrs.into_iter().enumerate() {
                c.b.ins().store(flags(), p, slot, (8 * i) as i32);
            }
            c.b.ins().call(c.gemm, &[desc_ptr, slot]);
        }
        Op::ConvTranspose(_) => {
            let desc_ptr = descriptor_ptr(c, desc, &node.name)?;
            let x = c.base(&locs[0]);
            let y = c.base(&out);
            let w = c.weight_ptr(consts.a);
            let bias = match consts.b {
                Some(b) => c.weight_ptr(b),
                None => c.iconst(0),
            };
            c.b.ins().call(c.conv_transpose, &[desc_ptr, x, w, bias, y]);
        }
        Op::Activation(a) => match unary_code(*a) {
            // Needs `exp`/`tanh`: a runtime call per item.
            Some(code) => {
                let (src, dst) = (c.base(&locs[0]), c.base(&out));
                let (sl, item) = (locs[0], out.item as i64);
                c.for_range(batch as i64, |c, i| {
                    let s = c.item(src, i, sl.batch_stride);
                    let d = c.item(dst, i, out.batch_stride);
                    let code = c.b.ins().iconst(types::I32, code as i64);
                    let len = c.iconst(item);
                    c.b.ins().call(c.unary, &[code, s, d, len]);
                });
            }
            None => {
                let a = *a;
                c.map(&locs, &out, batch, &|c, v| activation(c, a, v[0]));
            }
        },
        Op::Scale { factor } | Op::Dropout { scale: factor, .. } => {
            let f = *factor;
            c.map(&locs, &out, batch, &|c, v| {
                let k = c.fconst(f);
                c.b.ins().fmul(v[0], k)
            });
        }
        Op::Add => {
            c.map(&locs, &out, batch, &|c, v| {
                v[1..].iter().fold(v[0], |acc, &x| c.b.ins().fadd(acc, x))
            });
        }
        Op::Mul if graph.g[operands[1]].shape == node.shape => {
            c.map(&locs, &out, batch, &|c, v| c.b.ins().fmul(v[0], v[1]));
        }
        // A gate per (item, channel), broadcast over the plane: the
        // runtime's loop, vectorised and split over planes.
        Op::Mul => {
            let channels = node.shape.0[1] as i64;
            let inner: i64 = node.shape.0[2..].iter().product::<usize>() as i64;
            let (src, gate, dst) = (c.base(&locs[0]), c.base(&locs[1]), c.base(&out));
            let args = [
                src,
                gate,
                dst,
                c.iconst(batch as i64),
                c.iconst(channels),
                c.iconst(inner),
                c.iconst(locs[0].batch_stride as i64),
                c.iconst(locs[1].batch_stride as i64),
                c.iconst(out.batch_stride as i64),
            ];
            c.b.ins().call(c.gate_mul, &args);
        }
        // Plane copies, input channel `i = g·per + j` to output `j·groups
        // + g`: a loop over the channels calling the runtime's copy.
        Op::ChannelShuffle { groups } => {
            let (channels, groups) = (node.shape.0[1] as i64, *groups as i64);
            let (per, plane) = (
                channels / groups,
                node.shape.0[2..].iter().product::<usize>() as i64,
            );
            let (src, dst) = (c.base(&locs[0]), c.base(&out));
            let (sl, len) = (locs[0], c.iconst(plane));
            c.for_range(batch as i64, |c, n| {
                let s_item = c.item(src, n, sl.batch_stride);
                let d_item = c.item(dst, n, out.batch_stride);
                c.for_range(channels, |c, i| {
                    let g = c.b.ins().udiv_imm_u(i, per);
                    let j = c.b.ins().urem_imm_u(i, per);
                    let o = c.b.ins().imul_imm_s(j, groups);
                    let o = c.b.ins().iadd(o, g);
                    let s_off = c.b.ins().imul_imm_s(i, 4 * plane);
                    let d_off = c.b.ins().imul_imm_s(o, 4 * plane);
                    let s = c.b.ins().iadd(s_item, s_off);
                    let d = c.b.ins().iadd(d_item, d_off);
                    c.b.ins().call(c.copy, &[s, d, len]);
                });
            });
        }
        Op::MaxUnpool { .. } => {
            let desc_ptr = descriptor_ptr(c, desc, &node.name)?;
            let values = c.base(&locs[0]);
            let source = c.base(&locs[1]);
            let y = c.base(&out);
            c.b.ins().call(c.unpool, &[desc_ptr, values, source, y]);
        }
        Op::BatchNorm { .. } => {
            let channels = node.shape.0[1];
            let inner: usize = node.shape.0[2..].iter().product();
            let (src, dst) = (c.base(&locs[0]), c.base(&out));
            let sl = locs[0];
            let scale = c.weight_ptr(consts.a);
            let shift = c.weight_ptr(consts.b.unwrap_or(consts.a));
            c.for_range(batch as i64, |c, nn| {
                let s_item = c.item(src, nn, sl.batch_stride);
                let d_item = c.item(dst, nn, out.batch_stride);
                c.for_range(channels as i64, |c, ch| {
                    let sa = c.elem(scale, ch);
                    let s = c.b.ins().load(types::F32, flags(), sa, 0);
                    let ta = c.elem(shift, ch);
                    let t = c.b.ins().load(types::F32, flags(), ta, 0);
                    let plane = c.b.ins().imul_imm_s(ch, (4 * inner) as i64);
                    let sp = c.b.ins().iadd(s_item, plane);
                    let dp = c.b.ins().iadd(d_item, plane);
                    c.for_range(inner as i64, |c, i| {
                        let a = c.elem(sp, i);
                        let x = c.b.ins().load(types::F32, flags(), a, 0);
                        let y = c.b.ins().fma(x, s, t);
                        let a = c.elem(dp, i);
                        c.b.ins().store(flags(), y, a, 0);
                    });
                });
            });
        }
        Op::Concat => {
            let inner: usize = node.shape.0[2..].iter().product();
            let dst_base = c.base(&out);
            let mut channel = 0;
            for (&p, l) in operands.iter().zip(&locs) {
                if !graph.g[p].placed_in(n) {
                    let src_base = c.base(l);
                    let slot = c.b.ins().iadd_imm_s(dst_base, (4 * channel * inner) as i64);
                    let dst = TensorLoc {
                        item: l.item,
                        ..out
                    };
                    copy_items(c, src_base, l, slot, &dst, batch);
                }
                channel += graph.g[p].shape.0[1];
            }
        }
        Op::Slice { .. } | Op::Flatten | Op::Identity => {}
        Op::Softmax => {
            let (src, dst) = (c.base(&locs[0]), c.base(&out));
            let channels = node.shape.0[1] as i64;
            let inner: i64 = node.shape.0[2..].iter().product::<usize>() as i64;
            let args = [
                src,
                dst,
                c.iconst(batch as i64),
                c.iconst(channels),
                c.iconst(inner),
                c.iconst(locs[0].batch_stride as i64),
                c.iconst(out.batch_stride as i64),
            ];
            c.b.ins().call(c.softmax, &args);
        }
        // Adaptive pools over whole cells run in the runtime (the code
        // generator gave them a descriptor); others as generated loops.
        Op::GlobalAvgPool | Op::AdaptiveAvgPool { .. } if desc.is_none() => adaptive_pool(
            c,
            &locs[0],
            &out,
            &graph.g[operands[0]].shape.0,
            &node.shape.0,
        ),
        Op::Pool(_) | Op::GlobalAvgPool | Op::AdaptiveAvgPool { .. } | Op::Resize { .. } => {
            let desc_ptr = descriptor_ptr(c, desc, &node.name)?;
            let x = c.base(&locs[0]);
            let y = c.base(&out);
            let f = if matches!(op, Op::Resize { .. }) {
                c.resize
            } else {
                c.pool
            };
            c.b.ins().call(f, &[desc_ptr, x, y]);
        }
    }
    Ok(())
}

/// Adaptive (and global) average pooling: cell `i` averages rows
/// `floor(i·H/OH) .. ceil((i+1)·H/OH)`.
fn adaptive_pool(
    c: &mut Ctx,
    src: &TensorLoc,
    dst: &TensorLoc,
    in_shape: &[usize],
    out_shape: &[usize],
) {
    let (channels, h, w) = (in_shape[1] as i64, in_shape[2] as i64, in_shape[3] as i64);
    let (oh_n, ow_n) = (out_shape[2] as i64, out_shape[3] as i64);
    let bounds = |c: &mut Ctx, i: Value, size: i64, out: i64| {
        let lo = c.b.ins().imul_imm_s(i, size);
        let lo = c.b.ins().udiv_imm_u(lo, out);
        let hi = c.b.ins().iadd_imm_s(i, 1);
        let hi = c.b.ins().imul_imm_s(hi, size);
        let hi = c.b.ins().iadd_imm_s(hi, out - 1);
        let hi = c.b.ins().udiv_imm_u(hi, out);
        (lo, hi)
    };
    let planes_len = (h * w, oh_n * ow_n);
    c.for_each_plane(
        (src, dst),
        out_shape[0],
        channels,
        planes_len,
        |c, s_plane, d_plane| {
            c.for_range(oh_n, |c, oh| {
                let (h0, h1) = bounds(c, oh, h, oh_n);
                c.for_range(ow_n, |c, ow| {
                    let (w0, w1) = bounds(c, ow, w, ow_n);
                    let acc = c.b.declare_var(types::F32);
                    let zero = c.fconst(0.0);
                    c.b.def_var(acc, zero);
                    // Loop ih in h0..h1 as i in 0..h with a range test: the
                    // bounds are dynamic, the loop limits stay constant.
                    c.for_range(h, |c, ih| {
                        let ge = c.b.ins().icmp(IntCC::SignedGreaterThanOrEqual, ih, h0);
                        let lt = c.b.ins().icmp(IntCC::SignedLessThan, ih, h1);
                        let in_rows = c.b.ins().band(ge, lt);
                        c.when(in_rows, |c| {
                            c.for_between(Some(w0), w, |c, iw| {
                                let lt = c.b.ins().icmp(IntCC::SignedLessThan, iw, w1);
                                c.when(lt, |c| {
                                    let row = c.b.ins().imul_imm_s(ih, w);
                                    let idx = c.b.ins().iadd(row, iw);
                                    let a = c.elem(s_plane, idx);
                                    let v = c.b.ins().load(types::F32, flags(), a, 0);
                                    let old = c.b.use_var(acc);
                                    let new = c.b.ins().fadd(old, v);
                                    c.b.def_var(acc, new);
                                });
                            });
                        });
                    });
                    let dh = c.b.ins().isub(h1, h0);
                    let dw = c.b.ins().isub(w1, w0);
                    let cnt = c.b.ins().imul(dh, dw);
                    let cnt = c.b.ins().fcvt_from_sint(types::F32, cnt);
                    let sum = c.b.use_var(acc);
                    let v = c.b.ins().fdiv(sum, cnt);
                    let row = c.b.ins().imul_imm_s(oh, ow_n);
                    let idx = c.b.ins().iadd(row, ow);
                    let a = c.elem(d_plane, idx);
                    c.b.ins().store(flags(), v, a, 0);
                });
            });
        },
    );
}
