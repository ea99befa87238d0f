//! Dialling a Vakt server: a TLS channel that trusts the installation's CA (and presents a
//! client certificate when given), with the timeouts and HTTP/2 keep-alive every client uses.
//! The agent, the `vakt` command line and the test tools all dial through here, so none of them
//! borrows another's crate for it.

use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("server address '{0}' is not a valid URL")]
    BadUrl(String),
    #[error("cannot reach the server at {server}: {message}")]
    Unreachable { server: String, message: String },
}

/// A TLS channel to `server`, trusting `ca_pem`, presenting `identity` when given.
pub async fn connect(
    server: &str,
    ca_pem: &str,
    identity: Option<(&str, &str)>,
) -> Result<Channel, DialError> {
    endpoint(server, ca_pem, identity)?
        .connect()
        .await
        .map_err(|e| DialError::Unreachable {
            server: server.to_string(),
            message: error_chain(&e),
        })
}

/// The endpoint [`connect`] dials: TLS trusting `ca_pem` (with `identity` as the client
/// certificate when given), timeouts and HTTP/2 keep-alive. The fleet simulator dials it with
/// its own source address.
pub fn endpoint(
    server: &str,
    ca_pem: &str,
    identity: Option<(&str, &str)>,
) -> Result<Endpoint, DialError> {
    let host = host_of(server).ok_or_else(|| DialError::BadUrl(server.to_string()))?;
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name(host);
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let endpoint = Endpoint::from_shared(server.to_string())
        .map_err(|_| DialError::BadUrl(server.to_string()))?
        .tls_config(tls)
        .map_err(|e| DialError::BadUrl(format!("{server}: {e}")))?
        .connect_timeout(Duration::from_secs(10))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(60))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true);
    Ok(endpoint)
}

/// Renders a transport error with its causes: tonic's top-level text ("transport error") alone
/// does not tell a person what went wrong.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        cur = s.source();
    }
    parts.join(": ")
}

fn host_of(url: &str) -> Option<String> {
    let rest = url.strip_prefix("https://")?;
    let authority = rest.split('/').next()?;
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().map(str::to_string);
    }
    Some(
        authority
            .rsplit_once(':')
            .map_or(authority, |(h, _)| h)
            .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_urls() {
        assert_eq!(
            host_of("https://vakt.example.org:7443").as_deref(),
            Some("vakt.example.org")
        );
        assert_eq!(
            host_of("https://127.0.0.1:7443/").as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(host_of("https://[::1]:7443").as_deref(), Some("::1"));
        assert_eq!(host_of("https://h").as_deref(), Some("h"));
        assert_eq!(host_of("http://h"), None);
    }
}
