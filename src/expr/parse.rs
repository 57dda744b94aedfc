//! Parser for the CEL subset rill's expressions use.

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum Lit {
    Null,
    Bool(bool),
    Int(i64),
    Double(f64),
    Str(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

impl fmt::Display for BinOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BinOp::Or => "||",
            BinOp::And => "&&",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::In => "in",
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Rem => "%",
        })
    }
}

/// A parsed expression; `pos` is the 0-based character column where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Ast {
    pub pos: usize,
    pub kind: AstKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AstKind {
    Lit(Lit),
    Ident(String),
    List(Vec<Ast>),
    Not(Box<Ast>),
    Neg(Box<Ast>),
    Bin(BinOp, Box<Ast>, Box<Ast>),
    Cond(Box<Ast>, Box<Ast>, Box<Ast>),
    /// `f(args)` or, with a receiver, `recv.f(args)` (the receiver is args[0]).
    Call {
        name: String,
        args: Vec<Ast>,
        method: bool,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ParseError {
    pub pos: usize,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Int(i64),
    Double(f64),
    Str(String),
    Ident(String),
    Sym(&'static str),
    End,
}

fn lex(src: &str) -> Result<Vec<(usize, Tok)>, ParseError> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
        {
            while i < chars.len()
                && (chars[i].is_ascii_digit() || chars[i] == '.' || chars[i] == '_')
            {
                i += 1;
            }
            if i < chars.len() && (chars[i] == 'e' || chars[i] == 'E') {
                i += 1;
                if i < chars.len() && (chars[i] == '+' || chars[i] == '-') {
                    i += 1;
                }
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
            }
            let text: String = chars[start..i].iter().filter(|c| **c != '_').collect();
            let tok = if text.contains(['.', 'e', 'E']) {
                Tok::Double(text.parse().map_err(|_| ParseError {
                    pos: start,
                    message: format!("`{text}` is not a number"),
                })?)
            } else {
                Tok::Int(text.parse().map_err(|_| ParseError {
                    pos: start,
                    message: format!("`{text}` does not fit in a 64-bit int"),
                })?)
            };
            out.push((start, tok));
            continue;
        }
        if c.is_alphabetic() || c == '_' {
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push((start, Tok::Ident(chars[start..i].iter().collect())));
            continue;
        }
        if c == '"' || c == '\'' {
            let quote = c;
            i += 1;
            let mut s = String::new();
            loop {
                match chars.get(i) {
                    None => {
                        return Err(ParseError {
                            pos: start,
                            message: "string is not closed".into(),
                        })
                    }
                    Some(&q) if q == quote => {
                        i += 1;
                        break;
                    }
                    Some('\\') => {
                        let e = chars.get(i + 1).copied().unwrap_or('\\');
                        s.push(match e {
                            'n' => '\n',
                            't' => '\t',
                            'r' => '\r',
                            other => other,
                        });
                        i += 2;
                    }
                    Some(&ch) => {
                        s.push(ch);
                        i += 1;
                    }
                }
            }
            out.push((start, Tok::Str(s)));
            continue;
        }
        const SYMS: [&str; 21] = [
            "&&", "||", "==", "!=", "<=", ">=", "<", ">", "!", "+", "-", "*", "/", "%", "(", ")",
            "[", "]", ",", ".", "?",
        ];
        let rest: String = chars[i..chars.len().min(i + 2)].iter().collect();
        if let Some(sym) = SYMS.iter().find(|s| rest.starts_with(**s)) {
            out.push((start, Tok::Sym(sym)));
            i += sym.len();
            continue;
        }
        if c == ':' {
            out.push((start, Tok::Sym(":")));
            i += 1;
            continue;
        }
        if c == '=' {
            return Err(ParseError {
                pos: start,
                message: "`=` is not an operator; compare with `==`".into(),
            });
        }
        return Err(ParseError {
            pos: start,
            message: format!("unexpected character `{c}`"),
        });
    }
    out.push((chars.len(), Tok::End));
    Ok(out)
}

struct Parser {
    toks: Vec<(usize, Tok)>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> &Tok {
        &self.toks[self.at].1
    }
    fn pos(&self) -> usize {
        self.toks[self.at].0
    }
    fn bump(&mut self) -> (usize, Tok) {
        let t = self.toks[self.at].clone();
        if self.at + 1 < self.toks.len() {
            self.at += 1;
        }
        t
    }
    fn eat(&mut self, sym: &str) -> bool {
        if matches!(self.peek(), Tok::Sym(s) if *s == sym) {
            self.bump();
            true
        } else {
            false
        }
    }
    fn expect(&mut self, sym: &str) -> Result<(), ParseError> {
        if self.eat(sym) {
            Ok(())
        } else {
            Err(self.unexpected(&format!("`{sym}`")))
        }
    }
    fn unexpected(&self, wanted: &str) -> ParseError {
        let found = match self.peek() {
            Tok::End => "the end".to_string(),
            Tok::Int(i) => format!("`{i}`"),
            Tok::Double(d) => format!("`{d}`"),
            Tok::Str(s) => format!("\"{s}\""),
            Tok::Ident(s) => format!("`{s}`"),
            Tok::Sym(s) => format!("`{s}`"),
        };
        ParseError {
            pos: self.pos(),
            message: format!("expected {wanted}, found {found}"),
        }
    }

    fn expr(&mut self) -> Result<Ast, ParseError> {
        let cond = self.binary(0)?;
        if self.eat("?") {
            let a = self.expr()?;
            self.expect(":")?;
            let b = self.expr()?;
            return Ok(Ast {
                pos: cond.pos,
                kind: AstKind::Cond(Box::new(cond), Box::new(a), Box::new(b)),
            });
        }
        Ok(cond)
    }

    fn binop(&self) -> Option<(BinOp, u8)> {
        Some(match self.peek() {
            Tok::Sym("||") => (BinOp::Or, 1),
            Tok::Sym("&&") => (BinOp::And, 2),
            Tok::Sym("==") => (BinOp::Eq, 3),
            Tok::Sym("!=") => (BinOp::Ne, 3),
            Tok::Sym("<") => (BinOp::Lt, 3),
            Tok::Sym("<=") => (BinOp::Le, 3),
            Tok::Sym(">") => (BinOp::Gt, 3),
            Tok::Sym(">=") => (BinOp::Ge, 3),
            Tok::Ident(s) if s == "in" => (BinOp::In, 3),
            Tok::Sym("+") => (BinOp::Add, 4),
            Tok::Sym("-") => (BinOp::Sub, 4),
            Tok::Sym("*") => (BinOp::Mul, 5),
            Tok::Sym("/") => (BinOp::Div, 5),
            Tok::Sym("%") => (BinOp::Rem, 5),
            _ => return None,
        })
    }

    fn binary(&mut self, min: u8) -> Result<Ast, ParseError> {
        let mut lhs = self.unary()?;
        while let Some((op, prec)) = self.binop() {
            if prec <= min {
                break;
            }
            self.bump();
            let rhs = self.binary(prec)?;
            lhs = Ast {
                pos: lhs.pos,
                kind: AstKind::Bin(op, Box::new(lhs), Box::new(rhs)),
            };
        }
        Ok(lhs)
    }

    fn unary(&mut self) -> Result<Ast, ParseError> {
        let pos = self.pos();
        if self.eat("!") {
            return Ok(Ast {
                pos,
                kind: AstKind::Not(Box::new(self.unary()?)),
            });
        }
        if self.eat("-") {
            let inner = self.unary()?;
            return Ok(match inner.kind {
                AstKind::Lit(Lit::Int(i)) => Ast {
                    pos,
                    kind: AstKind::Lit(Lit::Int(-i)),
                },
                AstKind::Lit(Lit::Double(d)) => Ast {
                    pos,
                    kind: AstKind::Lit(Lit::Double(-d)),
                },
                _ => Ast {
                    pos,
                    kind: AstKind::Neg(Box::new(inner)),
                },
            });
        }
        self.member()
    }

    fn member(&mut self) -> Result<Ast, ParseError> {
        let mut e = self.primary()?;
        while self.eat(".") {
            let pos = self.pos();
            let name = match self.bump() {
                (_, Tok::Ident(n)) => n,
                _ => {
                    return Err(ParseError {
                        pos,
                        message: "expected a method name after `.`".into(),
                    })
                }
            };
            if !self.eat("(") {
                return Err(ParseError {
                    pos,
                    message: format!("`.{name}`: rows are flat, so only method calls such as `.{name}()` may follow a `.`"),
                });
            }
            let mut args = vec![e];
            args.extend(self.args()?);
            e = Ast {
                pos,
                kind: AstKind::Call {
                    name,
                    args,
                    method: true,
                },
            };
        }
        Ok(e)
    }

    fn args(&mut self) -> Result<Vec<Ast>, ParseError> {
        let mut args = Vec::new();
        if self.eat(")") {
            return Ok(args);
        }
        loop {
            args.push(self.expr()?);
            if self.eat(")") {
                return Ok(args);
            }
            self.expect(",")?;
        }
    }

    fn primary(&mut self) -> Result<Ast, ParseError> {
        let pos = self.pos();
        let kind = match self.peek().clone() {
            Tok::Int(i) => {
                self.bump();
                AstKind::Lit(Lit::Int(i))
            }
            Tok::Double(d) => {
                self.bump();
                AstKind::Lit(Lit::Double(d))
            }
            Tok::Str(s) => {
                self.bump();
                AstKind::Lit(Lit::Str(s))
            }
            Tok::Ident(name) => {
                self.bump();
                match name.as_str() {
                    "true" => AstKind::Lit(Lit::Bool(true)),
                    "false" => AstKind::Lit(Lit::Bool(false)),
                    "null" => AstKind::Lit(Lit::Null),
                    _ if self.eat("(") => AstKind::Call {
                        name,
                        args: self.args()?,
                        method: false,
                    },
                    _ => AstKind::Ident(name),
                }
            }
            Tok::Sym("(") => {
                self.bump();
                let e = self.expr()?;
                self.expect(")")?;
                return Ok(e);
            }
            Tok::Sym("[") => {
                self.bump();
                let mut items = Vec::new();
                if !self.eat("]") {
                    loop {
                        items.push(self.expr()?);
                        if self.eat("]") {
                            break;
                        }
                        self.expect(",")?;
                    }
                }
                AstKind::List(items)
            }
            _ => return Err(self.unexpected("a value, a field name or `(`")),
        };
        Ok(Ast { pos, kind })
    }
}

pub fn parse(src: &str) -> Result<Ast, ParseError> {
    let mut p = Parser {
        toks: lex(src)?,
        at: 0,
    };
    let e = p.expr()?;
    if *p.peek() != Tok::End {
        return Err(p.unexpected("an operator or the end"));
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_follows_cel() {
        let e = parse("a + b * 2 < c && !d || e").unwrap();
        let AstKind::Bin(BinOp::Or, lhs, _) = e.kind else {
            panic!("{e:?}")
        };
        let AstKind::Bin(BinOp::And, cmp, _) = lhs.kind else {
            panic!()
        };
        let AstKind::Bin(BinOp::Lt, sum, _) = cmp.kind else {
            panic!()
        };
        let AstKind::Bin(BinOp::Add, _, prod) = sum.kind else {
            panic!()
        };
        assert!(matches!(prod.kind, AstKind::Bin(BinOp::Mul, _, _)));
    }

    #[test]
    fn reports_the_column_of_the_problem() {
        let err = parse("withdraw < ").unwrap_err();
        assert_eq!(err.pos, 11);
        assert_eq!(
            parse("a = 1").unwrap_err().message,
            "`=` is not an operator; compare with `==`"
        );
        assert!(parse("merchant in ['a', \"b\"] ? amount * 0.05 : 0.0").is_ok());
        assert!(parse("name.startsWith('x')").is_ok());
    }
}
