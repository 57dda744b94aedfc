//! Serving HTTP over TLS: a listener for `axum::serve` that hands over
//! connections whose TLS handshake is done. Handshakes run as tasks of
//! their own, so a client that stalls in one never holds up the others.
//! Used by `jobctl registry --tls-cert` and by a job's endpoint with
//! `--http-tls-cert`.

use openssl::ssl::{Ssl, SslAcceptor, SslFiletype, SslMethod};
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_openssl::SslStream;

/// How long a client may take over its handshake.
const HANDSHAKE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
#[error("cannot serve TLS with certificate {cert} and key {key}: {reason}")]
pub struct TlsSetupError {
    cert: String,
    key: String,
    reason: String,
}

/// A server's certificate (a PEM chain) and its key.
pub fn acceptor(cert: &Path, key: &Path) -> Result<Arc<SslAcceptor>, TlsSetupError> {
    let fail = |reason: String| TlsSetupError {
        cert: cert.display().to_string(),
        key: key.display().to_string(),
        reason,
    };
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())
        .map_err(|e| fail(e.to_string()))?;
    b.set_certificate_chain_file(cert)
        .map_err(|e| fail(format!("the certificate: {e}")))?;
    b.set_private_key_file(key, SslFiletype::PEM)
        .map_err(|e| fail(format!("the key: {e}")))?;
    b.check_private_key()
        .map_err(|e| fail(format!("the key is not the certificate's: {e}")))?;
    Ok(Arc::new(b.build()))
}

/// Connections of `listener` after their TLS handshake with `acceptor`.
pub struct TlsListener {
    ready: mpsc::Receiver<(SslStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Must be called inside a tokio runtime: it spawns the accept loop.
    pub fn new(listener: TcpListener, acceptor: Arc<SslAcceptor>) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::debug!("accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let Ok(ssl) = Ssl::new(acceptor.context()) else {
                        return;
                    };
                    let Ok(mut stream) = SslStream::new(ssl, tcp) else {
                        return;
                    };
                    match tokio::time::timeout(HANDSHAKE, Pin::new(&mut stream).accept()).await {
                        Ok(Ok(())) => {
                            let _ = tx.send((stream, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!("TLS handshake with {peer}: {e}"),
                        Err(_) => tracing::debug!("TLS handshake with {peer} timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { ready, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = SslStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accept loop ends only with the runtime.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
