//! Parsing: `.net` source text → [`ast::File`], with spans on every node.
//!
//! The grammar is `grammar/net.pest`. Syntax errors become a [`Diagnostic`]
//! naming what was expected at the first position the grammar could not pass.

// The matches here are over pest's generated `Rule` enum: each lists the
// rules the grammar allows at that position, and the grammar guarantees no
// other can occur, so a catch-all there is the unreachable case, not a
// forgotten op. The crate denies the lint everywhere else.
#![allow(clippy::wildcard_enum_match_arm)]

pub mod ast;

use crate::diag::Diagnostic;
use crate::source::{FileId, Span};
use ast::*;
use pest::iterators::Pair;
use pest::Parser as _;

#[derive(pest_derive::Parser)]
#[grammar = "../../grammar/net.pest"]
struct NetParser;

/// Deeper bracket nesting than this is rejected before parsing: the parser is
/// recursive, and a hostile file of ten thousand `(` must not overflow the stack.
const MAX_NESTING: usize = 128;

/// Parse one source file.
pub fn parse(file: FileId, text: &str) -> Result<File, Diagnostic> {
    check_nesting(file, text)?;
    // Detailed errors record the literal tokens (`)`, `,`) the parser tried,
    // not only the rules, so messages can say "expected `)`".
    pest::set_error_detail(true);
    let mut pairs = NetParser::parse(Rule::file, text).map_err(|e| syntax_error(file, text, e))?;
    let Some(root) = pairs.next() else {
        return Err(Diagnostic::new(Span::new(file, 0, 0), "empty parse"));
    };
    let b = Builder { file };
    let mut out = File {
        imports: Vec::new(),
        blocks: Vec::new(),
        models: Vec::new(),
    };
    for item in root.into_inner() {
        match item.as_rule() {
            Rule::import => {
                let span = b.span(&item);
                let path = item
                    .into_inner()
                    .next()
                    .map(|s| b.string(s))
                    .unwrap_or_default();
                out.imports.push(Import { path, span });
            }
            Rule::block => out.blocks.push(b.block(item)),
            Rule::model => out.models.push(b.model(item)),
            _ => {}
        }
    }
    Ok(out)
}

fn check_nesting(file: FileId, text: &str) -> Result<(), Diagnostic> {
    let mut depth = 0usize;
    for (i, c) in text.char_indices() {
        match c {
            '(' | '[' | '{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(Diagnostic::new(
                        Span::new(file, i, i + 1),
                        format!("brackets nested more than {MAX_NESTING} deep"),
                    ));
                }
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

fn describe(rule: &Rule) -> &'static str {
    match rule {
        Rule::EOI => "end of file",
        Rule::import => "`import`",
        Rule::block => "`block`",
        Rule::model => "`model`",
        Rule::param_list | Rule::param => "a parameter",
        Rule::input_names => "an input name",
        Rule::model_input => "an input like `x: [N, 3, 224, 224]`",
        Rule::batch_dim => "`N`",
        Rule::sym_dim => "an open size like `H: 224`",
        Rule::body => "`{`",
        Rule::return_stmt => "",
        Rule::assign => "an assignment",
        Rule::expr_stmt | Rule::expr | Rule::pipe | Rule::if_expr => "an expression",
        Rule::or_expr | Rule::and_expr | Rule::cmp_expr | Rule::sum | Rule::product => {
            "an expression"
        }
        Rule::unary | Rule::labelled | Rule::keyword => "an expression",
        Rule::or_op | Rule::and_op | Rule::cmp_op | Rule::add_op | Rule::mul_op => "",
        Rule::prefix_op => "an expression",
        Rule::call => "a call",
        Rule::named_arg => "a named argument",
        Rule::list => "`[`",
        Rule::ident => "a name",
        Rule::label => "a label",
        Rule::int => "an integer",
        Rule::float => "a number",
        Rule::bool => "`true` or `false`",
        Rule::string | Rule::string_inner => "a string",
        Rule::kw_import => "`import`",
        Rule::kw_block => "`block`",
        Rule::kw_model => "`model`",
        Rule::kw_return => "",
        Rule::kw_if => "`if`",
        Rule::kw_then => "`then`",
        Rule::kw_else => "`else`",
        Rule::kw_as => "",
        _ => "",
    }
}

fn syntax_error(file: FileId, text: &str, e: pest::error::Error<Rule>) -> Diagnostic {
    use pest::error::{ErrorVariant, InputLocation};
    let start = match e.location {
        InputLocation::Pos(p) => p,
        InputLocation::Span((s, _)) => s,
    };
    // Point at the whole offending token, not just its first byte.
    let rest = &text[start.min(text.len())..];
    let token_len = rest
        .char_indices()
        .find(|&(_, c)| !(c.is_alphanumeric() || c == '_'))
        .map_or(rest.len(), |(i, _)| i)
        .max(rest.chars().next().map_or(0, char::len_utf8));
    let found = if rest.is_empty() {
        "end of file".to_string()
    } else {
        format!("`{}`", &rest[..token_len])
    };
    if rest.starts_with('"') && !rest.lines().next().unwrap_or("")[1..].contains('"') {
        let d = Diagnostic::new(Span::new(file, start, start + 1), "unterminated string");
        return d.note("a string ends with `\"` on the same line");
    }
    let message = match &e.variant {
        ErrorVariant::ParsingError { positives, .. } => {
            let mut expected: Vec<String> = Vec::new();
            if let Some(attempts) = e.parse_attempts() {
                for t in attempts.expected_tokens() {
                    let t = t.to_string();
                    // Only structural tokens help; operators and comment
                    // openers could follow almost anything.
                    if [")", "]", "}", "(", "[", "{", ",", ":", "=", "->"].contains(&t.as_str()) {
                        expected.push(format!("`{t}`"));
                    }
                }
            }
            let operator = positives.iter().any(|r| {
                matches!(
                    r,
                    Rule::or_op | Rule::and_op | Rule::cmp_op | Rule::add_op | Rule::mul_op
                )
            });
            for r in positives {
                let d = describe(r);
                if !d.is_empty() {
                    expected.push(d.to_string());
                }
            }
            if operator {
                expected.push("an operator".to_string());
            }
            // The `:` inside an open size (`H: 224`) is part of that form.
            if positives.contains(&Rule::sym_dim) {
                expected.retain(|t| t != "`:`");
            }
            expected.sort_unstable();
            expected.dedup();
            match expected.len() {
                0 => format!("syntax error: unexpected {found}"),
                1 => format!("expected {}, found {found}", expected[0]),
                _ => {
                    let (last, init) = match expected.split_last() {
                        Some((l, i)) => (l.as_str(), i),
                        None => ("", &[][..]),
                    };
                    format!("expected {} or {last}, found {found}", init.join(", "))
                }
            }
        }
        ErrorVariant::CustomError { message } => message.clone(),
    };
    Diagnostic::new(Span::new(file, start, start + token_len), message)
}

struct Builder {
    file: FileId,
}

impl Builder {
    fn span(&self, p: &Pair<Rule>) -> Span {
        let s = p.as_span();
        Span::new(self.file, s.start(), s.end())
    }

    fn ident(&self, p: Pair<Rule>) -> Ident {
        Ident {
            span: self.span(&p),
            name: p.as_str().to_string(),
        }
    }

    fn string(&self, p: Pair<Rule>) -> String {
        p.into_inner()
            .next()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default()
    }

    fn block(&self, p: Pair<Rule>) -> BlockDef {
        let mut it = p.into_inner();
        let mut name = None;
        let mut params = Vec::new();
        let mut inputs = Vec::new();
        let mut body = None;
        for q in it.by_ref() {
            match q.as_rule() {
                Rule::ident => name = Some(self.ident(q)),
                Rule::param_list => {
                    for param in q.into_inner() {
                        let mut pi = param.into_inner();
                        let pname = pi.next().map(|n| self.ident(n));
                        let default = pi.next().map(|e| self.expr(e));
                        if let Some(name) = pname {
                            params.push(Param { name, default });
                        }
                    }
                }
                Rule::input_names => inputs = q.into_inner().map(|n| self.ident(n)).collect(),
                Rule::body => body = Some(self.body(q)),
                _ => {}
            }
        }
        BlockDef {
            name: name.unwrap_or_else(|| self.missing_ident()),
            params,
            inputs,
            body: body.unwrap_or_else(|| self.empty_body()),
        }
    }

    fn model(&self, p: Pair<Rule>) -> ModelDef {
        let mut name = None;
        let mut inputs = Vec::new();
        let mut body = None;
        for q in p.into_inner() {
            match q.as_rule() {
                Rule::ident => name = Some(self.ident(q)),
                Rule::model_input => {
                    let span = self.span(&q);
                    let mut qi = q.into_inner();
                    let iname = qi.next().map(|n| self.ident(n));
                    let dims = qi
                        .map(|d| {
                            let sp = self.span(&d);
                            match d.as_rule() {
                                Rule::batch_dim => Dim::Batch(sp),
                                // `H: 520` (an atomic rule: split here).
                                Rule::sym_dim => {
                                    let text = d.as_str();
                                    let (name, default) =
                                        text.split_once(':').unwrap_or((text, ""));
                                    let name = name.trim_end();
                                    let start = d.as_span().start();
                                    Dim::Symbol {
                                        name: Ident {
                                            name: name.to_string(),
                                            span: Span::new(sp.file, start, start + name.len()),
                                        },
                                        default: default.trim().parse().unwrap_or(u64::MAX),
                                        span: sp,
                                    }
                                }
                                _ => Dim::Fixed(d.as_str().parse().unwrap_or(u64::MAX), sp),
                            }
                        })
                        .collect();
                    if let Some(name) = iname {
                        inputs.push(ModelInput { name, dims, span });
                    }
                }
                Rule::body => body = Some(self.body(q)),
                _ => {}
            }
        }
        ModelDef {
            name: name.unwrap_or_else(|| self.missing_ident()),
            inputs,
            body: body.unwrap_or_else(|| self.empty_body()),
        }
    }

    fn missing_ident(&self) -> Ident {
        Ident {
            name: String::new(),
            span: Span::new(self.file, 0, 0),
        }
    }

    fn empty_body(&self) -> Body {
        Body {
            stmts: Vec::new(),
            span: Span::new(self.file, 0, 0),
        }
    }

    fn body(&self, p: Pair<Rule>) -> Body {
        let span = self.span(&p);
        let stmts = p
            .into_inner()
            .filter_map(|s| {
                let sspan = self.span(&s);
                match s.as_rule() {
                    Rule::assign => {
                        let mut it = s.into_inner();
                        let name = self.ident(it.next()?);
                        let value = self.expr(it.next()?);
                        Some(Stmt::Assign { name, value })
                    }
                    Rule::return_stmt => Some(Stmt::Return {
                        values: s.into_inner().map(|e| self.expr(e)).collect(),
                        span: sspan,
                    }),
                    Rule::expr_stmt => Some(Stmt::Expr(self.expr(s.into_inner().next()?))),
                    _ => None,
                }
            })
            .collect();
        Body { stmts, span }
    }

    /// Any expression-level rule becomes an [`Expr`].
    fn expr(&self, p: Pair<Rule>) -> Expr {
        let span = self.span(&p);
        let kind = match p.as_rule() {
            Rule::expr => return self.only_child(p),
            Rule::if_expr => {
                let mut it = p.into_inner().map(|e| Box::new(self.expr(e)));
                match (it.next(), it.next(), it.next()) {
                    (Some(c), Some(a), Some(b)) => ExprKind::If(c, a, b),
                    _ => ExprKind::Bool(false),
                }
            }
            Rule::pipe => {
                let mut it = p.into_inner();
                let Some(first) = it.next() else {
                    return self.error_expr(span);
                };
                let mut acc = self.expr(first);
                for next in it {
                    let rhs = self.expr(next);
                    let sp = Span::new(self.file, acc.span.start, rhs.span.end);
                    acc = Expr {
                        kind: ExprKind::Pipe(Box::new(acc), Box::new(rhs)),
                        span: sp,
                    };
                }
                return acc;
            }
            Rule::or_expr | Rule::and_expr | Rule::cmp_expr | Rule::sum | Rule::product => {
                return self.binary_chain(p)
            }
            Rule::unary => {
                let mut ops = Vec::new();
                let mut operand = None;
                for q in p.into_inner() {
                    match q.as_rule() {
                        Rule::prefix_op => ops.push((q.as_str().to_string(), self.span(&q))),
                        _ => operand = Some(self.expr(q)),
                    }
                }
                let Some(mut e) = operand else {
                    return self.error_expr(span);
                };
                for (op, sp) in ops.into_iter().rev() {
                    let op = if op == "-" { UnOp::Neg } else { UnOp::Not };
                    let sp = Span::new(self.file, sp.start, e.span.end);
                    e = Expr {
                        kind: ExprKind::Unary(op, Box::new(e)),
                        span: sp,
                    };
                }
                return e;
            }
            Rule::labelled => {
                let mut it = p.into_inner();
                let Some(inner) = it.next() else {
                    return self.error_expr(span);
                };
                let inner = self.expr(inner);
                match it.next() {
                    Some(label) => ExprKind::Label(Box::new(inner), self.ident(label)),
                    None => return inner,
                }
            }
            Rule::int => match p.as_str().parse::<i64>() {
                Ok(v) => ExprKind::Int(v),
                // Out-of-range literals are reported by the checker, which
                // sees this as a float it cannot use as an integer.
                Err(_) => ExprKind::Float(p.as_str().parse().unwrap_or(f64::INFINITY)),
            },
            Rule::float => ExprKind::Float(p.as_str().parse().unwrap_or(f64::NAN)),
            Rule::bool => ExprKind::Bool(p.as_str() == "true"),
            Rule::string => ExprKind::Str(self.string(p)),
            Rule::ident => ExprKind::Name(p.as_str().to_string()),
            Rule::list => ExprKind::List(p.into_inner().map(|e| self.expr(e)).collect()),
            Rule::call => {
                let mut it = p.into_inner();
                let Some(callee) = it.next() else {
                    return self.error_expr(span);
                };
                let callee = self.ident(callee);
                let args = it
                    .map(|a| match a.as_rule() {
                        Rule::named_arg => {
                            let mut ai = a.into_inner();
                            let name = ai.next().map(|n| self.ident(n));
                            let value = ai
                                .next()
                                .map(|v| self.expr(v))
                                .unwrap_or_else(|| self.error_expr(span));
                            Arg { name, value }
                        }
                        _ => Arg {
                            name: None,
                            value: self.expr(a),
                        },
                    })
                    .collect();
                ExprKind::Call { callee, args }
            }
            _ => return self.error_expr(span),
        };
        Expr { kind, span }
    }

    fn only_child(&self, p: Pair<Rule>) -> Expr {
        let span = self.span(&p);
        match p.into_inner().next() {
            Some(c) => self.expr(c),
            None => self.error_expr(span),
        }
    }

    /// `a op b op c` at one precedence level, left-associative.
    fn binary_chain(&self, p: Pair<Rule>) -> Expr {
        let span = self.span(&p);
        let mut it = p.into_inner();
        let Some(first) = it.next() else {
            return self.error_expr(span);
        };
        let mut acc = self.expr(first);
        while let (Some(op), Some(rhs)) = (it.next(), it.next()) {
            let op = match op.as_str().trim() {
                "+" => BinOp::Add,
                "-" => BinOp::Sub,
                "*" => BinOp::Mul,
                "/" => BinOp::Div,
                "%" => BinOp::Rem,
                "==" => BinOp::Eq,
                "!=" => BinOp::Ne,
                "<" => BinOp::Lt,
                "<=" => BinOp::Le,
                ">" => BinOp::Gt,
                ">=" => BinOp::Ge,
                "&&" => BinOp::And,
                _ => BinOp::Or,
            };
            let rhs = self.expr(rhs);
            let sp = Span::new(self.file, acc.span.start, rhs.span.end);
            acc = Expr {
                kind: ExprKind::Binary(op, Box::new(acc), Box::new(rhs)),
                span: sp,
            };
        }
        acc
    }

    fn error_expr(&self, span: Span) -> Expr {
        // Unreachable for input the grammar accepted; a neutral value keeps
        // the builder total instead of panicking.
        Expr {
            kind: ExprKind::Bool(false),
            span,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(src: &str) -> File {
        match parse(FileId(0), src) {
            Ok(f) => f,
            Err(d) => panic!("{}", d.message),
        }
    }

    #[test]
    fn parses_block_and_model() {
        let f = parse_ok(
            "// a comment\nblock b(c, k: 3)(x) { x -> conv(c, k, pad: k / 2) as conv -> relu }\n\
             model m(x: [N, 3, 8, 8]) { y = x -> b(4); y }",
        );
        assert_eq!(f.blocks.len(), 1);
        assert_eq!(f.blocks[0].params.len(), 2);
        assert!(f.blocks[0].params[1].default.is_some());
        assert_eq!(f.models[0].inputs[0].dims.len(), 4);
        assert_eq!(f.models[0].body.stmts.len(), 2);
    }

    #[test]
    fn pipe_binds_loosest_and_minus_is_not_arrow() {
        let f = parse_ok("model m(x: [N, 1]) { x -> scale(2 - 1) }");
        let Stmt::Expr(e) = &f.models[0].body.stmts[0] else {
            panic!()
        };
        let ExprKind::Pipe(_, rhs) = &e.kind else {
            panic!("{:?}", e.kind)
        };
        let ExprKind::Call { args, .. } = &rhs.kind else {
            panic!()
        };
        assert!(matches!(
            args[0].value.kind,
            ExprKind::Binary(BinOp::Sub, _, _)
        ));
    }

    #[test]
    fn syntax_error_names_expectation() {
        let e = parse(FileId(0), "model m(x: [N, 3]) { x -> conv(3,) ) }").unwrap_err();
        assert!(e.message.starts_with("expected"), "{}", e.message);
    }

    #[test]
    fn deep_nesting_is_rejected_without_recursion() {
        let src = "(".repeat(100_000);
        let e = parse(FileId(0), &src).unwrap_err();
        assert!(e.message.contains("nested"));
    }
}
