//! Who may scrape `/metrics` ([`crate::server::run_metrics`]): the bearer token from
//! `metrics_token_file` (`--metrics-token-file`), and how the listener is reached (plain HTTP on
//! loopback, TLS with the server's certificate elsewhere, as the console).
//!
//! The metrics name how many laptops are lost, in which states, and the findings per rule, and
//! a scrape makes the server count them: so a listener other machines reach never answers
//! without the token (`config` refuses to start one that has none), and the token is compared
//! in constant time. The comparison is an HMAC check under a key made at start: `ring`'s tag
//! verification is constant-time, and it takes neither the token's length nor its prefix from
//! the timing of a wrong guess.

use crate::console::Transport;
use ring::hmac;
use std::path::{Path, PathBuf};

/// The most a token file may hold: a token is a line, and a FIFO or a huge file named by
/// mistake must neither hang nor fill the memory of the start.
const MAX_FILE_BYTES: u64 = 4096;
/// Shorter tokens are refused: the port may be reachable from the whole network, and a short
/// token is one that can be guessed there.
pub const MIN_TOKEN_CHARS: usize = 16;

/// How `/metrics` is served: the transport, and the token a scrape must carry (none: open,
/// which `config` allows on loopback only).
#[derive(Debug)]
pub struct MetricsAccess {
    pub transport: Transport,
    pub token: Option<ScrapeToken>,
}

/// The scrape token, kept as an HMAC tag under a key of this process, never as text.
pub struct ScrapeToken {
    key: hmac::Key,
    tag: hmac::Tag,
}

impl std::fmt::Debug for ScrapeToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScrapeToken(..)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScrapeTokenError {
    #[error("metrics_token_file {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("metrics_token_file {}: {message}", .path.display())]
    Invalid { path: PathBuf, message: String },
}

impl ScrapeToken {
    /// The token in `path` (read once, at start): one line of at least [`MIN_TOKEN_CHARS`]
    /// visible ASCII characters, as Prometheus' `credentials_file` sends it (it trims the
    /// surrounding white space, so do we).
    pub fn load(path: &Path) -> Result<Self, ScrapeTokenError> {
        let read = |source| ScrapeTokenError::Read {
            path: path.to_path_buf(),
            source,
        };
        let invalid = |message: String| ScrapeTokenError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        // Judged before it is opened: opening a FIFO for reading would wait for a writer.
        let meta = std::fs::metadata(path).map_err(read)?;
        if !meta.is_file() {
            return Err(invalid("not a regular file".into()));
        }
        if let Some(why) = crate::fsutil::exposed(&meta) {
            return Err(invalid(why));
        }
        if meta.len() > MAX_FILE_BYTES {
            return Err(invalid(format!(
                "{} bytes; a token file holds one line",
                meta.len()
            )));
        }
        let file = std::fs::File::open(path).map_err(read)?;
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::Read::take(file, MAX_FILE_BYTES), &mut bytes)
            .map_err(read)?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| invalid("not text; write the token as one line".into()))?;
        Self::new(text).map_err(invalid)
    }

    /// The token from a file's text (surrounding white space ignored); the error says what is
    /// wrong with it.
    pub fn new(text: &str) -> Result<Self, String> {
        let token = text.trim();
        if token.is_empty() {
            return Err(
                "the file is empty; write a token in it, e.g. the output of \
                        `openssl rand -hex 32`"
                    .into(),
            );
        }
        if let Some(c) = token.chars().find(|c| !c.is_ascii_graphic()) {
            return Err(format!(
                "the token has {c:?} in it: a bearer token is one line of visible ASCII \
                 characters, e.g. the output of `openssl rand -hex 32`"
            ));
        }
        if token.len() < MIN_TOKEN_CHARS {
            return Err(format!(
                "the token has {} characters; at least {MIN_TOKEN_CHARS} are needed, e.g. \
                 the output of `openssl rand -hex 32`",
                token.len()
            ));
        }
        let key = hmac::Key::new(hmac::HMAC_SHA256, &crate::token::random_bytes::<32>());
        let tag = hmac::sign(&key, token.as_bytes());
        Ok(Self { key, tag })
    }

    /// Whether an `Authorization` header's value is `Bearer <this token>` (the scheme in any
    /// case, RFC 9110 section 11.1).
    pub fn admits(&self, authorization: Option<&[u8]>) -> bool {
        self.check(authorization).is_ok()
    }

    /// [`admits`](Self::admits), with why not: what the server's log says of a refusal.
    pub fn check(&self, authorization: Option<&[u8]>) -> Result<(), Refusal> {
        let value = authorization.ok_or(Refusal::Missing)?;
        let space = value
            .iter()
            .position(|&b| b == b' ')
            .ok_or(Refusal::NotBearer)?;
        let (scheme, rest) = value.split_at(space);
        if !scheme.eq_ignore_ascii_case(b"bearer") {
            return Err(Refusal::NotBearer);
        }
        let presented = rest.trim_ascii();
        hmac::verify(&self.key, presented, self.tag.as_ref()).map_err(|_| Refusal::Wrong)
    }
}

/// Why a scrape was refused (logged; the scraper gets one answer for all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no Authorization header (missing token)")]
    Missing,
    #[error("an Authorization header that is not a bearer token")]
    NotBearer,
    #[error("wrong token")]
    Wrong,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn only_the_bearer_token_is_admitted() {
        let t = ScrapeToken::new(&format!("  {TOKEN}\n")).unwrap();
        assert!(t.admits(Some(format!("Bearer {TOKEN}").as_bytes())));
        assert!(t.admits(Some(format!("bearer {TOKEN}").as_bytes())));
        assert!(!t.admits(None));
        assert!(!t.admits(Some(TOKEN.as_bytes())));
        assert!(!t.admits(Some(format!("Basic {TOKEN}").as_bytes())));
        assert!(!t.admits(Some(b"Bearer ")));
        assert!(!t.admits(Some(format!("Bearer {TOKEN}x").as_bytes())));
        assert!(!t.admits(Some(format!("Bearer {}", &TOKEN[1..]).as_bytes())));
        assert!(!t.admits(Some(format!("Bearer {}", TOKEN.to_uppercase()).as_bytes())));
        assert_eq!(t.check(None), Err(Refusal::Missing));
        assert_eq!(t.check(Some(TOKEN.as_bytes())), Err(Refusal::NotBearer));
        assert_eq!(
            t.check(Some(format!("Basic {TOKEN}").as_bytes())),
            Err(Refusal::NotBearer)
        );
        assert_eq!(t.check(Some(b"Bearer nope")), Err(Refusal::Wrong));
    }

    #[test]
    fn bad_tokens_say_what_is_wrong() {
        let err = ScrapeToken::new(" \n").unwrap_err();
        assert!(err.contains("empty"), "{err}");
        let err = ScrapeToken::new("short").unwrap_err();
        assert!(err.contains("5 characters") && err.contains("16"), "{err}");
        let err = ScrapeToken::new("0123456789abcdef 0123456789").unwrap_err();
        assert!(err.contains("' '"), "{err}");
        let err = ScrapeToken::new("0123456789abcdefé").unwrap_err();
        assert!(err.contains("'é'"), "{err}");
    }

    #[test]
    fn token_files_that_cannot_be_one_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.token");
        let err = ScrapeToken::load(&path).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("metrics_token_file {}: ", path.display())),
            "{err}"
        );
        crate::fsutil::write_private(&path, b"").unwrap();
        let err = ScrapeToken::load(&path).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()) && err.contains("empty"));
        crate::fsutil::write_private(&path, &[b'a'; 5000]).unwrap();
        let err = ScrapeToken::load(&path).unwrap_err().to_string();
        assert!(err.contains("5000 bytes"), "{err}");
        crate::fsutil::write_private(&path, &[0xff, 0xfe, b'a']).unwrap();
        let err = ScrapeToken::load(&path).unwrap_err().to_string();
        assert!(err.contains("not text"), "{err}");
        // A FIFO is refused before it is opened (opening it would wait for a writer).
        let fifo = dir.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let err = ScrapeToken::load(&fifo).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
        let err = ScrapeToken::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
        crate::fsutil::write_private(&path, format!("{TOKEN}\n").as_bytes()).unwrap();
        let t = ScrapeToken::load(&path).unwrap();
        assert!(t.admits(Some(format!("Bearer {TOKEN}").as_bytes())));
    }
}

/// The endpoint served for real ([`crate::server::run_metrics`]) on a loopback port, plain and
/// over TLS, with and without a token.
#[cfg(test)]
mod served {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::net::SocketAddr;
    use std::sync::Arc;
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

    const TOKEN: &str = "6d657472696373206172652070726976617465";

    struct Served {
        _dir: tempfile::TempDir,
        state: crate::state::State,
        addr: SocketAddr,
        _stop: tokio::sync::oneshot::Sender<()>,
    }

    async fn serve(transport: Transport, token: Option<&str>) -> Served {
        let dir = tempfile::tempdir().unwrap();
        let state = crate::server::prepare(dir.path(), &[], crate::notify::NotifyConfig::default())
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let access = MetricsAccess {
            transport,
            token: token.map(|t| ScrapeToken::new(t).unwrap()),
        };
        tokio::spawn(crate::server::run_metrics(
            listener,
            state.clone(),
            access,
            async move {
                let _ = stopped.await;
            },
        ));
        Served {
            _dir: dir,
            state,
            addr,
            _stop: stop,
        }
    }

    /// The status and the whole response of one GET /metrics with `authorization`.
    async fn get(
        mut io: impl AsyncRead + AsyncWrite + Unpin,
        authorization: Option<&str>,
    ) -> (u16, String) {
        let auth = authorization
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        let req = format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n");
        io.write_all(req.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let _ = io.read_to_end(&mut buf).await;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        (status, text)
    }

    async fn plain(addr: SocketAddr, authorization: Option<&str>) -> (u16, String) {
        get(
            tokio::net::TcpStream::connect(addr).await.unwrap(),
            authorization,
        )
        .await
    }

    #[tokio::test]
    async fn a_scrape_without_the_token_gets_401_and_no_figures() {
        let s = serve(Transport::Plain, Some(TOKEN)).await;
        for auth in [
            None,
            Some("Bearer wrong-token-of-the-same-kind".to_string()),
            Some(format!("Basic {TOKEN}")),
            Some(format!("Bearer {TOKEN}0")),
        ] {
            let (status, text) = plain(s.addr, auth.as_deref()).await;
            assert_eq!(status, 401, "{auth:?}: {text}");
            assert!(
                text.contains("www-authenticate: Bearer realm=\"vakt-metrics\""),
                "{text}"
            );
            assert!(!text.contains("vakt_"), "{text}");
        }
        let (status, text) = plain(s.addr, Some(&format!("Bearer {TOKEN}"))).await;
        assert_eq!(status, 200, "{text}");
        assert!(text.contains("vakt_agents_connected 0"), "{text}");
    }

    /// The server's log lines, as the `fmt` subscriber writes them.
    #[derive(Clone, Default)]
    struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }
    }

    #[tokio::test]
    async fn refused_scrapes_are_logged_with_the_peer_and_why_once_per_window() {
        let log = Captured::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        // The test's runtime has one thread, so the served tasks log to this subscriber.
        let _guard = tracing::subscriber::set_default(subscriber);
        let s = serve(Transport::Plain, Some(TOKEN)).await;
        // Another test's thread, with no subscriber, may have met the log line's callsite as
        // this subscriber was being made, and cached "never" for it: ask again, now.
        tracing::callsite::rebuild_interest_cache();
        for _ in 0..3 {
            assert_eq!(plain(s.addr, None).await.0, 401);
        }
        assert_eq!(plain(s.addr, Some("Bearer wrong")).await.0, 401);
        assert_eq!(plain(s.addr, Some(&format!("Bearer {TOKEN}"))).await.0, 200);
        let text = log.text();
        let refused: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("refused a scrape"))
            .collect();
        assert_eq!(refused.len(), 1, "one line per window: {text}");
        assert!(
            refused[0].contains("WARN")
                && refused[0].contains("metrics: refused a scrape from 127.0.0.1:")
                && refused[0].contains("no Authorization header (missing token)"),
            "{text}"
        );
        // Another endpoint (its own window): the wrong token is named as such.
        let other = serve(Transport::Plain, Some(TOKEN)).await;
        assert_eq!(plain(other.addr, Some("Bearer wrong")).await.0, 401);
        assert!(log.text().contains("wrong token"), "{}", log.text());
    }

    #[tokio::test]
    async fn without_a_token_loopback_scrapes_are_open_as_before() {
        let s = serve(Transport::Plain, None).await;
        let (status, text) = plain(s.addr, None).await;
        assert_eq!(status, 200, "{text}");
        assert!(text.contains("# EOF"), "{text}");
    }

    #[tokio::test]
    async fn over_tls_the_server_certificate_carries_the_token() {
        use rustls::pki_types::pem::PemObject;
        let s = serve(Transport::Tls, Some(TOKEN)).await;
        let mut roots = rustls::RootCertStore::empty();
        for cert in
            rustls::pki_types::CertificateDer::pem_slice_iter(s.state.pki.ca_pem().as_bytes())
        {
            roots.add(cert.unwrap()).unwrap();
        }
        let config = Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
        );
        let tls = |auth: Option<String>| {
            let config = config.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
                let io = tokio_rustls::TlsConnector::from(config)
                    .connect("127.0.0.1".try_into().unwrap(), tcp)
                    .await
                    .expect("the server's certificate names 127.0.0.1");
                get(io, auth.as_deref()).await
            }
        };
        let (status, text) = tls(Some(format!("Bearer {TOKEN}"))).await;
        assert_eq!(status, 200, "{text}");
        assert!(text.contains("vakt_build_info"), "{text}");
        let (status, _) = tls(None).await;
        assert_eq!(status, 401);
        // Plain HTTP to the TLS port gets no figures.
        let (status, text) = plain(s.addr, Some(&format!("Bearer {TOKEN}"))).await;
        assert_ne!(status, 200, "{text}");
        assert!(!text.contains("vakt_"), "{text}");
    }
}
