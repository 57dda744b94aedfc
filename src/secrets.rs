//! Secrets: the `${VAR}` and `${file:/path}` references a job file may
//! hold instead of a credential, and the values that must never be shown.
//!
//! Masking by the name of a setting (`sasl.password = ***` in `explain`)
//! hides what rill prints on purpose; it cannot hide a password that a
//! client library quotes in an error, or a URL in a log line. So every
//! secret a process learns is also kept here, and everything it writes
//! for people (its log, its errors, its HTTP answers, the line printed
//! when it dies) passes through [`redact`] on its way out.

use std::borrow::Cow;
use std::sync::RwLock;

/// What a secret is shown as.
pub const MASK: &str = "***";

/// Values shorter than this are not searched for in output: a password of
/// two characters would turn every log line into asterisks. Such a value
/// is still masked wherever it is shown by its setting's name, and
/// `jobctl validate` warns about it.
pub const SHORTEST_HIDDEN: usize = 4;

/// Every secret this process knows, longest first, so that a secret that
/// holds another is masked whole.
static KNOWN: RwLock<Vec<Box<str>>> = RwLock::new(Vec::new());

/// Remembers `value` as a secret: from now on, [`redact`] masks it.
pub fn keep(value: &str) {
    if value.chars().count() < SHORTEST_HIDDEN {
        return;
    }
    let mut known = KNOWN.write().unwrap_or_else(|e| e.into_inner());
    if known.iter().any(|k| &**k == value) {
        return;
    }
    known.push(value.into());
    known.sort_by_key(|k| std::cmp::Reverse(k.len()));
}

/// `text` with every known secret replaced by [`MASK`].
pub fn redact(text: &str) -> Cow<'_, str> {
    let known = KNOWN.read().unwrap_or_else(|e| e.into_inner());
    let mut out = Cow::Borrowed(text);
    for secret in known.iter() {
        if out.contains(&**secret) {
            out = Cow::Owned(out.replace(&**secret, MASK));
        }
    }
    out
}

/// Whether a setting named `key` holds a credential: its value is masked
/// wherever the setting is shown, and a literal one in a job file draws a
/// warning. The names follow librdkafka's and libpq's (`sasl.password`,
/// `ssl.key.password`, `ssl.key.pem`, `sasl.oauthbearer.client.secret`,
/// `sasl.jaas.config`) and rill's own (`registry_password`,
/// `registry_token`).
pub fn is_credential(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "secret", "token", "key.pem", "sasl.jaas.config"]
        .iter()
        .any(|word| key.contains(word))
        || key == "sasl.oauthbearer.config"
}

/// The password of a URL such as `postgres://user:pw@host/db`, if it has
/// one.
pub fn url_password(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let (userinfo, _) = authority.rsplit_once('@')?;
    let (_, password) = userinfo.split_once(':')?;
    (!password.is_empty()).then_some(password)
}

/// `url` with its password shown as [`MASK`].
pub fn mask_url(url: &str) -> String {
    match url_password(url) {
        Some(pw) => url.replacen(&format!(":{pw}@"), &format!(":{MASK}@"), 1),
        None => url.to_string(),
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ExpandError {
    #[error("environment variable `{0}` is not set; export it, or write the value in place of `${{{0}}}`")]
    MissingVar(String),
    #[error("cannot read secret file `{path}`: {reason}")]
    File { path: String, reason: String },
    #[error("`${{` opens a reference that is not closed; write `${{NAME}}` or `${{file:/path}}`, or `$${{` for a literal `${{`")]
    Unclosed,
    #[error("`${{}}` names nothing; write `${{NAME}}` or `${{file:/path}}`")]
    Empty,
}

/// A string of a job file with its references replaced.
#[derive(Debug, PartialEq)]
pub struct Expanded {
    pub value: String,
    /// Whether any part of it was read from a file (`${file:…}`), which
    /// makes the whole value a secret.
    pub from_file: bool,
    /// Whether it held any reference.
    pub referenced: bool,
}

/// Replaces `${NAME}` with the environment variable NAME and
/// `${file:PATH}` with the contents of the file at PATH (relative paths
/// start at `base`), less one trailing newline, as mounted secrets are
/// read by Kafka Connect's file config provider. `$${` is a literal `${`.
pub fn expand(
    text: &str,
    base: &std::path::Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Expanded, ExpandError> {
    let mut out = Expanded {
        value: String::with_capacity(text.len()),
        from_file: false,
        referenced: false,
    };
    let mut rest = text;
    while let Some(at) = rest.find("${") {
        if rest[..at].ends_with('$') {
            out.value.push_str(&rest[..at - 1]);
            out.value.push_str("${");
            rest = &rest[at + 2..];
            continue;
        }
        out.value.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let end = after.find('}').ok_or(ExpandError::Unclosed)?;
        let name = after[..end].trim();
        if name.is_empty() {
            return Err(ExpandError::Empty);
        }
        out.referenced = true;
        match name.strip_prefix("file:") {
            Some(path) => {
                let path = base.join(path.trim());
                let text = std::fs::read_to_string(&path).map_err(|e| ExpandError::File {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?;
                let text = text
                    .strip_suffix("\r\n")
                    .or_else(|| text.strip_suffix('\n'))
                    .unwrap_or(&text);
                out.value.push_str(text);
                out.from_file = true;
            }
            None => out
                .value
                .push_str(&env(name).ok_or_else(|| ExpandError::MissingVar(name.into()))?),
        }
        rest = &after[end + 1..];
    }
    out.value.push_str(rest);
    Ok(out)
}

/// Learns the secrets of a setting `key` whose value is `value` (after
/// [`expand`]): the whole value of a credential or of anything read from
/// a file, and the password of a URL.
pub fn keep_from_setting(key: &str, expanded: &Expanded) {
    if is_credential(key) || expanded.from_file {
        keep(&expanded.value);
    }
    if let Some(pw) = url_password(&expanded.value) {
        keep(pw);
    }
}

/// A writer that masks secrets in what passes through it: the log's.
pub struct Redacting<W>(pub W);

impl<W: std::io::Write> std::io::Write for Redacting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // The log writes one event per call; masking works on whole
        // events, so a secret is never split across two calls.
        match std::str::from_utf8(buf) {
            Ok(text) => self.0.write_all(redact(text).as_bytes()),
            Err(_) => self.0.write_all(buf),
        }?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// Makes a panic's message pass through [`redact`]: a panic can quote a
/// setting it failed on.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "Box<dyn Any>".into());
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let thread = std::thread::current();
        eprintln!(
            "thread '{}' panicked{place}:\n{}",
            thread.name().unwrap_or("<unnamed>"),
            redact(&message)
        );
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn env(name: &str) -> Option<String> {
        match name {
            "USER" => Some("alice".into()),
            "PW" => Some("s3cr3t-pw".into()),
            _ => None,
        }
    }

    #[test]
    fn expands_variables_files_and_literal_dollars() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "from-file\n").unwrap();
        let e = expand("${USER}:${ PW }@host", dir.path(), &env).unwrap();
        assert_eq!(e.value, "alice:s3cr3t-pw@host");
        assert!(e.referenced && !e.from_file);
        let e = expand("${file:pw}", dir.path(), &env).unwrap();
        assert_eq!(e.value, "from-file");
        assert!(e.from_file);
        let e = expand("cost $${x} and $5", Path::new("."), &env).unwrap();
        assert_eq!(e.value, "cost ${x} and $5");
        assert!(!e.referenced);
    }

    #[test]
    fn a_missing_variable_or_file_is_named() {
        assert_eq!(
            expand("${NOPE}", Path::new("."), &env),
            Err(ExpandError::MissingVar("NOPE".into()))
        );
        assert!(matches!(
            expand("${file:/no/such/file}", Path::new("."), &env),
            Err(ExpandError::File { path, .. }) if path == "/no/such/file"
        ));
        assert_eq!(
            expand("${USER", Path::new("."), &env),
            Err(ExpandError::Unclosed)
        );
        assert_eq!(expand("${}", Path::new("."), &env), Err(ExpandError::Empty));
    }

    #[test]
    fn credentials_are_known_by_their_names() {
        for key in [
            "sasl.password",
            "ssl.key.password",
            "ssl.key.pem",
            "sasl.oauthbearer.client.secret",
            "sasl.jaas.config",
            "registry_password",
            "registry_token",
            "sasl.oauthbearer.config",
        ] {
            assert!(is_credential(key), "{key}");
        }
        for key in [
            "sasl.username",
            "ssl.ca.location",
            "ssl.certificate.location",
            "brokers",
        ] {
            assert!(!is_credential(key), "{key}");
        }
    }

    #[test]
    fn url_passwords_are_found_and_masked() {
        let url = "postgres://app:pa:ss@db.example.com:5432/x?sslmode=require";
        assert_eq!(url_password(url), Some("pa:ss"));
        assert_eq!(
            mask_url(url),
            "postgres://app:***@db.example.com:5432/x?sslmode=require"
        );
        assert_eq!(url_password("postgres://app@db/x"), None);
        assert_eq!(url_password("http://127.0.0.1:8081"), None);
    }

    #[test]
    fn known_secrets_are_masked_longest_first_and_short_ones_are_not() {
        keep("tok-123456");
        keep("tok-123456-and-more");
        keep("ab");
        assert_eq!(
            redact("a tok-123456-and-more b tok-123456 c ab"),
            "a *** b *** c ab"
        );
        let mut out = Vec::new();
        std::io::Write::write_all(&mut Redacting(&mut out), b"x=tok-123456\n").unwrap();
        assert_eq!(out, b"x=***\n");
    }
}
