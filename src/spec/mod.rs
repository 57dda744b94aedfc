//! The job file: TOML in the style of Vector (`[sources.x]`,
//! `[transforms.y]` with `inputs = [...]`, `[sinks.z]`). Each component is
//! deserialized on its own, so one broken component does not hide the
//! errors of the others; every error carries the line it is about.

pub mod components;

pub use components::*;

use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// One problem in a job file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// 0: the problem is not on a line (the file cannot be read).
    pub line: usize,
    /// 0: not known (job files give lines; SQL files lines and columns).
    pub column: usize,
    /// `sources.x`, `transforms.y`, `sinks.z` or `job`, when it is about one.
    pub component: Option<String>,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 && self.column > 0 {
            write!(f, "line {}, column {}: ", self.line, self.column)?;
        } else if self.line > 0 {
            write!(f, "line {}: ", self.line)?;
        }
        if let Some(c) = &self.component {
            write!(f, "{c}: ")?;
        }
        f.write_str(&self.message)?;
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}

/// Every problem found in a job file, in line order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SpecErrors {
    pub path: PathBuf,
    pub errors: Vec<SpecError>,
}

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        writeln!(
            f,
            "{} has {n} error{}:",
            self.path.display(),
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.errors {
            let at = if e.line > 0 { ":" } else { ": " };
            writeln!(f, "{}{at}{e}", self.path.display())?;
        }
        Ok(())
    }
}

/// A job file as written, before its graph and expressions are checked.
#[derive(Debug, Clone)]
pub struct Spec {
    pub path: PathBuf,
    pub text: String,
    pub job: JobConfig,
    pub sources: BTreeMap<String, SourceConfig>,
    pub transforms: BTreeMap<String, TransformConfig>,
    pub sinks: BTreeMap<String, SinkConfig>,
}

impl Spec {
    /// Directory that relative paths in the job file start from.
    pub fn base_dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    pub fn locate(&self) -> Locator<'_> {
        Locator { text: &self.text }
    }
}

/// Finds the line a component or one of its keys is written on.
pub struct Locator<'a> {
    pub text: &'a str,
}

fn header_path(line: &str) -> Option<Vec<String>> {
    let t = line.trim();
    let inner = t
        .strip_prefix("[[")
        .and_then(|r| r.strip_suffix("]]"))
        .or_else(|| t.strip_prefix('[').and_then(|r| r.split(']').next()))?;
    Some(
        inner
            .split('.')
            .map(|p| p.trim().trim_matches('"').trim_matches('\'').to_string())
            .collect(),
    )
}

fn key_of(line: &str) -> Option<String> {
    let t = line.trim_start();
    if t.starts_with('#') || t.starts_with('[') {
        return None;
    }
    let end = t.find(['=', ' ', '\t'])?;
    Some(t[..end].trim().trim_matches('"').to_string())
}

impl Locator<'_> {
    /// Line (1-based) of the header `[kind.name]`, or of the first header
    /// inside it.
    pub fn component(&self, kind: &str, name: &str) -> usize {
        for (i, line) in self.text.lines().enumerate() {
            if let Some(p) = header_path(line) {
                if p.len() >= 2 && p[0] == kind && p[1] == name {
                    return i + 1;
                }
            }
            // `sources.x = { ... }` or `x = {...}` under `[sources]`.
            if let Some(k) = key_of(line) {
                if k == format!("{kind}.{name}") {
                    return i + 1;
                }
            }
        }
        self.table(kind)
    }

    /// Line of the `[kind]` header (such as `[job]`), or 1.
    pub fn table(&self, kind: &str) -> usize {
        self.text
            .lines()
            .position(|l| header_path(l).is_some_and(|p| p.first().is_some_and(|k| k == kind)))
            .map_or(1, |i| i + 1)
    }

    /// Line of `key` (a path such as `routes.approved`) inside component
    /// `kind.name` (name empty for a top-level table like `[job]`).
    pub fn key(&self, kind: &str, name: &str, key: &str) -> usize {
        let mut owner: Vec<String> = vec![kind.to_string()];
        if !name.is_empty() {
            owner.push(name.to_string());
        }
        let mut current: Option<Vec<String>> = None;
        for (i, line) in self.text.lines().enumerate() {
            if let Some(p) = header_path(line) {
                current = Some(p);
                continue;
            }
            let Some(cur) = &current else { continue };
            if cur.len() < owner.len() || cur[..owner.len()] != owner[..] {
                continue;
            }
            let Some(k) = key_of(line) else { continue };
            // The key as seen from the component: the header's extra parts
            // (`[transforms.split.routes]`) then the key itself.
            let mut full: Vec<String> = cur[owner.len()..].to_vec();
            full.extend(k.split('.').map(|s| s.trim().trim_matches('"').to_string()));
            let full = full.join(".");
            if full == key
                || key.starts_with(&format!("{full}."))
                || full.starts_with(&format!("{key}."))
            {
                return i + 1;
            }
        }
        if name.is_empty() {
            self.table(kind)
        } else {
            self.component(kind, name)
        }
    }
}

fn line_of_offset(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Deserializes one component, collecting unknown fields one by one so the
/// user sees all of them at once.
fn component<T: DeserializeOwned>(
    value: toml::Value,
    kind: &str,
    name: &str,
    locate: &Locator<'_>,
    errors: &mut Vec<SpecError>,
) -> Option<T> {
    let label = if name.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}.{name}")
    };
    let mut value = value;
    for _ in 0..32 {
        match T::deserialize(value.clone()) {
            Ok(v) => return Some(v),
            Err(e) => {
                let msg = e.message().to_string();
                let unknown = msg
                    .strip_prefix("unknown field `")
                    .and_then(|r| r.split('`').next())
                    .map(str::to_string);
                let (message, hint) = match msg.split_once(", expected ") {
                    Some((m, rest)) => (m.to_string(), Some(format!("expected {rest}"))),
                    None => (msg.clone(), None),
                };
                let line = match &unknown {
                    Some(k) => locate.key(kind, name, k),
                    None => match msg
                        .strip_prefix("missing field `")
                        .and_then(|r| r.split('`').next())
                    {
                        Some(_) => {
                            if name.is_empty() {
                                locate.table(kind)
                            } else {
                                locate.component(kind, name)
                            }
                        }
                        None => {
                            if msg.contains("variant") {
                                locate.key(kind, name, "type")
                            } else if let Some(k) = value
                                .as_table()
                                .and_then(|t| t.keys().find(|k| msg.contains(&format!("`{k}`"))))
                            {
                                locate.key(kind, name, k)
                            } else if name.is_empty() {
                                locate.table(kind)
                            } else {
                                locate.component(kind, name)
                            }
                        }
                    },
                };
                errors.push(SpecError {
                    column: 0,
                    line,
                    component: Some(label.clone()),
                    message,
                    hint,
                });
                match (unknown, value.as_table_mut()) {
                    (Some(k), Some(t)) => {
                        t.remove(&k);
                    }
                    _ => return None,
                }
            }
        }
    }
    None
}

impl Spec {
    /// Reads and parses a job file; every error it holds comes back at once.
    pub fn load(path: &Path) -> Result<Spec, SpecErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| SpecErrors {
            path: path.to_path_buf(),
            errors: vec![SpecError {
                column: 0,
                line: 0,
                component: None,
                message: format!("cannot read the job file: {e}"),
                hint: Some("pass the path of a job file such as jobs/bank.toml".into()),
            }],
        })?;
        Spec::parse(path, text)
    }

    pub fn parse(path: &Path, text: String) -> Result<Spec, SpecErrors> {
        let fail = |errors: Vec<SpecError>| SpecErrors {
            path: path.to_path_buf(),
            errors,
        };
        let table: toml::Table = match text.parse() {
            Ok(t) => t,
            Err(e) => {
                let e: toml::de::Error = e;
                let line = e.span().map_or(1, |s| line_of_offset(&text, s.start));
                return Err(fail(vec![SpecError {
                    column: 0,
                    line,
                    component: None,
                    message: format!("not valid TOML: {}", e.message().trim()),
                    hint: None,
                }]));
            }
        };
        let locate = Locator { text: &text };
        let mut errors = Vec::new();
        let mut job = None;
        let mut sources = BTreeMap::new();
        let mut transforms = BTreeMap::new();
        let mut sinks = BTreeMap::new();
        for (key, value) in table {
            match key.as_str() {
                "job" => job = component::<JobConfig>(value, "job", "", &locate, &mut errors),
                "sources" | "transforms" | "sinks" => {
                    let toml::Value::Table(items) = value else {
                        errors.push(SpecError {
                            column: 0,
                            line: locate.table(&key),
                            component: None,
                            message: format!("`{key}` must be a table of components"),
                            hint: Some(format!("write each one as [{key}.NAME]")),
                        });
                        continue;
                    };
                    for (name, v) in items {
                        match key.as_str() {
                            "sources" => {
                                if let Some(c) = component::<SourceConfig>(
                                    v,
                                    "sources",
                                    &name,
                                    &locate,
                                    &mut errors,
                                ) {
                                    sources.insert(name, c);
                                }
                            }
                            "transforms" => {
                                if let Some(c) = component::<TransformConfig>(
                                    v,
                                    "transforms",
                                    &name,
                                    &locate,
                                    &mut errors,
                                ) {
                                    transforms.insert(name, c);
                                }
                            }
                            _ => {
                                if let Some(c) =
                                    component::<SinkConfig>(v, "sinks", &name, &locate, &mut errors)
                                {
                                    sinks.insert(name, c);
                                }
                            }
                        }
                    }
                }
                other => errors.push(SpecError {
                    column: 0,
                    line: locate.table(other).max(
                        text.lines()
                            .position(|l| key_of(l).as_deref() == Some(other))
                            .map_or(1, |i| i + 1),
                    ),
                    component: None,
                    message: format!("unknown table `{other}`"),
                    hint: Some(
                        "a job file has [job], [sources.*], [transforms.*] and [sinks.*]".into(),
                    ),
                }),
            }
        }
        if job.is_none() && !errors.iter().any(|e| e.component.as_deref() == Some("job")) {
            errors.push(SpecError {
                column: 0,
                line: 1,
                component: None,
                message: "missing the [job] table".into(),
                hint: Some("add [job] with at least `name = \"...\"`".into()),
            });
        }
        if !errors.is_empty() {
            errors.sort_by_key(|e| e.line);
            return Err(fail(errors));
        }
        Ok(Spec {
            path: path.to_path_buf(),
            text,
            job: job.unwrap(),
            sources,
            transforms,
            sinks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[job]
name = "t"

[sources.input]
type = "kafka"
topic = "in"
format = "json"
schema = "x.avsc"

[transforms.split]
type = "route"
inputs = ["input"]

[transforms.split.routes]
big = "amount > 10"

[sinks.out]
type = "stdout"
inputs = ["split.big"]
"#;

    #[test]
    fn reads_a_vector_style_job() {
        let spec = Spec::parse(Path::new("t.toml"), GOOD.into()).unwrap();
        assert_eq!(spec.job.checkpoint_interval_ms, 1000);
        assert_eq!(spec.job.dead_letter_topic(), "t.dead-letters");
        let TransformConfig::Route(r) = &spec.transforms["split"] else {
            panic!()
        };
        assert_eq!(r.routes["big"], "amount > 10");
        assert_eq!(spec.locate().key("transforms", "split", "routes.big"), 16);
        assert_eq!(spec.locate().component("sinks", "out"), 18);
    }

    #[test]
    fn collects_every_unknown_field_with_its_line() {
        let text = GOOD
            .replace("topic = \"in\"", "topik = \"in\"\ncolour = 1")
            .replace(
                "inputs = [\"split.big\"]",
                "inputs = [\"split.big\"]\nextra = true",
            );
        let err = Spec::parse(Path::new("t.toml"), text).unwrap_err();
        let lines: Vec<(usize, &str)> = err
            .errors
            .iter()
            .map(|e| (e.line, e.message.as_str()))
            .collect();
        assert_eq!(
            lines,
            vec![
                (5, "missing field `topic`"),
                (7, "unknown field `topik`"),
                (8, "unknown field `colour`"),
                (22, "unknown field `extra`"),
            ]
        );
    }

    #[test]
    fn syntax_errors_have_their_line() {
        let err = Spec::parse(
            Path::new("t.toml"),
            "[job]\nname = \"x\"\nfoo = = 1\n".into(),
        )
        .unwrap_err();
        assert_eq!(err.errors[0].line, 3);
    }
}
