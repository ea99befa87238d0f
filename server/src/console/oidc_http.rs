//! The HTTP client `openidconnect` calls for discovery, the JWKS and the token endpoint: one
//! HTTP/1.1 request per connection over the hyper and rustls (with the public web roots) the
//! server already has, instead of reqwest and a second TLS stack.
//!
//! A console login makes three requests, so connections are not pooled. Each request has a
//! deadline and a size cap on its answer, since a slow or hostile provider must not hold a
//! console task or its memory. Plain HTTP goes only to a loopback host (a test provider on this
//! machine): a discovery document cannot send the token request, with the client secret, to
//! another host in clear.

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use openidconnect::{HttpRequest, HttpResponse};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// How long one request may take, connecting included.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read: discovery documents and key sets are a few KiB.
const MAX_BODY: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0}: not an http(s) URL with a host")]
    BadUrl(String),
    #[error("{0}: plain http is used only for a provider on this machine")]
    PlainToRemote(String),
    #[error("{url}: {message}")]
    Failed { url: String, message: String },
    #[error("{0}: no answer within {TIMEOUT:?}")]
    Timeout(String),
}

/// The client: a rustls configuration with the public roots, shared by every request.
#[derive(Clone)]
pub struct Http {
    tls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Http")
    }
}

impl Http {
    pub fn new() -> Result<Self, rustls::Error> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Self { tls: Arc::new(tls) })
    }

    /// Sends `req` and reads the whole answer, within [`TIMEOUT`].
    pub async fn send(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        let url = req.uri().to_string();
        tokio::time::timeout(TIMEOUT, self.exchange(req))
            .await
            .map_err(|_| HttpError::Timeout(url))?
    }

    async fn exchange(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        let url = req.uri().to_string();
        let failed = |e: &dyn std::fmt::Display| HttpError::Failed {
            url: url.clone(),
            message: e.to_string(),
        };
        let uri = req.uri().clone();
        let host = uri
            .host()
            .ok_or_else(|| HttpError::BadUrl(url.clone()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(HttpError::BadUrl(url)),
        };
        if !tls && crate::config::check_provider_url(&url).is_err() {
            return Err(HttpError::PlainToRemote(url));
        }
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| failed(&e))?;

        // The request as hyper sends it: origin-form target, Host, no keep-alive.
        let (mut parts, body) = req.into_parts();
        parts.uri = uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse()
            .map_err(|e| failed(&e))?;
        let authority = uri
            .authority()
            .map(|a| a.as_str().to_string())
            .unwrap_or_default();
        parts.headers.insert(
            hyper::header::HOST,
            authority.parse().map_err(|e| failed(&e))?,
        );
        parts.headers.insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("close"),
        );
        let req = hyper::Request::from_parts(parts, Full::new(Bytes::from(body)));

        let res = if tls {
            let name =
                rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| failed(&e))?;
            let stream = tokio_rustls::TlsConnector::from(self.tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| failed(&e))?;
            send(hyper_util::rt::TokioIo::new(stream), req).await
        } else {
            send(hyper_util::rt::TokioIo::new(tcp), req).await
        }
        .map_err(|e| failed(&e))?;

        let (parts, body) = res.into_parts();
        let body = Limited::new(body, MAX_BODY)
            .collect()
            .await
            .map_err(|e| failed(&format!("reading the answer: {e}")))?
            .to_bytes();
        Ok(HttpResponse::from_parts(parts, body.to_vec()))
    }
}

/// What `openidconnect` calls. A named, boxed `Send` future: a closure over `&Http` would not
/// be `Send` for every lifetime, which axum's handlers need.
impl<'c> openidconnect::AsyncHttpClient<'c> for Http {
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(self.send(request))
    }
}

/// One request on a fresh HTTP/1.1 connection; the connection task ends with the answer.
async fn send<S>(
    io: S,
    req: hyper::Request<Full<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, hyper::Error>
where
    S: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("oidc http connection: {e}");
        }
    });
    sender.send_request(req).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn get(url: &str) -> HttpRequest {
        openidconnect::http::Request::get(url)
            .body(Vec::new())
            .unwrap()
    }

    #[tokio::test]
    async fn plain_http_goes_to_loopback_only() {
        let http = Http::new().unwrap();
        // Refused before any connection: no resolver, no socket.
        let err = http
            .send(get("http://idp.example.org/token"))
            .await
            .unwrap_err();
        assert!(matches!(err, HttpError::PlainToRemote(_)), "{err}");
        let err = http.send(get("ftp://127.0.0.1/x")).await.unwrap_err();
        assert!(matches!(err, HttpError::BadUrl(_)), "{err}");
    }

    #[tokio::test]
    async fn an_answer_is_read_whole_up_to_the_cap() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            for len in [5, MAX_BODY + 1] {
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap();
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                assert!(head.starts_with("GET /jwks HTTP/1.1\r\n"), "{head}");
                assert!(
                    head.to_lowercase().contains(&format!("host: {addr}")),
                    "{head}"
                );
                let answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n");
                s.write_all(answer.as_bytes()).await.unwrap();
                let _ = s.write_all(&vec![b'x'; len]).await;
            }
        });
        let http = Http::new().unwrap();
        let url = format!("http://{addr}/jwks");
        let r = http.send(get(&url)).await.unwrap();
        assert_eq!(
            (r.status().as_u16(), r.body().as_slice()),
            (200, &b"xxxxx"[..])
        );
        let err = http.send(get(&url)).await.unwrap_err();
        assert!(err.to_string().contains("reading the answer"), "{err}");
    }
}
