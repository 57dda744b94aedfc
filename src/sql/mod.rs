//! The SQL front end: a file of ksqlDB-style statements (`CREATE STREAM`,
//! `CREATE TABLE … AS SELECT … GROUP BY … EMIT CHANGES`, `SET`) becomes
//! the job file it means (`compile`), which is then read, checked and
//! planned as any job file is: one engine, two front ends. Every problem is
//! given at once, at its line and column in the SQL.

mod compile;
mod parse;
pub mod pull;

use crate::spec::{Spec, SpecError, SpecErrors};
use std::path::Path;

pub use parse::At;

/// A SQL job read as the job file it means, with the SQL place each of
/// that file's lines came from.
pub struct Translated {
    pub spec: Spec,
    pub origins: Vec<At>,
    /// The SQL itself, to show the lines errors are about.
    pub sql: String,
}

impl Translated {
    /// Errors found in the job file, moved to the SQL they came from.
    pub fn errors_in_sql(&self, errors: SpecErrors) -> SpecErrors {
        moved_to_sql(&self.origins, &self.sql, errors)
    }

    /// The job file the SQL means, as text.
    pub fn job_file(&self) -> &str {
        &self.spec.text
    }
}

fn moved_to_sql(origins: &[At], sql: &str, mut errors: SpecErrors) -> SpecErrors {
    for e in &mut errors.errors {
        if let Some(at) = e.line.checked_sub(1).and_then(|i| origins.get(i)) {
            e.line = at.line;
            e.column = at.column;
            e.len = 1;
        }
    }
    errors.text = Some(sql.to_string());
    errors.errors.sort_by_key(|e| (e.line, e.column));
    errors
}

/// A name as rill's fields are written: ksqlDB upper-cases unquoted names,
/// rill keeps the schema's case (mostly lower), so an unquoted name is
/// lower-cased and a quoted one kept.
pub(crate) fn parse_name(ident: &sqlparser::ast::Ident) -> String {
    match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_lowercase(),
    }
}

/// Reads the SQL job at `path`. `schema_of(registry_url, topic)` gives the
/// registry's schema for a stream declared without columns.
pub fn load(
    path: &Path,
    schema_of: impl Fn(&str, &str) -> Result<String, String> + 'static,
) -> Result<Translated, SpecErrors> {
    let fail = |errors: Vec<SpecError>, sql: Option<&str>| SpecErrors {
        path: path.to_path_buf(),
        errors,
        text: sql.map(str::to_string),
    };
    let sql = std::fs::read_to_string(path).map_err(|e| {
        fail(
            vec![SpecError {
                line: 0,
                column: 0,
                len: 0,
                component: None,
                message: format!("cannot read the job: {e}"),
                hint: None,
            }],
            None,
        )
    })?;
    let (statements, mut problems) = parse::statements(&sql);
    let registry = statements
        .iter()
        .rev()
        .find_map(|s| match s {
            parse::Statement::Set { key, value, .. } if key == "schema.registry.url" => {
                Some(value.clone())
            }
            _ => None,
        })
        .unwrap_or_else(|| "http://127.0.0.1:8081".into());
    let mut compiler = compile::Compiler::new(Box::new(move |topic| schema_of(&registry, topic)));
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("job");
    compiler.job(stem, &statements);
    for s in &statements {
        if let parse::Statement::Create(c) = s {
            compiler.statement(c, &statements);
        }
    }
    if !statements
        .iter()
        .any(|s| matches!(s, parse::Statement::Create(c) if c.select.is_some()))
        && problems.is_empty()
    {
        problems.push(parse::Problem {
            at: At { line: 1, column: 1 },
            message: "the job has no query, so nothing to run".into(),
            hint: Some("add CREATE STREAM … AS SELECT … or CREATE TABLE … AS SELECT …".into()),
        });
    }
    problems.extend(compiler.problems);
    if !problems.is_empty() {
        problems.sort_by_key(|p| (p.at.line, p.at.column));
        return Err(fail(
            problems
                .into_iter()
                .map(|p| SpecError {
                    line: p.at.line,
                    column: p.at.column,
                    len: 1,
                    component: None,
                    message: p.message,
                    hint: p.hint,
                })
                .collect(),
            Some(&sql),
        ));
    }
    let origins = compiler.toml.origins;
    match Spec::parse(path, compiler.toml.text) {
        Ok(spec) => Ok(Translated { spec, origins, sql }),
        Err(errors) => Err(moved_to_sql(&origins, &sql, errors)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn translate(sql: &str) -> Result<String, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.sql");
        std::fs::write(&path, sql).unwrap();
        load(&path, |_, topic| Err(format!("no subject `{topic}-value`")))
            .map(|t| t.job_file().to_string())
            .map_err(|e| e.to_string().replace(&path.display().to_string(), "t.sql"))
    }

    #[test]
    fn seed_004s_table_becomes_an_aggregate_with_the_seeds_names() {
        let toml = translate(
            "SET 'processing.guarantee'='exactly_once';\n\
             CREATE STREAM ratings (brand VARCHAR, duration INT, rating DOUBLE) WITH (KAFKA_TOPIC='commercials_avro', VALUE_FORMAT='AVRO');\n\
             CREATE OR REPLACE TABLE metrics_per_brand AS\n  SELECT brand,\n         COUNT(*) AS cnt,\n         AVG(duration) AS  duration_mean\n  FROM ratings\n  GROUP BY brand\n  EMIT CHANGES;\n",
        )
        .unwrap();
        assert!(toml.contains("[transforms.metrics_per_brand]\ntype = \"aggregate\"\ninputs = [\"ratings\"]\ngroup_by = [\"brand\"]\naggregates.\"cnt\" = \"count()\"\naggregates.\"duration_mean\" = \"avg(duration)\"\n"), "{toml}");
        assert!(toml.contains("[sinks.metrics_per_brand_topic]\ntype = \"kafka\"\ninputs = [\"metrics_per_brand\"]\ntopic = \"metrics_per_brand\"\nformat = \"avro\"\n"), "{toml}");
        assert!(toml.contains("guarantee = \"exactly_once\""), "{toml}");
    }

    #[test]
    fn a_windowed_table_with_having_names_its_unnamed_aggregate_as_ksqldb_does() {
        let toml = translate(
            "CREATE STREAM s (brand VARCHAR) WITH (KAFKA_TOPIC='t', VALUE_FORMAT='JSON');\n\
             CREATE OR REPLACE TABLE w AS\nSELECT BRAND, count(*)\nFROM s\nWINDOW TUMBLING (SIZE 5 SECONDS)\nGROUP BY BRAND\nHAVING count(*) > 3;\n",
        )
        .unwrap();
        assert!(toml.contains("aggregates.\"KSQL_COL_0\" = \"count()\"\nhaving = \"KSQL_COL_0 > 3\"\n[transforms.w.window]\ntype = \"tumbling\"\ntime_field = \"_timestamp\"\nsize_ms = 5000\n"), "{toml}");
    }

    #[test]
    fn hopping_and_session_windows_with_grace_become_window_settings() {
        let toml = translate(
            "CREATE STREAM s (k VARCHAR, v DOUBLE) WITH (KAFKA_TOPIC='t', VALUE_FORMAT='JSON');\n\
             CREATE TABLE h AS SELECT k, SUM(v) AS total FROM s WINDOW HOPPING (SIZE 1 MINUTE, ADVANCE BY 10 SECONDS, GRACE PERIOD 2 SECONDS) GROUP BY k EMIT CHANGES;\n\
             CREATE TABLE g AS SELECT k, MAX(v) AS top FROM s WINDOW SESSION (30 SECONDS) WHERE v > 0 GROUP BY k;\n",
        )
        .unwrap();
        assert!(toml.contains("aggregates.\"total\" = \"sum(v)\"\nemit = \"updates\"\n[transforms.h.window]\ntype = \"hopping\"\ntime_field = \"_timestamp\"\nsize_ms = 60000\nhop_ms = 10000\nallowed_lateness_ms = 2000\nidle_timeout_ms = 60000\n"), "{toml}");
        assert!(toml.contains("[transforms.g_where]\ntype = \"filter\"\ninputs = [\"s\"]\ncondition = \"v > 0\"\n"), "{toml}");
        assert!(toml.contains("[transforms.g.window]\ntype = \"session\"\ntime_field = \"_timestamp\"\ngap_ms = 30000\n"), "{toml}");
    }

    #[test]
    fn every_problem_is_given_at_once_with_its_line_and_column() {
        let err = translate(
            "SET 'no.such'='x';\n\
             CREATE STREAM s (a VARCHAR, b WIDGET) WITH (KAFKA_TOPIC='t');\n\
             CREATE STREAM o AS SELECT a FROM nope;\n\
             CREATE STREAM p AS SELECT FROM s;\n\
             CREATE TABLE q AS SELECT a, SUM(b) FROM s GROUP BY a + 1;\n",
        )
        .unwrap_err();
        let headings: Vec<&str> = err.lines().filter(|l| l.starts_with("t.sql")).collect();
        assert_eq!(
            headings,
            [
                "t.sql has 5 errors:",
                "t.sql:line 1, column 1: unknown setting 'no.such'",
                "t.sql:line 2, column 29: column `b` has type WIDGET, which rill does not read",
                "t.sql:line 3, column 34: no stream `nope` is declared before this statement",
                "t.sql:line 4, column 32: expected an expression, found: FROM",
                "t.sql:line 5, column 52: GROUP BY takes column names",
            ]
        );
        // Each is shown on its line, its place marked, then its hint.
        assert!(
            err.contains(
                "t.sql:line 2, column 29: column `b` has type WIDGET, which rill does not read\n  |\n\
                 2 | CREATE STREAM s (a VARCHAR, b WIDGET) WITH (KAFKA_TOPIC='t');\n  |                             ^\n\
                 \x20 hint: column types: BOOLEAN, INT, BIGINT, DOUBLE, VARCHAR (STRING), BYTES\n"
            ),
            "{err}"
        );
    }
}
