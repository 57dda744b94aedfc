//! A Postgres URL as libpq reads it, TLS included. tokio-postgres knows
//! `sslmode` only as disable, prefer and require, and none of libpq's
//! certificate parameters; a managed Postgres wants `verify-full` with
//! its CA. So the TLS parameters are taken out of the URL here and turned
//! into an OpenSSL connector that does what libpq does for each mode:
//!
//! | sslmode       | TLS                 | the server's certificate         |
//! |---------------|---------------------|----------------------------------|
//! | `disable`     | never               |                                  |
//! | `allow`, `prefer` (the default) | if the server offers it | not checked |
//! | `require`     | always              | not checked, unless `sslrootcert` is given: then as `verify-ca` (libpq's rule) |
//! | `verify-ca`   | always              | signed by `sslrootcert` (default: the system's CAs) |
//! | `verify-full` | always              | as `verify-ca`, and names the host |
//!
//! `sslcert` and `sslkey` (with `sslpassword` for an encrypted key) give a
//! client certificate. Passwords, SCRAM-SHA-256 among them, are
//! tokio-postgres's own.

use openssl::pkey::PKey;
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use postgres_openssl::MakeTlsConnector;
use tokio_postgres::config::SslMode;

/// What to connect with: tokio-postgres's settings and the TLS connector.
pub struct Target {
    pub config: tokio_postgres::Config,
    pub tls: MakeTlsConnector,
}

#[derive(Debug, PartialEq)]
struct TlsParams {
    mode: String,
    root_cert: Option<String>,
    cert: Option<String>,
    key: Option<String>,
    key_password: Option<String>,
}

/// Reads `url`; an error says what is wrong with it, never its password.
pub fn target(url: &str) -> Result<Target, String> {
    let (rest, tls) = split_tls(url)?;
    let mut config: tokio_postgres::Config = rest
        .parse()
        .map_err(|e: tokio_postgres::Error| format!("not a Postgres URL ({e})"))?;
    config.ssl_mode(match tls.mode.as_str() {
        "disable" => SslMode::Disable,
        "allow" | "prefer" => SslMode::Prefer,
        _ => SslMode::Require,
    });
    Ok(Target {
        config,
        tls: connector(&tls)?,
    })
}

/// The URL without libpq's TLS parameters, and those parameters.
fn split_tls(url: &str) -> Result<(String, TlsParams), String> {
    let mut tls = TlsParams {
        mode: "prefer".into(),
        root_cert: None,
        cert: None,
        key: None,
        key_password: None,
    };
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_string(), tls));
    };
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v);
        match k {
            "sslmode" => {
                if ![
                    "disable",
                    "allow",
                    "prefer",
                    "require",
                    "verify-ca",
                    "verify-full",
                ]
                .contains(&v.as_str())
                {
                    return Err(format!(
                        "sslmode={v} is not one of disable, allow, prefer, require, verify-ca, verify-full"
                    ));
                }
                tls.mode = v;
            }
            "sslrootcert" => tls.root_cert = Some(v),
            "sslcert" => tls.cert = Some(v),
            "sslkey" => tls.key = Some(v),
            "sslpassword" => {
                crate::secrets::keep(&v);
                tls.key_password = Some(v)
            }
            _ => kept.push(pair),
        }
    }
    let rest = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, tls))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1..i + 3)) {
            (b'%', Some(hex)) => {
                match u8::from_str_radix(std::str::from_utf8(hex).unwrap_or("x"), 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn connector(tls: &TlsParams) -> Result<MakeTlsConnector, String> {
    let ssl = |what: &str, e: openssl::error::ErrorStack| format!("{what}: {e}");
    let mut builder = SslConnector::builder(SslMethod::tls_client()).map_err(|e| ssl("TLS", e))?;
    let verify = match tls.mode.as_str() {
        "verify-ca" | "verify-full" => true,
        "require" => tls.root_cert.is_some(),
        _ => false,
    };
    let names_host = tls.mode == "verify-full";
    if verify {
        builder.set_verify(SslVerifyMode::PEER);
        match tls.root_cert.as_deref() {
            None | Some("system") => builder
                .set_default_verify_paths()
                .map_err(|e| ssl("the system's CA certificates", e))?,
            Some(path) => builder
                .set_ca_file(path)
                .map_err(|e| ssl(&format!("sslrootcert={path}"), e))?,
        }
    } else {
        builder.set_verify(SslVerifyMode::NONE);
    }
    match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            builder
                .set_certificate_chain_file(cert)
                .map_err(|e| ssl(&format!("sslcert={cert}"), e))?;
            let pem = std::fs::read(key).map_err(|e| format!("sslkey={key}: {e}"))?;
            let pkey = match &tls.key_password {
                Some(pw) => PKey::private_key_from_pem_passphrase(&pem, pw.as_bytes()),
                None => PKey::private_key_from_pem(&pem),
            }
            .map_err(|e| ssl(&format!("sslkey={key} (is sslpassword right?)"), e))?;
            builder
                .set_private_key(&pkey)
                .map_err(|e| ssl(&format!("sslkey={key}"), e))?;
        }
        (None, None) => {}
        _ => return Err("sslcert and sslkey go together: give both or neither".into()),
    }
    let mut connector = MakeTlsConnector::new(builder.build());
    connector.set_callback(move |config, _| {
        config.set_verify_hostname(names_host);
        Ok(())
    });
    Ok(connector)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_tls_parameters_leave_the_url_and_the_rest_stays() {
        let (rest, tls) = split_tls(
            "postgres://app:pw@db.example.com:5432/x?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=rill",
        )
        .unwrap();
        assert_eq!(
            rest,
            "postgres://app:pw@db.example.com:5432/x?application_name=rill"
        );
        assert_eq!(tls.mode, "verify-full");
        assert_eq!(tls.root_cert.as_deref(), Some("/etc/ca.pem"));
        let (rest, tls) = split_tls("postgres://127.0.0.1/x").unwrap();
        assert_eq!(
            (rest.as_str(), tls.mode.as_str()),
            ("postgres://127.0.0.1/x", "prefer")
        );
        let e = split_tls("postgres://h/x?sslmode=verify").unwrap_err();
        assert!(e.starts_with("sslmode=verify is not one of"), "{e}");
    }

    #[test]
    fn each_mode_asks_tokio_postgres_for_what_libpq_would() {
        for (mode, want) in [
            ("disable", SslMode::Disable),
            ("prefer", SslMode::Prefer),
            ("require", SslMode::Require),
            ("verify-full", SslMode::Require),
        ] {
            let t = target(&format!("postgres://postgres@127.0.0.1/x?sslmode={mode}")).unwrap();
            assert_eq!(t.config.get_ssl_mode(), want, "{mode}");
        }
        let e = target("postgres://h/x?sslmode=verify-ca&sslrootcert=/no/such/ca.pem")
            .err()
            .unwrap();
        assert!(e.starts_with("sslrootcert=/no/such/ca.pem"), "{e}");
        let e = target("postgres://h/x?sslcert=/a.pem").err().unwrap();
        assert_eq!(e, "sslcert and sslkey go together: give both or neither");
    }
}
