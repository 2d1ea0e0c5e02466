//! Elaboration: evaluate a model's body, expanding blocks, sequences and
//! repetitions into a flat list of layers with concrete shapes and names.
//!
//! Values are integers, floats, booleans, strings, lists, tensors and
//! layers. A layer is a value until it is applied to a tensor with `->`;
//! only then is its input shape known, so op attributes that depend on the
//! input (a conv's input channels) are resolved at application.
//!
//! Naming: a layer's parameters live under `scope.segment.role`, where the
//! scope is the path of the enclosing block instances and the segment is the
//! layer's `as` label, else the name of the statement that applies it, else
//! its index in a sequence.

// The catch-alls here are over the elaborator's own values: "expected an
// integer, found <any other kind>" is the type error whatever the kind.
// Ops are matched in `ir::op` and `check::ops`, where the lint is denied.
#![allow(clippy::wildcard_enum_match_arm)]

use super::network::*;
use super::ops::{self, BoundArgs, OpArg};
use crate::diag::Diagnostic;
use crate::ir::builtin::Builtin;
use crate::ir::op::{Op, PoolKind};
use crate::ir::shape::Shape;
use crate::parse::ast::*;
use crate::source::{CallPath, Frame, Span};
use crate::units::human_bytes;
use std::collections::HashMap;
use std::rc::Rc;

/// Limits that keep a hostile model from exhausting the machine.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest single tensor, in bytes.
    pub max_tensor_bytes: u64,
    /// Most layers a model may expand to.
    pub max_layers: usize,
    /// Deepest block call nesting.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_tensor_bytes: 16 << 30,
            max_layers: 200_000,
            max_depth: 64,
        }
    }
}

#[derive(Clone, Debug)]
pub(super) enum Value {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    List(Vec<(Value, Span)>),
    Tensor(TensorId),
    Layer(Rc<LayerVal>),
}

impl Value {
    /// The value as an op argument.
    fn into_arg(self) -> OpArg {
        match self {
            Value::Int(v) => OpArg::Int(v),
            Value::Float(v) => OpArg::Float(v),
            Value::Bool(v) => OpArg::Bool(v),
            Value::Str(v) => OpArg::Str(v),
            Value::List(items) => OpArg::List(
                items
                    .into_iter()
                    .map(|(v, sp)| (v.into_arg(), sp))
                    .collect(),
            ),
            other @ (Value::Tensor(_) | Value::Layer(_)) => OpArg::Other(other.kind()),
        }
    }

    pub(super) fn kind(&self) -> &'static str {
        match self {
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Bool(_) => "a boolean",
            Value::Str(_) => "a string",
            Value::List(_) => "a list",
            Value::Tensor(_) => "a tensor",
            Value::Layer(_) => "a layer",
        }
    }
}

#[derive(Debug)]
pub(super) struct LayerVal {
    kind: LayerKind,
    label: Option<String>,
    span: Span,
}

#[derive(Debug)]
enum LayerKind {
    Op {
        builtin: Builtin,
        args: BoundArgs,
    },
    Block {
        index: usize,
        args: Vec<Option<(Value, Span)>>,
    },
    /// A sequence: element `i` is named by its index.
    Seq(Vec<Rc<LayerVal>>),
    /// `a -> b` of two layers: applied in order under the same name.
    Chain(Vec<Rc<LayerVal>>),
    /// `repeat(n, layer)`: spliced into an enclosing sequence.
    Repeat(usize, Rc<LayerVal>),
    /// `add(y)`, `concat(a, b)`: the piped tensor (if any) comes first.
    Merge {
        op: Op,
        others: Vec<TensorId>,
    },
}

/// A block definition and the file it came from.
pub(super) struct BlockRef<'a> {
    pub def: &'a BlockDef,
}

pub(super) struct Elaborator<'a> {
    pub blocks: Vec<BlockRef<'a>>,
    pub block_index: HashMap<&'a str, usize>,
    pub net: Network,
    pub limits: Limits,
    param_names: HashMap<String, Span>,
    layer_names: HashMap<String, usize>,
    auto_names: HashMap<String, usize>,
    /// The blocks being instantiated, outermost first.
    call_stack: Vec<Call>,
}

/// One block instantiation in progress: which block, the expression that
/// called it, and the name prefix its layers get.
struct Call {
    block: usize,
    span: Span,
    prefix: String,
}

#[derive(Clone)]
struct Scope {
    vars: HashMap<String, (Value, Span)>,
    prefix: String,
}

type R<T> = Result<T, Diagnostic>;

/// Where a layer is created: its name path, whether that path came from a
/// label, statement or index (`named`), its source and parameter renames.
struct Site<'r> {
    path: String,
    named: bool,
    span: Span,
    renames: &'r [(String, String)],
}

fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ => format!("{a}.{b}"),
    }
}

const BUILTIN_FUNCTIONS: &[&str] = &["channels", "height", "width", "min", "max", "repeat"];

impl<'a> Elaborator<'a> {
    pub fn new(blocks: Vec<BlockRef<'a>>, limits: Limits) -> R<Self> {
        let mut block_index = HashMap::new();
        for (i, b) in blocks.iter().enumerate() {
            let name = b.def.name.name.as_str();
            if Builtin::from_name(name).is_some() || BUILTIN_FUNCTIONS.contains(&name) {
                return Err(Diagnostic::new(
                    b.def.name.span,
                    format!("block `{name}` has the name of a built-in op or function"),
                ));
            }
            if let Some(&j) = block_index.get(name) {
                let first: &BlockRef = &blocks[j];
                return Err(Diagnostic::new(
                    b.def.name.span,
                    format!("block `{name}` is defined twice"),
                )
                .related(first.def.name.span, "first defined here"));
            }
            let mut seen: HashMap<&str, Span> = HashMap::new();
            for p in b
                .def
                .params
                .iter()
                .map(|p| &p.name)
                .chain(b.def.inputs.iter())
            {
                if let Some(first) = seen.insert(p.name.as_str(), p.span) {
                    return Err(Diagnostic::new(
                        p.span,
                        format!("parameter `{}` is declared twice in block `{name}`", p.name),
                    )
                    .related(first, "first declared here"));
                }
            }
            if b.def.inputs.len() != 1 {
                let span = b.def.inputs.get(1).map_or(b.def.name.span, |i| i.span);
                return Err(Diagnostic::new(
                    span,
                    format!(
                        "block `{name}` declares {} inputs; blocks take exactly one input tensor",
                        b.def.inputs.len()
                    ),
                )
                .note("pass further tensors to a block as parameters"));
            }
            block_index.insert(name, i);
        }
        Ok(Elaborator {
            blocks,
            block_index,
            net: Network {
                name: String::new(),
                batch: 1,
                tensors: Vec::new(),
                inputs: Vec::new(),
                layers: Vec::new(),
                outputs: Vec::new(),
            },
            limits,
            param_names: HashMap::new(),
            layer_names: HashMap::new(),
            auto_names: HashMap::new(),
            call_stack: Vec::new(),
        })
    }

    /// Elaborate `model` at `batch`; `size` binds the open spatial sizes
    /// (`H: 520`) of every input, which otherwise take their defaults.
    pub fn model(&mut self, model: &ModelDef, batch: usize, size: Option<[usize; 2]>) -> R<()> {
        self.net.name = model.name.name.clone();
        self.net.batch = batch;
        let mut scope = Scope {
            vars: HashMap::new(),
            prefix: String::new(),
        };
        for input in &model.inputs {
            let mut dims = Vec::new();
            let mut saw_batch = false;
            let rank = input.dims.len();
            for (i, d) in input.dims.iter().enumerate() {
                match d.clone() {
                    Dim::Symbol {
                        name,
                        default,
                        span,
                    } => {
                        if rank != 4 || i < 2 {
                            return Err(Diagnostic::new(
                                span,
                                format!("only the height and width of an `[N, C, H, W]` input can be left open (`{}`)", name.name),
                            ));
                        }
                        let v = match size {
                            Some(s) => s[i - 2] as u64,
                            None => default,
                        };
                        if v == 0 || v > u32::MAX as u64 {
                            return Err(Diagnostic::new(
                                span,
                                format!(
                                    "`{}` must be between 1 and {}, found {v}",
                                    name.name,
                                    u32::MAX
                                ),
                            ));
                        }
                        dims.push(v as usize);
                    }
                    Dim::Batch(span) => {
                        if i != 0 || saw_batch {
                            return Err(Diagnostic::new(
                                span,
                                "the batch dimension `N` must be the first dimension",
                            ));
                        }
                        saw_batch = true;
                        dims.push(batch);
                    }
                    Dim::Fixed(v, span) => {
                        if size.is_some() && rank == 4 && i >= 2 {
                            return Err(Diagnostic::new(
                                span,
                                "`--size` was given, but this input's height and width are fixed; write them as `H: …, W: …` to leave them open",
                            ));
                        }
                        if v == 0 || v > u32::MAX as u64 {
                            return Err(Diagnostic::new(
                                span,
                                format!("dimension must be between 1 and {}, found {v}", u32::MAX),
                            ));
                        }
                        dims.push(v as usize);
                    }
                }
            }
            if !(dims.len() == 2 || dims.len() == 4) {
                return Err(Diagnostic::new(
                    input.span,
                    format!(
                        "model inputs are rank 4 `[N, C, H, W]` or rank 2 `[N, F]`, found rank {}",
                        dims.len()
                    ),
                ));
            }
            let shape = Shape(dims);
            self.check_size(&shape, input.span)?;
            let rf = (shape.rank() == 4).then_some(ReceptiveField {
                size: [1, 1],
                jump: [1, 1],
            });
            let t = self.new_tensor(shape, rf);
            if scope.vars.contains_key(&input.name.name) {
                return Err(Diagnostic::new(
                    input.name.span,
                    format!("input `{}` is declared twice", input.name.name),
                ));
            }
            scope
                .vars
                .insert(input.name.name.clone(), (Value::Tensor(t), input.name.span));
            self.net.inputs.push(NetInput {
                name: input.name.name.clone(),
                tensor: t,
            });
        }
        let outputs = self.body(&model.body, &mut scope)?;
        let mut seen = Vec::new();
        for (v, span) in outputs {
            let t = self.expect_tensor(v, span)?;
            if seen.contains(&t) {
                return Err(Diagnostic::new(span, "the same tensor is returned twice"));
            }
            seen.push(t);
        }
        self.net.outputs = seen;
        Ok(())
    }

    /// Run a body's statements; returns the values it yields.
    fn body(&mut self, body: &Body, scope: &mut Scope) -> R<Vec<(Value, Span)>> {
        let mut result: Option<Vec<(Value, Span)>> = None;
        for (i, stmt) in body.stmts.iter().enumerate() {
            if result.is_some() {
                let span = match stmt {
                    Stmt::Assign { name, .. } => name.span,
                    Stmt::Expr(e) => e.span,
                    Stmt::Return { span, .. } => *span,
                };
                return Err(Diagnostic::new(
                    span,
                    "unreachable statement after the body's result",
                ));
            }
            let last = i + 1 == body.stmts.len();
            match stmt {
                Stmt::Assign { name, value } => {
                    if let Some((_, first)) = scope.vars.get(&name.name) {
                        return Err(Diagnostic::new(
                            name.span,
                            format!("`{}` is already defined in this scope", name.name),
                        )
                        .related(*first, "first defined here"));
                    }
                    let v = self.eval(value, scope, Some(&name.name))?;
                    let v = match v {
                        // A named merge is the tensor it produces.
                        Value::Layer(l) if matches!(l.kind, LayerKind::Merge { .. }) => {
                            Value::Tensor(self.apply(
                                &l,
                                None,
                                &scope.prefix.clone(),
                                Some(&name.name),
                            )?)
                        }
                        v => v,
                    };
                    scope.vars.insert(name.name.clone(), (v.clone(), name.span));
                    if last {
                        result = Some(vec![(v, value.span)]);
                    }
                }
                Stmt::Expr(e) => {
                    let v = self.eval(e, scope, None)?;
                    let v = self.materialize(v, &scope.prefix)?;
                    if last {
                        result = Some(vec![(v, e.span)]);
                    } else if !matches!(v, Value::Tensor(_)) {
                        return Err(Diagnostic::new(
                            e.span,
                            format!("this statement computes {} and discards it", v.kind()),
                        ));
                    }
                }
                Stmt::Return { values, .. } => {
                    let mut out = Vec::new();
                    for e in values {
                        let v = self.eval(e, scope, None)?;
                        out.push((self.materialize(v, &scope.prefix)?, e.span));
                    }
                    result = Some(out);
                }
            }
        }
        result.ok_or_else(|| {
            Diagnostic::new(
                body.span,
                "this body computes nothing; it must end with an expression or `return`",
            )
        })
    }

    fn lookup(&mut self, name: &str, span: Span, scope: &mut Scope) -> R<Value> {
        if let Some((v, _)) = scope.vars.get(name) {
            return Ok(v.clone());
        }
        // A bare op or block name is that layer with default arguments.
        if Builtin::from_name(name).is_some() || self.block_index.contains_key(name) {
            return self.call(
                &Ident {
                    name: name.to_string(),
                    span,
                },
                &[],
                span,
                scope,
            );
        }
        let mut known: Vec<&str> = scope.vars.keys().map(String::as_str).collect();
        known.extend(self.block_index.keys().copied());
        known.extend(Builtin::ALL.iter().map(|b| b.name()));
        let mut d = Diagnostic::new(span, format!("unknown name `{name}`"));
        if let Some(s) = suggest(name, &known) {
            d = d.note(format!("did you mean `{s}`?"));
        }
        Err(d)
    }

    /// Evaluate an expression. `segment` is the name of the enclosing
    /// assignment, used for layers applied here that have no label.
    fn eval(&mut self, e: &Expr, scope: &mut Scope, segment: Option<&str>) -> R<Value> {
        match &e.kind {
            ExprKind::Int(v) => Ok(Value::Int(*v)),
            ExprKind::Float(v) => {
                if v.is_finite() {
                    Ok(Value::Float(*v))
                } else {
                    Err(Diagnostic::new(e.span, "number is out of range"))
                }
            }
            ExprKind::Bool(v) => Ok(Value::Bool(*v)),
            ExprKind::Str(s) => Ok(Value::Str(s.clone())),
            ExprKind::Name(n) => self.lookup(n, e.span, scope),
            ExprKind::List(items) => {
                let mut out = Vec::new();
                for it in items {
                    out.push((self.eval(it, scope, None)?, it.span));
                }
                Ok(Value::List(out))
            }
            ExprKind::Call { callee, args } => self.call(callee, args, e.span, scope),
            ExprKind::Label(inner, label) => {
                let v = self.eval(inner, scope, segment)?;
                let layer = self.layer_of(v, inner.span)?;
                Ok(Value::Layer(Rc::new(LayerVal {
                    kind: match Rc::try_unwrap(layer) {
                        Ok(l) => l.kind,
                        Err(shared) => LayerKind::Chain(vec![shared]),
                    },
                    label: Some(label.name.clone()),
                    span: e.span,
                })))
            }
            ExprKind::Pipe(lhs, rhs) => {
                let l = self.eval(lhs, scope, segment)?;
                let r = self.eval(rhs, scope, segment)?;
                let layer = self.layer_of(r, rhs.span)?;
                match l {
                    Value::Tensor(t) => {
                        let prefix = scope.prefix.clone();
                        Ok(Value::Tensor(self.apply(
                            &layer,
                            Some(t),
                            &prefix,
                            segment,
                        )?))
                    }
                    Value::Layer(first) if !matches!(first.kind, LayerKind::Merge { .. }) => {
                        Ok(Value::Layer(Rc::new(LayerVal {
                            kind: LayerKind::Chain(vec![first, layer]),
                            label: None,
                            span: e.span,
                        })))
                    }
                    Value::Layer(merge) => {
                        let prefix = scope.prefix.clone();
                        let t = self.apply(&merge, None, &prefix, segment)?;
                        Ok(Value::Tensor(self.apply(
                            &layer,
                            Some(t),
                            &prefix,
                            segment,
                        )?))
                    }
                    other => Err(Diagnostic::new(
                        lhs.span,
                        format!(
                            "the left side of `->` must be a tensor or a layer, found {}",
                            other.kind()
                        ),
                    )),
                }
            }
            ExprKind::If(c, a, b) => {
                let cond = match self.eval(c, scope, None)? {
                    Value::Bool(b) => b,
                    other => {
                        return Err(Diagnostic::new(
                            c.span,
                            format!("condition must be a boolean, found {}", other.kind()),
                        ))
                    }
                };
                self.eval(if cond { a } else { b }, scope, segment)
            }
            ExprKind::Unary(op, inner) => {
                let v = self.eval(inner, scope, None)?;
                match (op, v) {
                    (UnOp::Neg, Value::Int(i)) => i
                        .checked_neg()
                        .map(Value::Int)
                        .ok_or_else(|| Diagnostic::new(e.span, "integer overflow")),
                    (UnOp::Neg, Value::Float(f)) => Ok(Value::Float(-f)),
                    (UnOp::Not, Value::Bool(b)) => Ok(Value::Bool(!b)),
                    (op, v) => Err(Diagnostic::new(
                        e.span,
                        format!(
                            "`{}` cannot be applied to {}",
                            if *op == UnOp::Neg { "-" } else { "!" },
                            v.kind()
                        ),
                    )),
                }
            }
            ExprKind::Binary(op, l, r) => {
                let lv = self.eval(l, scope, None)?;
                // `&&` and `||` short-circuit, so guards like
                // `stride != 1 || channels(x) != c` read naturally.
                match (op, &lv) {
                    (BinOp::And, Value::Bool(false)) => return Ok(Value::Bool(false)),
                    (BinOp::Or, Value::Bool(true)) => return Ok(Value::Bool(true)),
                    _ => {}
                }
                let rv = self.eval(r, scope, None)?;
                binary(*op, lv, rv, e.span)
            }
        }
    }

    fn call(&mut self, callee: &Ident, args: &[Arg], span: Span, scope: &mut Scope) -> R<Value> {
        let name = callee.name.as_str();
        if scope.vars.contains_key(name) {
            return Err(Diagnostic::new(
                callee.span,
                format!("`{name}` is a value, not an op or block, and cannot be called"),
            ));
        }
        let mut positional = Vec::new();
        let mut named: Vec<(&Ident, Value, Span)> = Vec::new();
        for a in args {
            let v = self.eval(&a.value, scope, None)?;
            match &a.name {
                Some(n) => {
                    if named.iter().any(|(m, _, _)| m.name == n.name) {
                        return Err(Diagnostic::new(
                            n.span,
                            format!("argument `{}` is given twice", n.name),
                        ));
                    }
                    named.push((n, v, a.value.span));
                }
                None => {
                    if !named.is_empty() {
                        return Err(Diagnostic::new(
                            a.value.span,
                            "positional arguments must come before named ones",
                        ));
                    }
                    positional.push((v, a.value.span));
                }
            }
        }
        if let Some(v) = self.builtin_function(name, &positional, &named, span)? {
            return Ok(v);
        }
        let builtin = Builtin::from_name(name);
        if let Some(builtin) = builtin.filter(|b| b.is_merge()) {
            if let Some((n, _, _)) = named.first() {
                return Err(Diagnostic::new(
                    n.span,
                    format!("`{name}` takes only tensors, found argument `{}`", n.name),
                ));
            }
            let mut others = Vec::new();
            for (v, sp) in positional {
                others.push(self.expect_tensor(v, sp)?);
            }
            let op = ops::build(builtin, &BoundArgs::default(), &Shape(Vec::new()), span)?.op;
            return Ok(Value::Layer(Rc::new(LayerVal {
                kind: LayerKind::Merge { op, others },
                label: None,
                span,
            })));
        }
        if let Some(builtin) = builtin {
            let positional = positional
                .into_iter()
                .map(|(v, sp)| (v.into_arg(), sp))
                .collect();
            let named = named
                .into_iter()
                .map(|(n, v, sp)| (n, v.into_arg(), sp))
                .collect();
            let args = ops::bind(callee, builtin, positional, named)?;
            return Ok(Value::Layer(Rc::new(LayerVal {
                kind: LayerKind::Op { builtin, args },
                label: None,
                span,
            })));
        }
        if let Some(&index) = self.block_index.get(name) {
            let def = self.blocks[index].def;
            let mut bound: Vec<Option<(Value, Span)>> = vec![None; def.params.len()];
            if positional.len() > def.params.len() {
                return Err(Diagnostic::new(
                    positional[def.params.len()].1,
                    format!(
                        "block `{name}` takes {} parameter{}, found {} arguments",
                        def.params.len(),
                        if def.params.len() == 1 { "" } else { "s" },
                        positional.len()
                    ),
                ));
            }
            for (i, p) in positional.into_iter().enumerate() {
                bound[i] = Some(p);
            }
            for (n, v, sp) in named {
                let Some(i) = def.params.iter().position(|p| p.name.name == n.name) else {
                    let names: Vec<&str> =
                        def.params.iter().map(|p| p.name.name.as_str()).collect();
                    let mut d = Diagnostic::new(
                        n.span,
                        format!("block `{name}` has no parameter `{}`", n.name),
                    );
                    d = d.note(format!("its parameters are: {}", names.join(", ")));
                    return Err(d);
                };
                if bound[i].is_some() {
                    return Err(Diagnostic::new(
                        n.span,
                        format!(
                            "parameter `{}` is given both by position and by name",
                            n.name
                        ),
                    ));
                }
                bound[i] = Some((v, sp));
            }
            // Defaults may refer to earlier parameters, so they are evaluated
            // when the block is applied; here only check nothing is missing.
            for (i, p) in def.params.iter().enumerate() {
                if bound[i].is_none() && p.default.is_none() {
                    return Err(Diagnostic::new(
                        span,
                        format!(
                            "block `{name}` needs a value for parameter `{}`",
                            p.name.name
                        ),
                    )
                    .related(p.name.span, "declared here without a default"));
                }
            }
            return Ok(Value::Layer(Rc::new(LayerVal {
                kind: LayerKind::Block { index, args: bound },
                label: None,
                span,
            })));
        }
        let mut known: Vec<&str> = self.block_index.keys().copied().collect();
        known.extend(Builtin::ALL.iter().map(|b| b.name()));
        known.extend(BUILTIN_FUNCTIONS.iter().copied());
        let mut d = Diagnostic::new(callee.span, format!("unknown op or block `{name}`"));
        if let Some(s) = suggest(name, &known) {
            d = d.note(format!("did you mean `{s}`?"));
        }
        Err(d)
    }

    fn builtin_function(
        &mut self,
        name: &str,
        positional: &[(Value, Span)],
        named: &[(&Ident, Value, Span)],
        span: Span,
    ) -> R<Option<Value>> {
        if !BUILTIN_FUNCTIONS.contains(&name) {
            return Ok(None);
        }
        if let Some((n, _, _)) = named.first() {
            return Err(Diagnostic::new(
                n.span,
                format!("`{name}` takes no named arguments"),
            ));
        }
        let arity = if matches!(name, "channels" | "height" | "width") {
            1
        } else {
            2
        };
        if positional.len() != arity {
            return Err(Diagnostic::new(
                span,
                format!(
                    "`{name}` takes {arity} argument{}, found {}",
                    if arity == 1 { "" } else { "s" },
                    positional.len()
                ),
            ));
        }
        let int_arg = |i: usize| -> R<i64> {
            match &positional[i].0 {
                Value::Int(v) => Ok(*v),
                other => Err(Diagnostic::new(
                    positional[i].1,
                    format!("`{name}` expects an integer, found {}", other.kind()),
                )),
            }
        };
        let v = match name {
            "channels" | "height" | "width" => {
                let t = self.expect_tensor(positional[0].0.clone(), positional[0].1)?;
                let shape = self.net.shape(t);
                let axis = match name {
                    "channels" => 1,
                    "height" => 2,
                    _ => 3,
                };
                let Some(&d) = shape.0.get(axis) else {
                    return Err(Diagnostic::new(
                        positional[0].1,
                        format!("`{name}` needs a rank-4 tensor, found shape {shape}"),
                    ));
                };
                Value::Int(d as i64)
            }
            "min" => Value::Int(int_arg(0)?.min(int_arg(1)?)),
            "max" => Value::Int(int_arg(0)?.max(int_arg(1)?)),
            _ => {
                let n = int_arg(0)?;
                if !(0..=10_000).contains(&n) {
                    return Err(Diagnostic::new(
                        positional[0].1,
                        format!("repeat count must be between 0 and 10000, found {n}"),
                    ));
                }
                let layer = self.layer_of(positional[1].0.clone(), positional[1].1)?;
                Value::Layer(Rc::new(LayerVal {
                    kind: LayerKind::Repeat(n as usize, layer),
                    label: None,
                    span,
                }))
            }
        };
        Ok(Some(v))
    }

    /// A standalone merge (`concat(a, b)`) is the tensor it produces.
    fn materialize(&mut self, v: Value, prefix: &str) -> R<Value> {
        match v {
            Value::Layer(l) if matches!(l.kind, LayerKind::Merge { .. }) => {
                Ok(Value::Tensor(self.apply(&l, None, prefix, None)?))
            }
            v => Ok(v),
        }
    }

    fn layer_of(&mut self, v: Value, span: Span) -> R<Rc<LayerVal>> {
        match v {
            Value::Layer(l) => Ok(l),
            Value::List(items) => {
                let mut layers = Vec::new();
                for (v, sp) in items {
                    layers.push(self.layer_of(v, sp)?);
                }
                Ok(Rc::new(LayerVal {
                    kind: LayerKind::Seq(layers),
                    label: None,
                    span,
                }))
            }
            other => Err(Diagnostic::new(
                span,
                format!("expected a layer, found {}", other.kind()),
            )),
        }
    }

    fn expect_tensor(&mut self, v: Value, span: Span) -> R<TensorId> {
        match v {
            Value::Tensor(t) => Ok(t),
            Value::Layer(l) if matches!(l.kind, LayerKind::Merge { .. }) => {
                self.apply(&l, None, "", None)
            }
            other => Err(Diagnostic::new(
                span,
                format!("expected a tensor, found {}", other.kind()),
            )),
        }
    }

    /// Apply a layer to `input` (absent only for a standalone merge).
    fn apply(
        &mut self,
        layer: &LayerVal,
        input: Option<TensorId>,
        prefix: &str,
        segment: Option<&str>,
    ) -> R<TensorId> {
        let segment = layer.label.as_deref().or(segment);
        let need_input = |input: Option<TensorId>| {
            input.ok_or_else(|| Diagnostic::new(layer.span, "this layer has no input tensor"))
        };
        match &layer.kind {
            LayerKind::Op { builtin, args } => {
                let name = builtin.name();
                let x = need_input(input)?;
                let shape = self.net.shape(x).clone();
                let built = ops::build(*builtin, args, &shape, layer.span)?;
                let path = join(prefix, segment.unwrap_or(""));
                let site = Site {
                    path,
                    named: segment.is_some(),
                    span: layer.span,
                    renames: &built.renames,
                };
                self.push_layer(site, name, built.op, vec![x])
            }
            LayerKind::Merge { op, others } => {
                let mut inputs: Vec<TensorId> =
                    input.into_iter().chain(others.iter().copied()).collect();
                let mut op = op.clone();
                if let Op::MaxUnpool { .. } = op {
                    (op, inputs) = self.unpool_source(inputs, layer.span)?;
                }
                if inputs.len() < 2 {
                    return Err(Diagnostic::new(
                        layer.span,
                        format!(
                            "`{}` needs at least two tensors, found {}",
                            op.name(),
                            inputs.len()
                        ),
                    ));
                }
                let path = join(prefix, segment.unwrap_or(""));
                let site = Site {
                    path,
                    named: segment.is_some(),
                    span: layer.span,
                    renames: &[],
                };
                self.push_layer(site, op.name(), op, inputs)
            }
            LayerKind::Seq(items) => {
                let mut x = need_input(input)?;
                let Some(segment) = segment else {
                    // An anonymous sequence (in a call argument or a bare
                    // expression) has no name to index under: its layers
                    // are named like any unlabelled layer, by their kind.
                    for item in items {
                        x = self.apply(item, Some(x), prefix, None)?;
                    }
                    return Ok(x);
                };
                let base = join(prefix, segment);
                let mut index = 0usize;
                for item in items {
                    x = self.apply_seq_item(item, x, &base, &mut index)?;
                }
                Ok(x)
            }
            LayerKind::Repeat(n, inner) => {
                let mut x = need_input(input)?;
                let base = join(prefix, segment.unwrap_or(""));
                for i in 0..*n {
                    x = self.apply(inner, Some(x), &base, Some(&i.to_string()))?;
                }
                Ok(x)
            }
            LayerKind::Chain(items) => {
                let mut x = need_input(input)?;
                for item in items {
                    x = self.apply(item, Some(x), prefix, segment)?;
                }
                Ok(x)
            }
            LayerKind::Block { index, args } => {
                let x = need_input(input)?;
                self.apply_block(
                    *index,
                    args,
                    x,
                    join(prefix, segment.unwrap_or("")),
                    layer.span,
                )
            }
        }
    }

    /// `maxunpool(values, pooled)`: `pooled` must be a max pool's output.
    /// The op reads that pool's input instead (where the maxima are found
    /// again) and takes the pool's window.
    fn unpool_source(&self, inputs: Vec<TensorId>, span: Span) -> R<(Op, Vec<TensorId>)> {
        let [values, pooled] = inputs[..] else {
            return Err(Diagnostic::new(
                span,
                format!(
                    "`maxunpool` takes two tensors (the values and a max pool's output), found {}",
                    inputs.len()
                ),
            ));
        };
        let producer = self.net.layers.iter().find(|l| l.output == pooled);
        match producer {
            Some(layer) => match &layer.op {
                Op::Pool(p) if p.kind == PoolKind::Max => Ok((
                    Op::MaxUnpool {
                        window: p.window,
                        ceil: p.ceil,
                    },
                    vec![values, layer.inputs[0]],
                )),
                other => Err(Diagnostic::new(
                    span,
                    format!(
                        "`maxunpool`'s second tensor must be a max pool's output; this one comes from `{}`",
                        other.name()
                    ),
                )
                .related(layer.span, "produced here")),
            },
            None => Err(Diagnostic::new(
                span,
                "`maxunpool`'s second tensor must be a max pool's output; this one is a model input",
            )),
        }
    }

    fn apply_seq_item(
        &mut self,
        item: &Rc<LayerVal>,
        x: TensorId,
        base: &str,
        index: &mut usize,
    ) -> R<TensorId> {
        match &item.kind {
            // A repeat inside a sequence continues the sequence's numbering.
            LayerKind::Repeat(n, inner) if item.label.is_none() => {
                let mut x = x;
                for _ in 0..*n {
                    x = self.apply(inner, Some(x), base, Some(&index.to_string()))?;
                    *index += 1;
                }
                Ok(x)
            }
            _ => {
                let seg = index.to_string();
                *index += 1;
                self.apply(item, Some(x), base, Some(&seg))
            }
        }
    }

    fn apply_block(
        &mut self,
        index: usize,
        args: &[Option<(Value, Span)>],
        x: TensorId,
        prefix: String,
        span: Span,
    ) -> R<TensorId> {
        let def = self.blocks[index].def;
        if self.call_stack.iter().any(|c| c.block == index) {
            return Err(Diagnostic::new(
                span,
                format!(
                    "block `{}` calls itself (recursion is not allowed)",
                    def.name.name
                ),
            )
            .related(def.name.span, "defined here"));
        }
        if self.call_stack.len() >= self.limits.max_depth {
            return Err(Diagnostic::new(
                span,
                format!("blocks nested more than {} deep", self.limits.max_depth),
            ));
        }
        self.call_stack.push(Call {
            block: index,
            span,
            prefix: prefix.clone(),
        });
        let mut scope = Scope {
            vars: HashMap::new(),
            prefix,
        };
        scope.vars.insert(
            def.inputs[0].name.clone(),
            (Value::Tensor(x), def.inputs[0].span),
        );
        for (p, arg) in def.params.iter().zip(args) {
            let v = match (arg, &p.default) {
                (Some((v, _)), _) => v.clone(),
                (None, Some(d)) => self.eval(d, &mut scope, None)?,
                (None, None) => return Err(Diagnostic::new(span, "missing argument")),
            };
            scope.vars.insert(p.name.name.clone(), (v, p.name.span));
        }
        let result = self.body(&def.body, &mut scope);
        self.call_stack.pop();
        let mut result = result.map_err(|d| d.in_block(&def.name.name, span))?;
        if result.len() != 1 {
            return Err(Diagnostic::new(
                def.body.span,
                format!(
                    "a block returns exactly one tensor, this one returns {}",
                    result.len()
                ),
            ));
        }
        let (v, sp) = result.remove(0);
        self.expect_tensor(v, sp)
    }

    fn new_tensor(&mut self, shape: Shape, rf: Option<ReceptiveField>) -> TensorId {
        self.net.tensors.push(TensorInfo { shape, rf });
        self.net.tensors.len() - 1
    }

    fn check_size(&self, shape: &Shape, span: Span) -> R<()> {
        let bytes = shape
            .checked_numel()
            .and_then(|n| (n as u64).checked_mul(4));
        match bytes {
            Some(b) if b <= self.limits.max_tensor_bytes => Ok(()),
            _ => Err(Diagnostic::new(
                span,
                format!(
                    "tensor of shape {shape} would need {} of memory; the limit is {}",
                    bytes.map_or("more than 2^64 bytes".to_string(), human_bytes),
                    human_bytes(self.limits.max_tensor_bytes)
                ),
            )),
        }
    }

    fn push_layer(&mut self, site: Site, kind: &str, op: Op, inputs: Vec<TensorId>) -> R<TensorId> {
        let Site {
            path,
            named,
            span,
            renames,
        } = site;
        if self.net.layers.len() >= self.limits.max_layers {
            return Err(Diagnostic::new(
                span,
                format!(
                    "the model expands to more than {} layers",
                    self.limits.max_layers
                ),
            ));
        }
        let in_shapes: Vec<&Shape> = inputs.iter().map(|&t| self.net.shape(t)).collect();
        let shape = op
            .infer(&in_shapes)
            .map_err(|e| Diagnostic::new(span, e.to_string()))?;
        self.check_size(&shape, span)?;
        let rf = receptive_field(&op, &inputs, &self.net);
        let specs = op.params();
        let explicit = renames.iter().any(|(role, _)| role == "weight");
        let path = if !named && !specs.is_empty() && !explicit {
            // An unlabelled layer with parameters is named after its kind:
            // `conv`, then `conv_2`, ... within the enclosing scope.
            let base = join(&path, kind);
            let n = self.auto_names.entry(base.clone()).or_insert(0);
            *n += 1;
            if *n == 1 {
                base
            } else {
                format!("{base}_{n}")
            }
        } else {
            path
        };
        let mut params = Vec::new();
        for spec in specs {
            self.check_size(&spec.shape, span)?;
            let name = renames
                .iter()
                .find(|(role, _)| role == spec.role)
                .map(|(_, n)| n.clone())
                .unwrap_or_else(|| join(&path, spec.role));
            if let Some(first) = self.param_names.get(&name) {
                return Err(Diagnostic::new(
                    span,
                    format!("parameter name `{name}` is used twice"),
                )
                .related(*first, "first used here")
                .note("give one of the layers a different label with `as name`"));
            }
            self.param_names.insert(name.clone(), span);
            params.push(super::network::Param { name, spec });
        }
        let base = match renames.iter().find(|(role, _)| role == "weight") {
            // A layer whose weight has an explicit key is known by that key.
            Some((_, key)) if !named => key.clone(),
            _ if named || !params.is_empty() => path,
            _ => join(&path, kind),
        };
        // The frame shows the name as written, without the `#n` that
        // tells repeated param-less layers apart.
        let call_path = self.call_path(span, &base, kind);
        let name = self.unique_layer_name(base);
        let output = self.new_tensor(shape, rf);
        self.net.layers.push(Layer {
            name,
            op,
            inputs,
            output,
            span,
            call_path,
            params,
        });
        Ok(output)
    }

    /// The calls that led to a layer named `name` made at `span`, each
    /// frame named by the part of the layer's path it added (the block's
    /// name when it added none).
    fn call_path(&self, span: Span, name: &str, kind: &str) -> CallPath {
        fn relative<'n>(path: &'n str, parent: &str) -> &'n str {
            if parent.is_empty() {
                return path;
            }
            if path == parent {
                return "";
            }
            path.strip_prefix(parent)
                .and_then(|rest| rest.strip_prefix('.'))
                .unwrap_or(path)
        }
        let mut parent = "";
        let mut frames = Vec::with_capacity(self.call_stack.len() + 1);
        for call in &self.call_stack {
            let name = match relative(&call.prefix, parent) {
                "" => self.blocks[call.block].def.name.name.clone(),
                rest => rest.to_string(),
            };
            frames.push(Frame {
                span: call.span,
                name,
            });
            parent = &call.prefix;
        }
        frames.push(Frame {
            span,
            name: match relative(name, parent) {
                "" => kind.to_string(),
                rest => rest.to_string(),
            },
        });
        CallPath(frames)
    }

    /// Layer names are unique; param-less layers may share a path
    /// (`y = x -> relu -> relu`), so repeats get a `#n` suffix.
    fn unique_layer_name(&mut self, base: String) -> String {
        let n = self.layer_names.entry(base.clone()).or_insert(0);
        *n += 1;
        if *n == 1 {
            base
        } else {
            format!("{base}#{n}")
        }
    }
}

fn receptive_field(op: &Op, inputs: &[TensorId], net: &Network) -> Option<ReceptiveField> {
    let rfs: Vec<_> = inputs.iter().map(|&t| net.tensors[t].rf).collect();
    op.receptive_field(&rfs, net.shape(*inputs.first()?))
}

fn binary(op: BinOp, l: Value, r: Value, span: Span) -> R<Value> {
    use BinOp::*;
    let overflow = || Diagnostic::new(span, "integer overflow");
    let v = match (op, &l, &r) {
        (Add, Value::Int(a), Value::Int(b)) => Value::Int(a.checked_add(*b).ok_or_else(overflow)?),
        (Sub, Value::Int(a), Value::Int(b)) => Value::Int(a.checked_sub(*b).ok_or_else(overflow)?),
        (Mul, Value::Int(a), Value::Int(b)) => Value::Int(a.checked_mul(*b).ok_or_else(overflow)?),
        (Div | Rem, Value::Int(_), Value::Int(0)) => {
            return Err(Diagnostic::new(span, "division by zero"))
        }
        (Div, Value::Int(a), Value::Int(b)) => {
            Value::Int(a.checked_div_euclid(*b).ok_or_else(overflow)?)
        }
        (Rem, Value::Int(a), Value::Int(b)) => {
            Value::Int(a.checked_rem_euclid(*b).ok_or_else(overflow)?)
        }
        (
            Add | Sub | Mul | Div,
            Value::Int(_) | Value::Float(_),
            Value::Int(_) | Value::Float(_),
        ) => {
            let a = as_f64(&l);
            let b = as_f64(&r);
            let v = match op {
                Add => a + b,
                Sub => a - b,
                Mul => a * b,
                Div => a / b,
                Rem | Eq | Ne | Lt | Le | Gt | Ge | And | Or => f64::NAN,
            };
            if !v.is_finite() {
                return Err(Diagnostic::new(
                    span,
                    "arithmetic result is not a finite number",
                ));
            }
            Value::Float(v)
        }
        (
            Eq | Ne | Lt | Le | Gt | Ge,
            Value::Int(_) | Value::Float(_),
            Value::Int(_) | Value::Float(_),
        ) => {
            let (a, b) = (as_f64(&l), as_f64(&r));
            Value::Bool(match op {
                Eq => a == b,
                Ne => a != b,
                Lt => a < b,
                Le => a <= b,
                Gt => a > b,
                Ge => a >= b,
                Add | Sub | Mul | Div | Rem | And | Or => false,
            })
        }
        (Eq, Value::Bool(a), Value::Bool(b)) => Value::Bool(a == b),
        (Ne, Value::Bool(a), Value::Bool(b)) => Value::Bool(a != b),
        (Eq, Value::Str(a), Value::Str(b)) => Value::Bool(a == b),
        (Ne, Value::Str(a), Value::Str(b)) => Value::Bool(a != b),
        (And, Value::Bool(a), Value::Bool(b)) => Value::Bool(*a && *b),
        (Or, Value::Bool(a), Value::Bool(b)) => Value::Bool(*a || *b),
        _ => {
            return Err(Diagnostic::new(
                span,
                format!(
                    "operator `{}` cannot combine {} and {}",
                    op_symbol(op),
                    l.kind(),
                    r.kind()
                ),
            ))
        }
    };
    Ok(v)
}

fn as_f64(v: &Value) -> f64 {
    match v {
        Value::Int(i) => *i as f64,
        Value::Float(f) => *f,
        _ => f64::NAN,
    }
}

fn op_symbol(op: BinOp) -> &'static str {
    use BinOp::*;
    match op {
        Add => "+",
        Sub => "-",
        Mul => "*",
        Div => "/",
        Rem => "%",
        Eq => "==",
        Ne => "!=",
        Lt => "<",
        Le => "<=",
        Gt => ">",
        Ge => ">=",
        And => "&&",
        Or => "||",
    }
}

/// The closest known name within edit distance 2, for "did you mean".
fn suggest<'k>(name: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (edit_distance(name, k), *k))
        .filter(|(d, _)| *d <= 2 && *d < name.len())
        .min()
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}
