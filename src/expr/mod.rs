//! Expressions in predicates and computed fields: a subset of CEL (the
//! Common Expression Language). Parsed and type-checked once against the
//! input schema; field names become indices, so evaluation never looks a
//! name up and allocates only when it builds a new string.

mod parse;

pub use parse::ParseError;
use parse::{parse, Ast, AstKind, BinOp, Lit};

use crate::record::{FieldType, Row, RowSchema, Value};
use compact_str::CompactString;
use std::cmp::Ordering;

/// A compile-time error, with the 0-based column it points at.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ExprError {
    pub pos: usize,
    pub message: String,
}

/// A per-record failure; the record goes to the dead-letter output.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct EvalError(pub String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ty {
    pub ty: FieldType,
    pub nullable: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arith {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Func {
    Size,
    ToInt,
    ToDouble,
    ToString,
    Abs,
    Lower,
    Upper,
    Trim,
    WordCount,
    StartsWith,
    EndsWith,
    Contains,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Lit(Value),
    Field(usize, CompactString),
    Not(Box<Node>),
    Neg(Box<Node>),
    Arith(Arith, bool, Box<Node>, Box<Node>),
    Concat(Box<Node>, Box<Node>),
    Cmp(BinOp, Box<Node>, Box<Node>),
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    Cond(Box<Node>, Box<Node>, Box<Node>),
    In(Box<Node>, Vec<Node>),
    Call(Func, Vec<Node>),
}

/// A checked expression, ready to evaluate against rows of its schema.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    node: Node,
    pub ty: Ty,
    pub source: String,
}

fn t(ty: FieldType) -> Ty {
    Ty {
        ty,
        nullable: false,
    }
}

fn numeric(ty: FieldType) -> bool {
    matches!(ty, FieldType::Int | FieldType::Double)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push(
                (prev[j] + (ca != *cb) as usize)
                    .min(prev[j + 1] + 1)
                    .min(cur[j] + 1),
            );
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The closest name to `wanted` among `names`, when one is close enough to
/// be a likely typo.
pub fn did_you_mean<'a>(wanted: &str, names: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    names
        .map(|n| (edit_distance(&wanted.to_lowercase(), &n.to_lowercase()), n))
        .filter(|(d, n)| *d <= 2.max(n.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n)
}

struct Checker<'a> {
    schema: &'a RowSchema,
}

impl Checker<'_> {
    fn err<T>(&self, pos: usize, message: String) -> Result<(Node, Ty), ExprError>
    where
        T: Sized,
    {
        Err(ExprError { pos, message })
    }

    fn check(&self, ast: &Ast) -> Result<(Node, Ty), ExprError> {
        let pos = ast.pos;
        match &ast.kind {
            AstKind::Lit(l) => Ok(match l {
                Lit::Null => (
                    Node::Lit(Value::Null),
                    Ty {
                        ty: FieldType::Null,
                        nullable: true,
                    },
                ),
                Lit::Bool(b) => (Node::Lit(Value::Bool(*b)), t(FieldType::Bool)),
                Lit::Int(i) => (Node::Lit(Value::Int(*i)), t(FieldType::Int)),
                Lit::Double(d) => (Node::Lit(Value::Double(*d)), t(FieldType::Double)),
                Lit::Str(s) => (
                    Node::Lit(Value::Str(s.as_str().into())),
                    t(FieldType::String),
                ),
            }),
            AstKind::Ident(name) => match self.schema.index_of(name) {
                Some(i) => {
                    let f = &self.schema.fields[i];
                    Ok((
                        Node::Field(i, name.as_str().into()),
                        Ty {
                            ty: f.ty,
                            nullable: f.nullable,
                        },
                    ))
                }
                None => {
                    let hint = match did_you_mean(
                        name,
                        self.schema.fields.iter().map(|f| f.name.as_str()),
                    ) {
                        Some(n) => format!("did you mean `{n}`?"),
                        None => format!(
                            "the fields are {}",
                            self.schema
                                .fields
                                .iter()
                                .map(|f| format!("`{}`", f.name))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    };
                    self.err::<()>(pos, format!("unknown field `{name}`; {hint}"))
                }
            },
            AstKind::List(_) => {
                self.err::<()>(pos, "a list is only allowed on the right of `in`".into())
            }
            AstKind::Not(e) => {
                let (n, ty) = self.check(e)?;
                if ty.ty != FieldType::Bool {
                    return self
                        .err::<()>(pos, format!("`!` needs a bool, found {}", ty.ty.name()));
                }
                Ok((Node::Not(Box::new(n)), t(FieldType::Bool)))
            }
            AstKind::Neg(e) => {
                let (n, ty) = self.check(e)?;
                if !numeric(ty.ty) {
                    return self
                        .err::<()>(pos, format!("`-` needs a number, found {}", ty.ty.name()));
                }
                Ok((Node::Neg(Box::new(n)), t(ty.ty)))
            }
            AstKind::Cond(c, a, b) => {
                let (cn, ct) = self.check(c)?;
                if ct.ty != FieldType::Bool {
                    return self.err::<()>(
                        c.pos,
                        format!(
                            "the condition before `?` must be a bool, found {}",
                            ct.ty.name()
                        ),
                    );
                }
                let (an, at) = self.check(a)?;
                let (bn, bt) = self.check(b)?;
                let ty = unify(at, bt).ok_or_else(|| ExprError {
                    pos: b.pos,
                    message: format!(
                        "both branches of `? :` must have one type, found {} and {}",
                        at.ty.name(),
                        bt.ty.name()
                    ),
                })?;
                Ok((Node::Cond(Box::new(cn), Box::new(an), Box::new(bn)), ty))
            }
            AstKind::Bin(op, l, r) => self.binary(*op, l, r, pos),
            AstKind::Call { name, args, method } => self.call(name, args, *method, pos),
        }
    }

    fn binary(&self, op: BinOp, l: &Ast, r: &Ast, pos: usize) -> Result<(Node, Ty), ExprError> {
        if op == BinOp::In {
            let (ln, lt) = self.check(l)?;
            let AstKind::List(items) = &r.kind else {
                return self.err::<()>(
                    r.pos,
                    "`in` needs a list on its right, such as `['a', 'b']`".into(),
                );
            };
            let mut nodes = Vec::with_capacity(items.len());
            for item in items {
                let (n, it) = self.check(item)?;
                if unify(lt, it).is_none() {
                    return self.err::<()>(
                        item.pos,
                        format!(
                            "list item is {}, but the value tested is {}",
                            it.ty.name(),
                            lt.ty.name()
                        ),
                    );
                }
                nodes.push(n);
            }
            return Ok((Node::In(Box::new(ln), nodes), t(FieldType::Bool)));
        }
        let (ln, lt) = self.check(l)?;
        let (rn, rt) = self.check(r)?;
        let (ln, rn) = (Box::new(ln), Box::new(rn));
        let mismatch = |what: &str| ExprError {
            pos,
            message: format!("`{op}` {what}, found {} and {}", lt.ty.name(), rt.ty.name()),
        };
        match op {
            BinOp::And | BinOp::Or => {
                if lt.ty != FieldType::Bool || rt.ty != FieldType::Bool {
                    return Err(mismatch("needs two bools"));
                }
                Ok((
                    if op == BinOp::And {
                        Node::And(ln, rn)
                    } else {
                        Node::Or(ln, rn)
                    },
                    t(FieldType::Bool),
                ))
            }
            BinOp::Eq | BinOp::Ne => {
                if unify(lt, rt).is_none() {
                    return Err(mismatch("compares values of one type"));
                }
                Ok((Node::Cmp(op, ln, rn), t(FieldType::Bool)))
            }
            BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
                let ok = (numeric(lt.ty) && numeric(rt.ty))
                    || (lt.ty == rt.ty && lt.ty == FieldType::String);
                if !ok {
                    return Err(mismatch("compares two numbers or two strings"));
                }
                Ok((Node::Cmp(op, ln, rn), t(FieldType::Bool)))
            }
            BinOp::Add if lt.ty == FieldType::String && rt.ty == FieldType::String => {
                Ok((Node::Concat(ln, rn), t(FieldType::String)))
            }
            BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Rem => {
                if !numeric(lt.ty) || !numeric(rt.ty) {
                    return Err(mismatch(if op == BinOp::Add {
                        "needs two numbers or two strings"
                    } else {
                        "needs two numbers"
                    }));
                }
                let double = lt.ty == FieldType::Double || rt.ty == FieldType::Double;
                let a = match op {
                    BinOp::Add => Arith::Add,
                    BinOp::Sub => Arith::Sub,
                    BinOp::Mul => Arith::Mul,
                    BinOp::Div => Arith::Div,
                    _ => Arith::Rem,
                };
                Ok((
                    Node::Arith(a, double, ln, rn),
                    t(if double {
                        FieldType::Double
                    } else {
                        FieldType::Int
                    }),
                ))
            }
            BinOp::In => unreachable!(),
        }
    }

    fn call(
        &self,
        name: &str,
        args: &[Ast],
        method: bool,
        pos: usize,
    ) -> Result<(Node, Ty), ExprError> {
        let (func, arity, method_form) = match name {
            "size" => (Func::Size, 1, None),
            "int" => (Func::ToInt, 1, None),
            "double" => (Func::ToDouble, 1, None),
            "string" => (Func::ToString, 1, None),
            "abs" => (Func::Abs, 1, None),
            "lowerAscii" => (Func::Lower, 1, Some(true)),
            "upperAscii" => (Func::Upper, 1, Some(true)),
            "trim" => (Func::Trim, 1, Some(true)),
            "wordCount" => (Func::WordCount, 1, Some(true)),
            "startsWith" => (Func::StartsWith, 2, Some(true)),
            "endsWith" => (Func::EndsWith, 2, Some(true)),
            "contains" => (Func::Contains, 2, Some(true)),
            _ => {
                const ALL: [&str; 12] = [
                    "size",
                    "int",
                    "double",
                    "string",
                    "abs",
                    "lowerAscii",
                    "upperAscii",
                    "trim",
                    "wordCount",
                    "startsWith",
                    "endsWith",
                    "contains",
                ];
                let hint = did_you_mean(name, ALL.into_iter())
                    .map(|n| format!("; did you mean `{n}`?"))
                    .unwrap_or_default();
                return self.err::<()>(pos, format!("unknown function `{name}`{hint}"));
            }
        };
        if method_form == Some(true) && !method {
            return self.err::<()>(
                pos,
                format!("`{name}` is a method: write `value.{name}(...)`"),
            );
        }
        if args.len() != arity {
            return self.err::<()>(
                pos,
                format!(
                    "`{name}` takes {} argument(s), found {}",
                    arity - method as usize,
                    args.len() - method as usize
                ),
            );
        }
        let mut nodes = Vec::new();
        let mut tys = Vec::new();
        for a in args {
            let (n, ty) = self.check(a)?;
            nodes.push(n);
            tys.push(ty);
        }
        let arg = tys[0].ty;
        let bad = |want: &str| ExprError {
            pos,
            message: format!("`{name}` needs {want}, found {}", arg.name()),
        };
        let out = match func {
            Func::Size if matches!(arg, FieldType::String | FieldType::Bytes) => FieldType::Int,
            Func::Size => return Err(bad("a string or bytes")),
            Func::ToInt if numeric(arg) || arg == FieldType::String || arg == FieldType::Bool => {
                FieldType::Int
            }
            Func::ToInt => return Err(bad("a number, string or bool")),
            Func::ToDouble if numeric(arg) || arg == FieldType::String => FieldType::Double,
            Func::ToDouble => return Err(bad("a number or string")),
            Func::ToString => FieldType::String,
            Func::Abs if numeric(arg) => arg,
            Func::Abs => return Err(bad("a number")),
            Func::Lower | Func::Upper | Func::Trim if arg == FieldType::String => FieldType::String,
            Func::WordCount if arg == FieldType::String => FieldType::Int,
            Func::StartsWith | Func::EndsWith | Func::Contains
                if arg == FieldType::String && tys[1].ty == FieldType::String =>
            {
                FieldType::Bool
            }
            _ => return Err(bad("strings")),
        };
        Ok((Node::Call(func, nodes), t(out)))
    }
}

fn unify(a: Ty, b: Ty) -> Option<Ty> {
    let nullable = a.nullable || b.nullable;
    match (a.ty, b.ty) {
        (x, y) if x == y => Some(Ty { ty: x, nullable }),
        (FieldType::Null, y) => Some(Ty {
            ty: y,
            nullable: true,
        }),
        (x, FieldType::Null) => Some(Ty {
            ty: x,
            nullable: true,
        }),
        (x, y) if numeric(x) && numeric(y) => Some(Ty {
            ty: FieldType::Double,
            nullable,
        }),
        _ => None,
    }
}

impl Expr {
    /// Parses and type-checks `src` against rows of `schema`.
    pub fn compile(src: &str, schema: &RowSchema) -> Result<Expr, ExprError> {
        let ast = parse(src).map_err(|e| ExprError {
            pos: e.pos,
            message: e.message,
        })?;
        let (node, ty) = Checker { schema }.check(&ast)?;
        Ok(Expr {
            node,
            ty,
            source: src.to_string(),
        })
    }

    /// Compiles a predicate: the expression must be a bool.
    pub fn predicate(src: &str, schema: &RowSchema) -> Result<Expr, ExprError> {
        let e = Expr::compile(src, schema)?;
        if e.ty.ty != FieldType::Bool {
            return Err(ExprError {
                pos: 0,
                message: format!("a condition must be a bool, but this is {}", e.ty.ty.name()),
            });
        }
        Ok(e)
    }

    /// Whether the expression reads field `i` of its rows.
    pub fn reads_field(&self, i: usize) -> bool {
        fn reads(node: &Node, i: usize) -> bool {
            match node {
                Node::Lit(_) => false,
                Node::Field(f, _) => *f == i,
                Node::Not(a) | Node::Neg(a) => reads(a, i),
                Node::Arith(_, _, a, b)
                | Node::Concat(a, b)
                | Node::Cmp(_, a, b)
                | Node::And(a, b)
                | Node::Or(a, b) => reads(a, i) || reads(b, i),
                Node::Cond(c, a, b) => reads(c, i) || reads(a, i) || reads(b, i),
                Node::In(a, items) => reads(a, i) || items.iter().any(|n| reads(n, i)),
                Node::Call(_, args) => args.iter().any(|n| reads(n, i)),
            }
        }
        reads(&self.node, i)
    }

    #[inline]
    pub fn eval(&self, row: &Row) -> Result<Value, EvalError> {
        eval(&self.node, row)
    }

    /// Evaluates a predicate; a null result counts as false, as in SQL.
    #[inline]
    pub fn test(&self, row: &Row) -> Result<bool, EvalError> {
        Ok(matches!(eval(&self.node, row)?, Value::Bool(true)))
    }
}

fn null_error(node: &Node) -> EvalError {
    match node {
        Node::Field(_, name) => EvalError(format!("field `{name}` is null")),
        _ => EvalError("a value is null".into()),
    }
}

#[inline]
fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Int(i) => Some(*i as f64),
        Value::Double(d) => Some(*d),
        _ => None,
    }
}

#[inline]
fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Double(x), Value::Double(y)) => x.partial_cmp(y),
        (Value::Int(x), Value::Int(y)) => Some(x.cmp(y)),
        (Value::Str(x), Value::Str(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        (Value::Bytes(x), Value::Bytes(y)) => Some(x.cmp(y)),
        (Value::Null, Value::Null) => Some(Ordering::Equal),
        (Value::Null, _) | (_, Value::Null) => None,
        _ => as_f64(a)?.partial_cmp(&as_f64(b)?),
    }
}

/// An operand's value: a field's or a literal's is read where it is (a
/// field's string is not copied to be compared); only what an operator
/// computes is made, into `$made`. A macro, not a function returning a
/// `Result` of a reference: that result, written and read back, cost a
/// stall per operand.
macro_rules! operand {
    ($node:expr, $row:expr, $made:ident) => {
        match $node {
            Node::Lit(v) => v,
            Node::Field(i, _) => &$row[*i],
            other => {
                $made = eval_nested(other, $row)?;
                &$made
            }
        }
    };
}

/// Evaluates `node`. The usual top-level shapes (a literal, a field, a
/// comparison, arithmetic) are inlined into the caller, so their value is
/// built where it goes: a value built piece by piece and then copied
/// stalls the copy's loads on its stores (its tag sits in its last byte).
#[inline(always)]
fn eval(node: &Node, row: &Row) -> Result<Value, EvalError> {
    match node {
        Node::Lit(v) => Ok(v.clone()),
        Node::Field(i, _) => Ok(row[*i].clone()),
        Node::Cmp(op, a, b) => cmp(*op, a, b, row).map(Value::Bool),
        Node::Arith(op, double, a, b) => arith(*op, *double, a, b, row),
        _ => eval_nested(node, row),
    }
}

#[inline(never)]
fn eval_nested(node: &Node, row: &Row) -> Result<Value, EvalError> {
    Ok(match node {
        Node::Lit(_) | Node::Field(..) | Node::Cmp(..) | Node::Arith(..) => eval(node, row)?,
        Node::Not(e) => match eval(e, row)? {
            Value::Bool(b) => Value::Bool(!b),
            _ => return Err(null_error(e)),
        },
        Node::Neg(e) => match eval(e, row)? {
            Value::Int(i) => Value::Int(
                i.checked_neg()
                    .ok_or_else(|| EvalError("integer overflow".into()))?,
            ),
            Value::Double(d) => Value::Double(-d),
            _ => return Err(null_error(e)),
        },
        Node::And(a, b) => match eval(a, row)? {
            Value::Bool(false) => Value::Bool(false),
            _ => Value::Bool(matches!(eval(b, row)?, Value::Bool(true))),
        },
        Node::Or(a, b) => match eval(a, row)? {
            Value::Bool(true) => Value::Bool(true),
            _ => Value::Bool(matches!(eval(b, row)?, Value::Bool(true))),
        },
        Node::Cond(c, a, b) => {
            if matches!(eval(c, row)?, Value::Bool(true)) {
                eval(a, row)?
            } else {
                eval(b, row)?
            }
        }
        Node::In(a, items) => {
            let made;
            let x = operand!(&**a, row, made);
            let mut found = false;
            for item in items {
                let item_made;
                if compare(x, operand!(item, row, item_made)) == Some(Ordering::Equal) {
                    found = true;
                    break;
                }
            }
            Value::Bool(found)
        }
        Node::Concat(a, b) => match (eval(a, row)?, eval(b, row)?) {
            (Value::Str(mut x), Value::Str(y)) => {
                x.push_str(&y);
                Value::Str(x)
            }
            (Value::Str(_), _) => return Err(null_error(b)),
            _ => return Err(null_error(a)),
        },
        Node::Call(f, args) => call(*f, args, row)?,
    })
}

#[inline(always)]
fn cmp(op: BinOp, a: &Node, b: &Node, row: &Row) -> Result<bool, EvalError> {
    let (made_a, made_b);
    let ord = compare(operand!(a, row, made_a), operand!(b, row, made_b));
    Ok(match op {
        BinOp::Eq => ord == Some(Ordering::Equal),
        BinOp::Ne => ord != Some(Ordering::Equal),
        BinOp::Lt => ord == Some(Ordering::Less),
        BinOp::Le => matches!(ord, Some(Ordering::Less | Ordering::Equal)),
        BinOp::Gt => ord == Some(Ordering::Greater),
        BinOp::Ge => matches!(ord, Some(Ordering::Greater | Ordering::Equal)),
        _ => unreachable!("not a comparison"),
    })
}

#[inline(always)]
fn arith(op: Arith, double: bool, a: &Node, b: &Node, row: &Row) -> Result<Value, EvalError> {
    let (made_a, made_b);
    let (x, y) = (operand!(a, row, made_a), operand!(b, row, made_b));
    Ok(if double {
        let x = as_f64(x).ok_or_else(|| null_error(a))?;
        let y = as_f64(y).ok_or_else(|| null_error(b))?;
        Value::Double(match op {
            Arith::Add => x + y,
            Arith::Sub => x - y,
            Arith::Mul => x * y,
            Arith::Div if y == 0.0 => return Err(EvalError("division by zero".into())),
            Arith::Div => x / y,
            Arith::Rem if y == 0.0 => return Err(EvalError("division by zero".into())),
            Arith::Rem => x % y,
        })
    } else {
        let Value::Int(x) = *x else {
            return Err(null_error(a));
        };
        let Value::Int(y) = *y else {
            return Err(null_error(b));
        };
        let r = match op {
            Arith::Add => x.checked_add(y),
            Arith::Sub => x.checked_sub(y),
            Arith::Mul => x.checked_mul(y),
            Arith::Div | Arith::Rem if y == 0 => return Err(EvalError("division by zero".into())),
            Arith::Div => x.checked_div(y),
            Arith::Rem => x.checked_rem(y),
        };
        Value::Int(r.ok_or_else(|| EvalError("integer overflow".into()))?)
    })
}

fn call(f: Func, args: &[Node], row: &Row) -> Result<Value, EvalError> {
    let x = eval(&args[0], row)?;
    if matches!(x, Value::Null) && f != Func::ToString {
        return Err(null_error(&args[0]));
    }
    let str_arg = |i: usize| -> Result<CompactString, EvalError> {
        match eval(&args[i], row)? {
            Value::Str(s) => Ok(s),
            _ => Err(null_error(&args[i])),
        }
    };
    Ok(match (f, x) {
        (Func::Size, Value::Str(s)) => Value::Int(s.chars().count() as i64),
        (Func::Size, Value::Bytes(b)) => Value::Int(b.len() as i64),
        (Func::ToInt, Value::Int(i)) => Value::Int(i),
        (Func::ToInt, Value::Double(d)) => {
            if !d.is_finite() || d < i64::MIN as f64 || d >= i64::MAX as f64 {
                return Err(EvalError(format!("{d} does not fit in an int")));
            }
            Value::Int(d.trunc() as i64)
        }
        (Func::ToInt, Value::Bool(b)) => Value::Int(b as i64),
        (Func::ToInt, Value::Str(s)) => Value::Int(
            s.trim()
                .parse()
                .map_err(|_| EvalError(format!("\"{s}\" is not an int")))?,
        ),
        (Func::ToDouble, Value::Str(s)) => Value::Double(
            s.trim()
                .parse()
                .map_err(|_| EvalError(format!("\"{s}\" is not a number")))?,
        ),
        (Func::ToDouble, v) => Value::Double(as_f64(&v).unwrap_or(0.0)),
        (Func::ToString, Value::Str(s)) => Value::Str(s),
        (Func::ToString, v) => {
            let mut s = String::new();
            v.to_text(&mut s);
            Value::Str(s.into())
        }
        (Func::Abs, Value::Int(i)) => Value::Int(
            i.checked_abs()
                .ok_or_else(|| EvalError("integer overflow".into()))?,
        ),
        (Func::Abs, Value::Double(d)) => Value::Double(d.abs()),
        (Func::Lower, Value::Str(s)) => Value::Str(s.to_ascii_lowercase().into()),
        (Func::Upper, Value::Str(s)) => Value::Str(s.to_ascii_uppercase().into()),
        (Func::Trim, Value::Str(s)) => Value::Str(s.trim().into()),
        (Func::WordCount, Value::Str(s)) => Value::Int(s.split_whitespace().count() as i64),
        (Func::StartsWith, Value::Str(s)) => Value::Bool(s.starts_with(str_arg(1)?.as_str())),
        (Func::EndsWith, Value::Str(s)) => Value::Bool(s.ends_with(str_arg(1)?.as_str())),
        (Func::Contains, Value::Str(s)) => Value::Bool(s.contains(str_arg(1)?.as_str())),
        (f, v) => return Err(EvalError(format!("{f:?} cannot take {}", v.type_name()))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Field;

    fn bank() -> RowSchema {
        RowSchema {
            name: "BankTransaction".into(),
            fields: vec![
                Field::new("account_id", FieldType::Int),
                Field::new("withdraw", FieldType::Double),
                Field::new("balance", FieldType::Double),
                Field::new("bank_transaction_state", FieldType::String),
            ],
        }
    }

    fn row(w: f64, b: f64) -> Row {
        vec![
            Value::Int(1003),
            Value::Double(w),
            Value::Double(b),
            Value::Str("CREATED".into()),
        ]
    }

    #[test]
    fn the_bank_rule() {
        let approve = Expr::predicate("withdraw < balance", &bank()).unwrap();
        assert!(approve.test(&row(100.0, 1000.0)).unwrap());
        assert!(!approve.test(&row(300.0, 300.0)).unwrap());
        let reduced = Expr::compile("balance - withdraw", &bank()).unwrap();
        assert_eq!(
            reduced.eval(&row(100.0, 1000.0)).unwrap(),
            Value::Double(900.0)
        );
        assert_eq!(reduced.ty, t(FieldType::Double));
    }

    #[test]
    fn unknown_fields_suggest_the_closest_name() {
        let err = Expr::compile("withdraw < balanse", &bank()).unwrap_err();
        assert_eq!(
            err.message,
            "unknown field `balanse`; did you mean `balance`?"
        );
        assert_eq!(err.pos, 11);
    }

    #[test]
    fn type_errors_name_both_sides() {
        let err = Expr::compile("bank_transaction_state < 3", &bank()).unwrap_err();
        assert_eq!(
            err.message,
            "`<` compares two numbers or two strings, found string and int"
        );
        let err = Expr::predicate("balance + 1", &bank()).unwrap_err();
        assert_eq!(
            err.message,
            "a condition must be a bool, but this is double"
        );
    }

    #[test]
    fn division_by_zero_is_a_record_error() {
        let e = Expr::compile("account_id / 0", &bank()).unwrap();
        assert_eq!(e.eval(&row(1.0, 1.0)).unwrap_err().0, "division by zero");
    }

    #[test]
    fn strings_lists_and_conditionals() {
        let e = Expr::compile(
            "bank_transaction_state in ['CREATED', 'NEW'] ? string(account_id) + '-' + bank_transaction_state.lowerAscii() : 'x'",
            &bank(),
        )
        .unwrap();
        assert_eq!(
            e.eval(&row(1.0, 1.0)).unwrap(),
            Value::Str("1003-created".into())
        );
    }
}
