//! ksqlDB's statements, read with `sqlparser`'s tokenizer and expression
//! parser; the statement grammar (`CREATE STREAM … WITH (…)`, `WINDOW
//! TUMBLING (SIZE 5 SECONDS)`, `EMIT CHANGES`) is ksqlDB's own, so it is
//! parsed here on top of `sqlparser`'s parser.

use sqlparser::ast::{Expr, SelectItem};
use sqlparser::dialect::GenericDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

/// A place in the SQL file (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct At {
    pub line: usize,
    pub column: usize,
}

impl At {
    fn of(t: &TokenWithSpan) -> At {
        At {
            line: t.span.start.line as usize,
            column: t.span.start.column as usize,
        }
    }
}

/// One problem, where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub at: At,
    pub message: String,
    pub hint: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Statement {
    /// `SET 'key' = 'value'`
    Set { at: At, key: String, value: String },
    /// `CREATE [OR REPLACE] STREAM|TABLE name [(columns)] [WITH (…)] [AS SELECT …]`
    Create(Create),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Create {
    pub at: At,
    pub table: bool,
    pub name: String,
    pub columns: Vec<(String, String, At)>,
    pub with: Vec<(String, Literal, At)>,
    pub select: Option<Select>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Str(String),
    Num(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Select {
    pub at: At,
    pub items: Vec<SelectItem>,
    pub from: (String, At),
    pub window: Option<Window>,
    pub filter: Option<Expr>,
    pub group_by: Vec<Expr>,
    pub having: Option<Expr>,
    /// `EMIT CHANGES` (true), `EMIT FINAL` (false), none.
    pub emit_changes: Option<bool>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub at: At,
    pub kind: WindowKind,
    pub size_ms: u64,
    pub advance_ms: Option<u64>,
    pub grace_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    Tumbling,
    Hopping,
    Session,
}

/// Every statement of `sql`, or every problem: a statement that does not
/// parse does not stop the others from being read.
pub fn statements(sql: &str) -> (Vec<Statement>, Vec<Problem>) {
    let dialect = GenericDialect {};
    let tokens = match Tokenizer::new(&dialect, sql).tokenize_with_location() {
        Ok(t) => t,
        Err(e) => {
            return (
                vec![],
                vec![Problem {
                    at: At {
                        line: e.location.line as usize,
                        column: e.location.column as usize,
                    },
                    message: e.message,
                    hint: None,
                }],
            )
        }
    };
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for part in tokens.split(|t| t.token == Token::SemiColon) {
        let meaningful = part
            .iter()
            .any(|t| !matches!(t.token, Token::Whitespace(_)));
        if !meaningful {
            continue;
        }
        let mut parser = Parser::new(&dialect).with_tokens_with_locations(part.to_vec());
        match statement(&mut parser) {
            Ok(s) => out.push(s),
            Err(e) => problems.push(problem(e)),
        }
    }
    (out, problems)
}

/// sqlparser's errors end with ` at Line: L, Column: C`.
fn problem(e: ParserError) -> Problem {
    let text = match e {
        ParserError::TokenizerError(s) | ParserError::ParserError(s) => s,
        ParserError::RecursionLimitExceeded => "the statement nests too deeply".into(),
    };
    let (message, at) = match text.rsplit_once(" at Line: ") {
        Some((m, place)) => {
            let mut nums = place
                .split(|c: char| !c.is_ascii_digit())
                .filter(|s| !s.is_empty())
                .map(|s| s.parse().unwrap_or(0));
            (
                m.to_string(),
                At {
                    line: nums.next().unwrap_or(0),
                    column: nums.next().unwrap_or(0),
                },
            )
        }
        None => (text, At::default()),
    };
    // Messages in lower case, as rill's others are.
    let message = message.replacen("Expected: ", "expected ", 1);
    let mut chars = message.chars();
    let message = match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => message,
    };
    Problem {
        at,
        message,
        hint: None,
    }
}

fn here(p: &Parser) -> At {
    At::of(&p.peek_token())
}

fn err<T>(p: &Parser, message: String) -> Result<T, ParserError> {
    let at = here(p);
    Err(ParserError::ParserError(format!(
        "{message} at Line: {}, Column: {}",
        at.line, at.column
    )))
}

/// A word that is not a keyword of sqlparser's (TUMBLING, SECONDS, …).
fn word(p: &mut Parser, what: &str) -> Result<String, ParserError> {
    match p.next_token().token {
        Token::Word(w) => Ok(w.value.to_uppercase()),
        other => err(p, format!("expected {what}, found {other}")),
    }
}

fn statement(p: &mut Parser) -> Result<Statement, ParserError> {
    let at = here(p);
    if p.parse_keyword(Keyword::SET) {
        let key = p.parse_literal_string()?;
        p.expect_token(&Token::Eq)?;
        let value = match p.next_token().token {
            Token::SingleQuotedString(s) => s,
            Token::Number(n, _) => n,
            other => return err(p, format!("expected a quoted value, found {other}")),
        };
        return Ok(Statement::Set { at, key, value });
    }
    p.expect_keyword(Keyword::CREATE)?;
    let _ = p.parse_keywords(&[Keyword::OR, Keyword::REPLACE]);
    let table = match word(p, "STREAM or TABLE")?.as_str() {
        "STREAM" => false,
        "TABLE" => true,
        other => return err(p, format!("expected STREAM or TABLE, found {other}")),
    };
    let name = super::parse_name(&p.parse_identifier()?);
    let mut columns = Vec::new();
    if p.consume_token(&Token::LParen) {
        loop {
            let at = here(p);
            let column = name_of(p)?;
            let ty = word(p, "a column type")?;
            columns.push((column, ty, at));
            if !p.consume_token(&Token::Comma) {
                break;
            }
        }
        p.expect_token(&Token::RParen)?;
    }
    let mut with = Vec::new();
    if p.parse_keyword(Keyword::WITH) {
        p.expect_token(&Token::LParen)?;
        loop {
            let at = here(p);
            let key = word(p, "a property name")?;
            p.expect_token(&Token::Eq)?;
            let value = match p.next_token().token {
                Token::SingleQuotedString(s) => Literal::Str(s),
                Token::Number(n, _) => Literal::Num(n),
                other => {
                    return err(
                        p,
                        format!("expected a quoted value or a number, found {other}"),
                    )
                }
            };
            with.push((key, value, at));
            if !p.consume_token(&Token::Comma) {
                break;
            }
        }
        p.expect_token(&Token::RParen)?;
    }
    let select = if p.parse_keyword(Keyword::AS) {
        Some(select(p)?)
    } else {
        None
    };
    if p.peek_token().token != Token::EOF {
        return p.expected("the end of the statement", p.peek_token());
    }
    Ok(Statement::Create(Create {
        at,
        table,
        name,
        columns,
        with,
        select,
    }))
}

fn name_of(p: &mut Parser) -> Result<String, ParserError> {
    Ok(super::parse_name(&p.parse_identifier()?))
}

fn select(p: &mut Parser) -> Result<Select, ParserError> {
    let at = here(p);
    p.expect_keyword(Keyword::SELECT)?;
    let items = p.parse_comma_separated(Parser::parse_select_item)?;
    p.expect_keyword(Keyword::FROM)?;
    let from_at = here(p);
    let from = name_of(p)?;
    let mut window = None;
    if p.parse_keyword(Keyword::WINDOW) {
        window = Some(window_of(p)?);
    }
    let filter = if p.parse_keyword(Keyword::WHERE) {
        Some(p.parse_expr()?)
    } else {
        None
    };
    let group_by = if p.parse_keywords(&[Keyword::GROUP, Keyword::BY]) {
        p.parse_comma_separated(Parser::parse_expr)?
    } else {
        Vec::new()
    };
    let having = if p.parse_keyword(Keyword::HAVING) {
        Some(p.parse_expr()?)
    } else {
        None
    };
    let mut emit_changes = None;
    if let Token::Word(w) = p.peek_token().token {
        if w.value.eq_ignore_ascii_case("EMIT") {
            p.next_token();
            emit_changes = Some(match word(p, "CHANGES or FINAL")?.as_str() {
                "CHANGES" => true,
                "FINAL" => false,
                other => return err(p, format!("expected CHANGES or FINAL, found {other}")),
            });
        }
    }
    Ok(Select {
        at,
        items,
        from: (from, from_at),
        window,
        filter,
        group_by,
        having,
        emit_changes,
    })
}

/// `TUMBLING (SIZE n unit [, GRACE PERIOD n unit])`,
/// `HOPPING (SIZE n unit, ADVANCE BY n unit [, GRACE PERIOD n unit])`,
/// `SESSION (n unit [, GRACE PERIOD n unit])`.
fn window_of(p: &mut Parser) -> Result<Window, ParserError> {
    let at = here(p);
    let kind = match word(p, "TUMBLING, HOPPING or SESSION")?.as_str() {
        "TUMBLING" => WindowKind::Tumbling,
        "HOPPING" => WindowKind::Hopping,
        "SESSION" => WindowKind::Session,
        other => {
            return err(
                p,
                format!("expected TUMBLING, HOPPING or SESSION, found {other}"),
            )
        }
    };
    p.expect_token(&Token::LParen)?;
    let (mut size_ms, mut advance_ms, mut grace_ms) = (None, None, None);
    if kind == WindowKind::Session {
        size_ms = Some(duration(p)?);
    }
    loop {
        if size_ms.is_some() && !p.consume_token(&Token::Comma) {
            break;
        }
        match word(p, "SIZE, ADVANCE BY or GRACE PERIOD")?.as_str() {
            "SIZE" => size_ms = Some(duration(p)?),
            "ADVANCE" => {
                p.expect_keyword(Keyword::BY)?;
                advance_ms = Some(duration(p)?);
            }
            "GRACE" => {
                let _ = word(p, "PERIOD")?;
                grace_ms = Some(duration(p)?);
            }
            other => {
                return err(
                    p,
                    format!("expected SIZE, ADVANCE BY or GRACE PERIOD, found {other}"),
                )
            }
        }
    }
    p.expect_token(&Token::RParen)?;
    let Some(size_ms) = size_ms else {
        return err(p, "a window needs its SIZE".into());
    };
    Ok(Window {
        at,
        kind,
        size_ms,
        advance_ms,
        grace_ms,
    })
}

/// `n unit`, in milliseconds.
fn duration(p: &mut Parser) -> Result<u64, ParserError> {
    let n = p.parse_literal_uint()?;
    let unit = word(
        p,
        "a time unit (MILLISECONDS, SECONDS, MINUTES, HOURS, DAYS)",
    )?;
    let ms = match unit.trim_end_matches('S') {
        "MILLISECOND" => 1,
        "SECOND" => 1_000,
        "MINUTE" => 60_000,
        "HOUR" => 3_600_000,
        "DAY" => 86_400_000,
        other => {
            return err(
                p,
                format!(
                "expected a time unit (MILLISECONDS, SECONDS, MINUTES, HOURS, DAYS), found {other}"
            ),
            )
        }
    };
    Ok(n * ms)
}
