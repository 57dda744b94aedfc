//! The job file: TOML in the style of Vector (`[sources.x]`,
//! `[transforms.y]` with `inputs = [...]`, `[sinks.z]`). Each component is
//! deserialized on its own, so one broken component does not hide the
//! errors of the others; every error carries the line it is about.

pub mod components;
pub mod kafka;
mod locate;
mod render;
mod secret_refs;

pub use components::*;
pub use locate::{Locator, Place, Spans};

use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// One problem in a job file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// 0: the problem is not on a line (the file cannot be read).
    pub line: usize,
    /// 0: not known.
    pub column: usize,
    /// Characters from `column` on the line that the problem is about.
    pub len: usize,
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
    /// The file's text, to show each problem's line.
    pub text: Option<String>,
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
        let mut out = String::new();
        for e in &self.errors {
            render::problem(
                &mut out,
                &self.path.display().to_string(),
                self.text.as_deref(),
                e,
            );
        }
        f.write_str(&out)
    }
}

/// A job file as written, before its graph and expressions are checked.
#[derive(Debug, Clone)]
pub struct Spec {
    pub path: PathBuf,
    pub text: String,
    pub spans: Spans,
    pub job: JobConfig,
    pub sources: BTreeMap<String, SourceConfig>,
    pub transforms: BTreeMap<String, TransformConfig>,
    pub sinks: BTreeMap<String, SinkConfig>,
    /// What is allowed but unwise (a password in clear), for `validate`.
    pub warnings: Vec<SpecError>,
}

impl Spec {
    /// Directory that relative paths in the job file start from.
    pub fn base_dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    pub fn locate(&self) -> Locator<'_> {
        Locator {
            text: &self.text,
            spans: &self.spans,
        }
    }
}

/// Deserializes one component from its spanned value, collecting unknown
/// fields one by one so the user sees all of them at once; each problem
/// is placed where the toml parser says it is.
fn component<T: DeserializeOwned>(
    value: &Spanned<DeValue<'_>>,
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
    let mut value = value.clone();
    for _ in 0..64 {
        let e = match T::deserialize(toml::de::ValueDeserializer::from(value.clone())) {
            Ok(v) => return Some(v),
            Err(e) => e,
        };
        let msg = e.message().trim().to_string();
        let unknown = msg
            .strip_prefix("unknown field `")
            .and_then(|r| r.split('`').next())
            .map(str::to_string);
        let (message, hint) = match msg.split_once(", expected ") {
            Some((m, rest)) => (m.to_string(), Some(format!("expected {rest}"))),
            None => (msg.clone(), None),
        };
        // A tagged component (`type = "..."`) is read through serde's
        // buffer, whose errors span the whole component: then the key the
        // message names, or the one holding the value it names, is the
        // place. A missing field is about the component itself.
        let whole = value.span();
        let place = match e.span() {
            Some(span) if span != whole && !msg.starts_with("missing field") => {
                Place::of(locate.text, span)
            }
            _ => match named_key(&value, &msg, unknown.as_deref()) {
                Some(k) if unknown.is_some() => locate.place_of_field(kind, name, &k),
                Some(k) => locate.place_of_key(kind, name, &k),
                None if name.is_empty() => locate.place_of_table(kind),
                None => locate.place_of_component(kind, name),
            },
        };
        errors.push(SpecError {
            line: place.line,
            column: place.column,
            len: place.len,
            component: Some(label.clone()),
            message,
            hint,
        });
        match (unknown, value.get_mut()) {
            (Some(k), DeValue::Table(t)) => {
                t.remove(k.as_str());
            }
            _ => return None,
        }
    }
    None
}

/// The key of `value` an error message is about: the unknown field it
/// names, the key holding the unknown variant it names, or a key it names
/// in backticks.
fn named_key(value: &Spanned<DeValue<'_>>, msg: &str, unknown: Option<&str>) -> Option<String> {
    let DeValue::Table(table) = value.get_ref() else {
        return None;
    };
    if let Some(k) = unknown {
        return Some(k.to_string());
    }
    let variant = msg
        .strip_prefix("unknown variant `")
        .and_then(|r| r.split('`').next());
    table
        .iter()
        .find(|(k, v)| match (variant, v.get_ref()) {
            (Some(x), DeValue::String(s)) => s.as_ref() == x,
            (Some(_), _) => false,
            (None, _) => msg.contains(&format!("`{}`", k.get_ref())),
        })
        .map(|(k, _)| k.get_ref().to_string())
}

impl Spec {
    /// Reads and parses a job file; every error it holds comes back at once.
    pub fn load(path: &Path) -> Result<Spec, SpecErrors> {
        let text = Self::read(path)?;
        Spec::parse(path, text)
    }

    /// Reads and parses a job file as far as it can: every error it holds,
    /// and the job without its unknown keys and tables when every
    /// component could be read otherwise, so that what the plan finds
    /// wrong is reported with them (as `jobctl validate` promises).
    pub fn load_all(path: &Path) -> (Option<Spec>, SpecErrors) {
        match Self::read(path) {
            Ok(text) => Spec::parse_all(path, text),
            Err(e) => (None, e),
        }
    }

    fn read(path: &Path) -> Result<String, SpecErrors> {
        std::fs::read_to_string(path).map_err(|e| SpecErrors {
            path: path.to_path_buf(),
            errors: vec![SpecError {
                line: 0,
                column: 0,
                len: 0,
                component: None,
                message: format!("cannot read the job file: {e}"),
                hint: Some("pass the path of a job file such as jobs/bank.toml".into()),
            }],
            text: None,
        })
    }

    pub fn parse(path: &Path, text: String) -> Result<Spec, SpecErrors> {
        match Spec::parse_all(path, text) {
            (Some(spec), e) if e.errors.is_empty() => Ok(spec),
            (_, e) => Err(e),
        }
    }

    /// [`Spec::parse`], going on past what it can leave out: see
    /// [`Spec::load_all`].
    pub fn parse_all(path: &Path, text: String) -> (Option<Spec>, SpecErrors) {
        let fail = |errors: Vec<SpecError>, text: &str| SpecErrors {
            path: path.to_path_buf(),
            errors,
            text: Some(text.to_string()),
        };
        let (mut document, syntax) = DeTable::parse_recoverable(&text);
        if !syntax.is_empty() {
            let errors = syntax
                .iter()
                .map(|e| {
                    let place = e.span().map_or(Place::line(1), |s| Place::of(&text, s));
                    SpecError {
                        line: place.line,
                        column: place.column,
                        len: place.len,
                        component: None,
                        message: format!("not valid TOML: {}", e.message().trim()),
                        hint: None,
                    }
                })
                .collect();
            return (None, fail(errors, &text));
        }
        let spans = Spans::of(document.get_ref());
        let locate = Locator {
            text: &text,
            spans: &spans,
        };
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let base = path.parent().unwrap_or(Path::new("."));
        secret_refs::expand(
            document.get_mut(),
            base,
            &locate,
            &mut errors,
            &mut warnings,
        );
        // A component that could not be read leaves the job incomplete:
        // its plan would only add errors that are not there.
        let mut incomplete = false;
        let mut job = None;
        let mut sources = BTreeMap::new();
        let mut transforms = BTreeMap::new();
        let mut sinks = BTreeMap::new();
        for (key, value) in document.get_ref().iter() {
            let key = key.get_ref().as_ref();
            match key {
                "job" => {
                    job = component::<JobConfig>(value, "job", "", &locate, &mut errors);
                    incomplete |= job.is_none();
                }
                "sources" | "transforms" | "sinks" => {
                    let DeValue::Table(items) = value.get_ref() else {
                        let place = locate.place_of_table(key);
                        errors.push(SpecError {
                            line: place.line,
                            column: place.column,
                            len: place.len,
                            component: None,
                            message: format!("`{key}` must be a table of components"),
                            hint: Some(format!("write each one as [{key}.NAME]")),
                        });
                        incomplete = true;
                        continue;
                    };
                    for (name, v) in items.iter() {
                        let name = name.get_ref().to_string();
                        match key {
                            "sources" => {
                                match component::<SourceConfig>(v, key, &name, &locate, &mut errors)
                                {
                                    Some(c) => drop(sources.insert(name, c)),
                                    None => incomplete = true,
                                }
                            }
                            "transforms" => {
                                match component::<TransformConfig>(
                                    v,
                                    key,
                                    &name,
                                    &locate,
                                    &mut errors,
                                ) {
                                    Some(c) => drop(transforms.insert(name, c)),
                                    None => incomplete = true,
                                }
                            }
                            _ => {
                                match component::<SinkConfig>(v, key, &name, &locate, &mut errors) {
                                    Some(c) => drop(sinks.insert(name, c)),
                                    None => incomplete = true,
                                }
                            }
                        }
                    }
                }
                other => {
                    let place = locate.place_of_table(other);
                    errors.push(SpecError {
                        line: place.line,
                        column: place.column,
                        len: place.len,
                        component: None,
                        message: format!("unknown table `{other}`"),
                        hint: Some(
                            "a job file has [job], [sources.*], [transforms.*] and [sinks.*]"
                                .into(),
                        ),
                    })
                }
            }
        }
        drop(document);
        if job.is_none() && !errors.iter().any(|e| e.component.as_deref() == Some("job")) {
            errors.push(SpecError {
                line: 1,
                column: 0,
                len: 0,
                component: None,
                message: "missing the [job] table".into(),
                hint: Some("add [job] with at least `name = \"...\"`".into()),
            });
        }
        if let Some(job) = job.as_mut() {
            kafka::resolve(job, &sources, &sinks, &locate, &mut errors);
        }
        errors.sort_by_key(|e| (e.line, e.column));
        warnings.sort_by_key(|e| (e.line, e.column));
        let errors = fail(errors, &text);
        let spec = match job {
            Some(job) if !incomplete => Some(Spec {
                warnings,
                path: path.to_path_buf(),
                job,
                sources,
                transforms,
                sinks,
                spans,
                text,
            }),
            _ => None,
        };
        (spec, errors)
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
