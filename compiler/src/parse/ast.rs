//! The syntax tree of a `.net` file, every node carrying its source span.

use crate::source::Span;

#[derive(Clone, Debug)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct File {
    pub imports: Vec<Import>,
    pub blocks: Vec<BlockDef>,
    pub models: Vec<ModelDef>,
}

#[derive(Clone, Debug)]
pub struct Import {
    pub path: String,
    pub span: Span,
}

/// `block name(params)(inputs) { body }`
#[derive(Clone, Debug)]
pub struct BlockDef {
    pub name: Ident,
    pub params: Vec<Param>,
    pub inputs: Vec<Ident>,
    pub body: Body,
}

#[derive(Clone, Debug)]
pub struct Param {
    pub name: Ident,
    pub default: Option<Expr>,
}

/// `model name(x: [N, 3, 224, 224]) { body }`
#[derive(Clone, Debug)]
pub struct ModelDef {
    pub name: Ident,
    pub inputs: Vec<ModelInput>,
    pub body: Body,
}

#[derive(Clone, Debug)]
pub struct ModelInput {
    pub name: Ident,
    pub dims: Vec<Dim>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub enum Dim {
    /// The symbolic batch `N`, bound at compile time.
    Batch(Span),
    Fixed(u64, Span),
    /// A size left open with its default (`H: 520`), bound by `--size`.
    Symbol {
        name: Ident,
        default: u64,
        span: Span,
    },
}

#[derive(Clone, Debug)]
pub struct Body {
    pub stmts: Vec<Stmt>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub enum Stmt {
    Assign { name: Ident, value: Expr },
    Expr(Expr),
    Return { values: Vec<Expr>, span: Span },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnOp {
    Neg,
    Not,
}

#[derive(Clone, Debug)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub enum ExprKind {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    Name(String),
    Call {
        callee: Ident,
        args: Vec<Arg>,
    },
    List(Vec<Expr>),
    /// `a -> b`: apply the layer `b` to the tensor (or compose with the layer) `a`.
    Pipe(Box<Expr>, Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    Unary(UnOp, Box<Expr>),
    /// `layer as name`: the name segment of a layer's parameters.
    Label(Box<Expr>, Ident),
    If(Box<Expr>, Box<Expr>, Box<Expr>),
}

#[derive(Clone, Debug)]
pub struct Arg {
    pub name: Option<Ident>,
    pub value: Expr,
}
