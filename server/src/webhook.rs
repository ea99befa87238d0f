//! Webhooks: the same events that reach a manager by mail, POSTed as JSON to other systems
//! (a ticketing system, a chat channel). A small HTTP/1.1 client over the project's own TLS
//! stack: one request per connection, success is any 2xx status. The outbox retries failures.

use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The URL in these is shown redacted (scheme, host and port; see [`crate::redact`]): the
/// message is logged and kept in the outbox.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WebhookError {
    #[error("webhook url '{}' is not http:// or https://host[:port]/path", crate::redact::url(.0))]
    BadUrl(String),
    #[error("{}: {message}", crate::redact::url(url))]
    Failed { url: String, message: String },
}

/// The parts of a webhook URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub path: String,
}

/// Parses `http(s)://host[:port][/path]`.
pub fn parse_url(url: &str) -> Result<Target, WebhookError> {
    let bad = || WebhookError::BadUrl(url.to_string());
    let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(bad());
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') || path.contains(char::is_whitespace) {
        return Err(bad());
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
            (h, p.parse::<u16>().map_err(|_| bad())?)
        }
        _ => (authority, if tls { 443 } else { 80 }),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad());
    }
    Ok(Target {
        tls,
        host: host.to_string(),
        port,
        path: path.to_string(),
    })
}

/// The bytes of the request.
pub fn request(t: &Target, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: vakt-server/{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        t.path,
        t.host,
        env!("CARGO_PKG_VERSION"),
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// The status code of an HTTP/1.x response's first line.
pub fn status_of(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\n').next()?;
    let text = std::str::from_utf8(line).ok()?;
    let mut parts = text.split_whitespace();
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    req: &[u8],
) -> std::io::Result<Vec<u8>> {
    s.write_all(req).await?;
    s.flush().await?;
    let mut head = vec![0u8; 512];
    let mut n = 0;
    while n < head.len() {
        let got = s.read(&mut head[n..]).await?;
        if got == 0 {
            break;
        }
        n += got;
        if head[..n].contains(&b'\n') {
            break;
        }
    }
    head.truncate(n);
    Ok(head)
}

/// POSTs `body` to `url`; Ok on a 2xx answer within 15 seconds.
pub async fn post(url: &str, body: &[u8]) -> Result<(), WebhookError> {
    let t = parse_url(url)?;
    let failed = |message: String| WebhookError::Failed {
        url: url.to_string(),
        message,
    };
    let req = request(&t, body);
    let work = async {
        let tcp = tokio::net::TcpStream::connect((t.host.as_str(), t.port))
            .await
            .map_err(|e| failed(e.to_string()))?;
        let head = if t.tls {
            let mut roots = rustls::RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| failed(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
            let name = rustls::pki_types::ServerName::try_from(t.host.clone())
                .map_err(|e| failed(e.to_string()))?;
            let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
                .connect(name, tcp)
                .await
                .map_err(|e| failed(e.to_string()))?;
            exchange(tls, &req).await
        } else {
            exchange(tcp, &req).await
        }
        .map_err(|e| failed(e.to_string()))?;
        match status_of(&head) {
            Some(code) if (200..300).contains(&code) => Ok(()),
            Some(code) => Err(failed(format!("answered HTTP {code}"))),
            None => Err(failed("did not answer HTTP".into())),
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(15), work)
        .await
        .map_err(|_| failed("no answer within 15 s".into()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("https://hooks.example.org/vakt/1?x=y").unwrap(),
            Target {
                tls: true,
                host: "hooks.example.org".into(),
                port: 443,
                path: "/vakt/1?x=y".into()
            }
        );
        assert_eq!(parse_url("http://127.0.0.1:8080").unwrap().port, 8080);
        assert_eq!(parse_url("http://[::1]:9/x").unwrap().host, "::1");
        for bad in [
            "ftp://x",
            "http://",
            "http://user@h/",
            "http://h:notaport/",
            "https://h/a b",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn status_lines() {
        assert_eq!(status_of(b"HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(status_of(b"HTTP/1.0 500 Oops\r\n"), Some(500));
        assert_eq!(status_of(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(status_of(b""), None);
    }

    #[tokio::test]
    async fn posts_to_a_local_listener() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.unwrap();
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                .await
                .unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        post(&format!("http://{addr}/hook"), br#"{"event":"x"}"#)
            .await
            .unwrap();
        let got = server.await.unwrap();
        assert!(got.starts_with("POST /hook HTTP/1.1\r\n"));
        assert!(got.ends_with(r#"{"event":"x"}"#));
        let refused = post("http://127.0.0.1:9/", b"{}").await.unwrap_err();
        assert!(matches!(refused, WebhookError::Failed { .. }));
    }
}
