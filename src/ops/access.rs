//! Who may use the job's endpoint, and what it may show them.
//!
//! On loopback the endpoint is open, as Flink's and Spark's UIs are on a
//! developer's machine. Bound to any other address it needs a bearer
//! token (`--http-token-file`) or an explicit `--http-insecure`: the API
//! stops the job and reads its state. A browser cannot send a bearer
//! header when it opens the page, so `/?token=…` with the right token
//! sets a cookie that carries it from then on, as Jupyter does.
//!
//! Every answer passes the secrets filter on its way out, whatever route
//! made it: a state query, an error or a metric label must never carry a
//! password.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

const COOKIE: &str = "rill_token";

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("the job's endpoint on {addr} would be open to anyone who can reach that address, and its API stops the job: pass --http-token-file FILE to require a bearer token, or --http-insecure if the network is trusted")]
    Open { addr: SocketAddr },
    #[error("cannot read the endpoint's token from {path}: {reason}")]
    Token { path: String, reason: String },
    #[error("the endpoint's token in {path} is empty; put a long random string in it (`openssl rand -hex 32 > {path}`)")]
    EmptyToken { path: String },
}

/// The token requests must carry, if any.
#[derive(Clone, Debug, Default)]
pub struct Access {
    token: Option<Arc<str>>,
}

impl Access {
    /// The access to an endpoint on `addr`: the token of `token_file`,
    /// none on loopback or with `insecure`, else an error.
    pub fn decide(
        addr: SocketAddr,
        token_file: Option<&Path>,
        insecure: bool,
    ) -> Result<Access, AccessError> {
        match token_file {
            Some(path) => Ok(Access {
                token: Some(read_token(path)?.into()),
            }),
            None if addr.ip().is_loopback() || insecure => Ok(Access::default()),
            None => Err(AccessError::Open { addr }),
        }
    }

    pub fn requires_token(&self) -> bool {
        self.token.is_some()
    }
}

/// A token file's token, without its line end.
pub fn read_token(path: &Path) -> Result<String, AccessError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| AccessError::Token {
        path: shown.clone(),
        reason: e.to_string(),
    })?;
    let token = text.trim().to_string();
    if token.is_empty() {
        return Err(AccessError::EmptyToken { path: shown });
    }
    crate::secrets::keep(&token);
    Ok(token)
}

/// Lets a request through when it carries the token (or none is needed).
pub async fn guard(State(access): State<Access>, request: Request, next: Next) -> Response {
    let Some(token) = access.token.clone() else {
        return next.run(request).await;
    };
    let headers = request.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| {
            c.trim()
                .strip_prefix(&format!("{COOKIE}="))
                .map(str::to_string)
        })
        .next();
    let in_query = (request.uri().path() == "/")
        .then(|| {
            request.uri().query().and_then(|q| {
                q.split('&')
                    .find_map(|p| p.strip_prefix("token=").map(str::to_string))
            })
        })
        .flatten();
    let matches = |given: &str| {
        given.len() == token.len() && openssl::memcmp::eq(given.as_bytes(), token.as_bytes())
    };
    if bearer.is_some_and(matches) || cookie.as_deref().is_some_and(matches) {
        return next.run(request).await;
    }
    if in_query.as_deref().is_some_and(matches) {
        // The page, once: from now on the browser sends the cookie.
        return (
            StatusCode::SEE_OTHER,
            [
                (header::LOCATION, "/".to_string()),
                (
                    header::SET_COOKIE,
                    format!("{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/"),
                ),
            ],
        )
            .into_response();
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer realm=\"rill\"")],
        axum::Json(serde_json::json!({
            "error": "this endpoint needs the job's token: send `Authorization: Bearer TOKEN` (jobctl: --http-token-file FILE), or open the page as /?token=TOKEN"
        })),
    )
        .into_response()
}

/// Masks every known secret in an answer's body.
pub async fn redact(response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    let body = match std::str::from_utf8(&bytes) {
        Ok(text) => match crate::secrets::redact(text) {
            std::borrow::Cow::Borrowed(_) => Body::from(bytes),
            std::borrow::Cow::Owned(masked) => {
                parts.headers.remove(header::CONTENT_LENGTH);
                Body::from(masked)
            }
        },
        Err(_) => Body::from(bytes),
    };
    Response::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_off_loopback_needs_a_token_or_insecure() {
        let lo: SocketAddr = "127.0.0.1:9249".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:9249".parse().unwrap();
        assert!(!Access::decide(lo, None, false).unwrap().requires_token());
        let e = Access::decide(any, None, false).unwrap_err().to_string();
        assert!(
            e.starts_with("the job's endpoint on 0.0.0.0:9249 would be open"),
            "{e}"
        );
        assert!(!Access::decide(any, None, true).unwrap().requires_token());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "t0k3n-for-the-api\n").unwrap();
        assert!(Access::decide(any, Some(&file), false)
            .unwrap()
            .requires_token());
        std::fs::write(&file, "\n").unwrap();
        assert!(matches!(
            Access::decide(lo, Some(&file), false),
            Err(AccessError::EmptyToken { .. })
        ));
    }
}
