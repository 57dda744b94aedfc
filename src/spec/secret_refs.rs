//! The `${VAR}` and `${file:/path}` references of a job file, replaced in
//! every string before any component is read, so that a component never
//! sees a reference and every kind of setting can hold one. A missing
//! variable is an error at its line; a credential written in clear is a
//! warning, as it would travel with the file into version control.

use super::{Locator, Place, SpecError};
use crate::secrets;
use std::path::Path;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// Replaces the references in every string of `table`, learns the
/// secrets among the values, and reports what is wrong or unwise.
pub fn expand(
    table: &mut DeTable<'_>,
    base: &Path,
    locate: &Locator<'_>,
    errors: &mut Vec<SpecError>,
    warnings: &mut Vec<SpecError>,
) {
    let env = |name: &str| std::env::var(name).ok();
    let mut walk = Walk {
        base,
        env: &env,
        locate,
        errors,
        warnings,
    };
    for (key, value) in table.iter_mut() {
        let key = key.get_ref().to_string();
        walk.value(&key, &key, value);
    }
}

struct Walk<'a, 'b> {
    base: &'a Path,
    env: &'a dyn Fn(&str) -> Option<String>,
    locate: &'a Locator<'b>,
    errors: &'a mut Vec<SpecError>,
    warnings: &'a mut Vec<SpecError>,
}

impl Walk<'_, '_> {
    /// `path`: the dotted path of the value, for messages; `key`: the
    /// name of the setting that holds it.
    fn value(&mut self, path: &str, key: &str, value: &mut Spanned<DeValue<'_>>) {
        let span = value.span();
        match value.get_mut() {
            DeValue::String(s) => {
                if let Some(text) = self.string(path, key, s, span) {
                    *s = text.into();
                }
            }
            DeValue::Array(items) => {
                for item in items.iter_mut() {
                    self.value(path, key, item);
                }
            }
            DeValue::Table(t) => {
                for (k, v) in t.iter_mut() {
                    let k = k.get_ref().to_string();
                    self.value(&format!("{path}.{k}"), &k, v);
                }
            }
            _ => {}
        }
    }

    /// The string with its references replaced, or None when it stays.
    fn string(
        &mut self,
        path: &str,
        key: &str,
        text: &str,
        span: std::ops::Range<usize>,
    ) -> Option<String> {
        let place = Place::of(self.locate.text, span);
        let component = component_of(path);
        let expanded = match secrets::expand(text, self.base, self.env) {
            Ok(e) => e,
            Err(e) => {
                self.errors.push(SpecError {
                    line: place.line,
                    column: place.column,
                    len: place.len,
                    component,
                    message: format!("`{path}`: {e}"),
                    hint: None,
                });
                return None;
            }
        };
        secrets::keep_from_setting(key, &expanded);
        let secret = if secrets::is_credential(key) {
            Some(expanded.value.as_str())
        } else {
            secrets::url_password(&expanded.value)
        };
        if let Some(secret) = secret.filter(|s| !s.is_empty()) {
            let mut warn = |message: String, hint: &str| {
                self.warnings.push(SpecError {
                    line: place.line,
                    column: place.column,
                    len: place.len,
                    component: component.clone(),
                    message,
                    hint: Some(hint.into()),
                })
            };
            if !expanded.referenced {
                warn(
                    format!("`{path}` holds a password written in the job file"),
                    "write `${NAME}` to take it from the environment, or `${file:/path}` to read a mounted secret",
                );
            } else if secret.chars().count() < secrets::SHORTEST_HIDDEN {
                warn(
                    format!(
                        "the secret of `{path}` is shorter than {} characters, too short to be hidden where a library quotes it in a log line",
                        secrets::SHORTEST_HIDDEN
                    ),
                    "use a longer secret",
                );
            }
        }
        expanded.referenced.then_some(expanded.value)
    }
}

/// `sources.x` of `sources.x.topic`, `job` of `job.kafka.y`.
fn component_of(path: &str) -> Option<String> {
    let mut parts = path.splitn(3, '.');
    match (parts.next(), parts.next()) {
        (Some("job"), _) => Some("job".into()),
        (Some(kind), Some(name)) => Some(format!("{kind}.{name}")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use crate::spec::Spec;
    use std::path::Path;

    #[test]
    fn references_are_replaced_everywhere_and_a_missing_one_is_an_error_at_its_line() {
        std::env::set_var("RILL_TEST_BROKERS", "b1:9093,b2:9093");
        std::env::set_var("RILL_TEST_KAFKA_PW", "pw-from-the-env");
        let text = r#"[job]
name = "t"
brokers = "${RILL_TEST_BROKERS}"

[job.kafka]
"sasl.username" = "alice"
"sasl.password" = "${RILL_TEST_KAFKA_PW}"

[sources.input]
type = "kafka"
topic = "${RILL_TEST_NO_SUCH_VAR}"
format = "json"
schema = "x.avsc"
"#;
        let (_, errors) = Spec::parse_all(Path::new("t.toml"), text.into());
        assert_eq!(errors.errors.len(), 1, "{errors}");
        assert_eq!(errors.errors[0].line, 11);
        assert!(
            errors.errors[0]
                .message
                .contains("environment variable `RILL_TEST_NO_SUCH_VAR` is not set"),
            "{}",
            errors.errors[0].message
        );
        let text = text.replace("${RILL_TEST_NO_SUCH_VAR}", "in");
        let spec = Spec::parse(Path::new("t.toml"), text).unwrap();
        assert_eq!(spec.job.brokers.servers(), "b1:9093,b2:9093");
        assert_eq!(
            spec.job.brokers.properties()["sasl.password"],
            "pw-from-the-env"
        );
        assert_eq!(crate::secrets::redact("x pw-from-the-env y"), "x *** y");
        assert!(spec.warnings.is_empty(), "{:?}", spec.warnings);
    }

    #[test]
    fn a_password_in_clear_is_a_warning() {
        let text = r#"[job]
name = "t"

[job.kafka]
"sasl.password" = "in-clear-text"

[sinks.pg]
type = "postgres"
url = "postgres://app:also-in-clear@127.0.0.1/db"
table = "t"
"#;
        let spec = Spec::parse(Path::new("t.toml"), text.into()).unwrap();
        let warned: Vec<_> = spec
            .warnings
            .iter()
            .map(|w| (w.line, w.message.as_str()))
            .collect();
        assert_eq!(
            warned,
            [
                (
                    5,
                    "`job.kafka.sasl.password` holds a password written in the job file"
                ),
                (9, "`sinks.pg.url` holds a password written in the job file"),
            ]
        );
        assert_eq!(crate::secrets::redact("also-in-clear"), "***");
    }
}
