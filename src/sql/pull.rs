//! A pull query, as ksqlDB takes one against a table: `SELECT … FROM table
//! [WHERE key = value [AND …]] [LIMIT n]`. It is answered by the running
//! job's state endpoint, from what the job has committed.

use sqlparser::ast::{
    BinaryOperator, Expr, LimitClause, SelectItem, SetExpr, Statement, TableFactor, Value,
};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;

#[derive(Debug, Clone, PartialEq)]
pub struct PullQuery {
    /// The table: the job's aggregate of that name.
    pub table: String,
    /// The columns to show; None for `*`.
    pub columns: Option<Vec<String>>,
    /// The key's values, in the order the WHERE clause gives them (the
    /// GROUP BY order), joined as the table's keys are: `a|b`.
    pub key: Option<String>,
    pub limit: Option<usize>,
}

pub fn parse(sql: &str) -> Result<PullQuery, String> {
    let statements = Parser::parse_sql(&GenericDialect {}, sql).map_err(|e| {
        let e = e.to_string();
        e.strip_prefix("sql parser error: ")
            .unwrap_or(&e)
            .to_string()
    })?;
    let [Statement::Query(query)] = statements.as_slice() else {
        return Err("a pull query is one SELECT".into());
    };
    let SetExpr::Select(select) = query.body.as_ref() else {
        return Err("a pull query is a plain SELECT … FROM table".into());
    };
    let [from] = select.from.as_slice() else {
        return Err("a pull query reads one table".into());
    };
    let TableFactor::Table { name, .. } = &from.relation else {
        return Err("a pull query reads one table by its name".into());
    };
    let table = name
        .0
        .last()
        .and_then(|p| p.as_ident())
        .map(super::parse_name)
        .ok_or("a pull query reads one table by its name")?;
    let mut columns = Vec::new();
    for item in &select.projection {
        match item {
            SelectItem::Wildcard(_) => {}
            SelectItem::UnnamedExpr(Expr::Identifier(id)) => columns.push(super::parse_name(id)),
            other => {
                return Err(format!(
                    "a pull query selects `*` or column names, not `{other}`"
                ))
            }
        }
    }
    let mut values = Vec::new();
    if let Some(filter) = &select.selection {
        key_values(filter, &mut values)?;
    }
    let limit = match &query.limit_clause {
        Some(LimitClause::LimitOffset {
            limit: Some(Expr::Value(v)),
            ..
        }) => match &v.value {
            Value::Number(n, _) => {
                Some(n.parse().map_err(|_| format!("LIMIT {n} is not a count"))?)
            }
            other => return Err(format!("LIMIT {other} is not a count")),
        },
        None => None,
        Some(other) => return Err(format!("`{other}` is not a limit rill takes")),
    };
    Ok(PullQuery {
        table,
        columns: (!columns.is_empty()).then_some(columns),
        key: (!values.is_empty()).then(|| values.join("|")),
        limit,
    })
}

/// `col = value [AND col = value …]`: the values, in order.
fn key_values(e: &Expr, out: &mut Vec<String>) -> Result<(), String> {
    match e {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            key_values(left, out)?;
            key_values(right, out)
        }
        Expr::Nested(inner) => key_values(inner, out),
        Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } => match (left.as_ref(), right.as_ref()) {
            (Expr::Identifier(_), Expr::Value(v)) | (Expr::Value(v), Expr::Identifier(_)) => {
                out.push(match &v.value {
                    Value::SingleQuotedString(s) | Value::Number(s, _) => s.clone(),
                    Value::Boolean(b) => b.to_string(),
                    other => return Err(format!("{other} is not a key value")),
                });
                Ok(())
            }
            _ => Err(format!(
                "`{e}`: a pull query looks up a key, as `column = value`"
            )),
        },
        other => Err(format!(
            "`{other}`: a pull query looks up a key, as `column = value [AND …]`"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pull_query_names_its_table_columns_key_and_limit() {
        assert_eq!(
            parse("SELECT brand, cnt FROM metrics_per_brand WHERE brand = 'Acme'").unwrap(),
            PullQuery {
                table: "metrics_per_brand".into(),
                columns: Some(vec!["brand".into(), "cnt".into()]),
                key: Some("Acme".into()),
                limit: None,
            }
        );
        assert_eq!(
            parse("select * from T where a = 1 and b = 'x' limit 5").unwrap(),
            PullQuery {
                table: "t".into(),
                columns: None,
                key: Some("1|x".into()),
                limit: Some(5)
            }
        );
        assert_eq!(
            parse("SELECT * FROM t WHERE a > 1").unwrap_err(),
            "`a > 1`: a pull query looks up a key, as `column = value [AND …]`"
        );
        assert!(
            parse("SELEC * FROM t")
                .unwrap_err()
                .starts_with("Expected: an SQL statement"),
            "{:?}",
            parse("SELEC * FROM t")
        );
    }
}
