//! The admin listener: TCP accept loop, optional TLS, HTTP/1.1 by hyper.
//!
//! Owns: binding the listener (at start, so a busy port is reported at once), the TLS server
//! config (a `[[certificates]]` entry by name, or `[admin] cert`/`key` files), and serving each
//! connection with hyper on the control core's tokio runtime, the client address attached to
//! every request ([`PeerAddr`]). Does not own: what is answered (`handlers`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tower_service::Service as _;

use super::handlers::PeerAddr;
use super::AdminApiError;
use crate::config::{AdminTls, Config};

/// How long a client may take to complete the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds the admin listener.
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, AdminApiError> {
    let listener = std::net::TcpListener::bind(addr).map_err(|source| AdminApiError::Bind { addr, source })?;
    listener.set_nonblocking(true).map_err(|source| AdminApiError::Bind { addr, source })?;
    Ok(listener)
}

/// Always the same certificate.
#[derive(Debug)]
struct FixedCertificate(Arc<CertifiedKey>);

impl ResolvesServerCert for FixedCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// The TLS server config for `[admin]`'s certificate (`None`: plain HTTP).
pub fn tls_config(tls: Option<&AdminTls>, config: &Config) -> Result<Option<Arc<rustls::ServerConfig>>, AdminApiError> {
    let key = match tls {
        None => return Ok(None),
        Some(AdminTls::Certificate(name)) => config
            .certificates
            .by_name(name)
            .map(|c| c.key.clone())
            .ok_or_else(|| AdminApiError::Tls(format!("no certificate named `{name}`")))?,
        Some(AdminTls::Files { cert, key }) => {
            let spec = crate::tls::store::CertificateSpec { name: "admin".into(), cert_path: cert.clone(), key_path: key.clone(), default: false };
            crate::tls::store::load_certificate(&spec).map_err(|(_, message)| AdminApiError::Tls(message))?.key
        }
    };
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| AdminApiError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(FixedCertificate(key)));
    let mut server = server;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(Arc::new(server)))
}

/// Accepts and serves connections until the runtime stops.
pub async fn serve(listener: std::net::TcpListener, tls: Option<Arc<rustls::ServerConfig>>, app: Router) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "admin API: cannot use the listener");
            return;
        }
    };
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::debug!(error = %e, "admin API accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let app = app.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            match acceptor {
                None => serve_connection(TokioIo::new(stream), peer, app).await,
                Some(acceptor) => match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls_stream)) => serve_connection(TokioIo::new(tls_stream), peer, app).await,
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "admin API TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "admin API TLS handshake timed out"),
                },
            }
        });
    }
}

async fn serve_connection<I>(io: I, peer: SocketAddr, app: Router)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(PeerAddr(peer));
        app.clone().call(request)
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .header_read_timeout(Duration::from_secs(10))
        .timer(hyper_util::rt::TokioTimer::new())
        .serve_connection(io, service);
    if let Err(e) = connection.await {
        tracing::debug!(%peer, error = %e, "admin API connection ended by an error");
    }
}
