//! TLS to PostgreSQL and the store URL's own parameters: `sslmode`, `sslrootcert` and
//! `pool_size`, read from the `--store` URL before tokio-postgres sees the rest, and a
//! `MakeTlsConnect` over the workspace's rustls (tokio-rustls), so there is one TLS stack.
//!
//! `sslmode` means what it means to libpq and psql, so the URL an administrator tests with
//! psql behaves the same here: `disable` (plain), `prefer` (TLS when the server offers it, the
//! default when the URL says nothing, as with libpq), `require` (TLS or no connection),
//! `verify-ca` (TLS, the chain checked against `sslrootcert`) and `verify-full` (that, and the
//! host name in the URL matched against the certificate). `sslrootcert=FILE` is a PEM file of
//! trusted roots, `sslrootcert=system` the public web roots; given with `prefer` or `require`
//! the chain is checked too (libpq does so for `require`). Without it, `prefer` and `require`
//! encrypt but do not authenticate the server: say `verify-full` for that.
//!
//! Channel binding (SCRAM-SHA-256-PLUS) is not offered: the stream reports none, so password
//! authentication is plain SCRAM-SHA-256, whose exchange never reveals the password; with
//! `verify-full` the certificate check is what rules out a server in the middle.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

/// Connections per server process when the URL does not say (`pool_size=N`). Each
/// transaction holds one while its closure runs.
pub const DEFAULT_POOL_SIZE: usize = 32;

/// The largest `pool_size` accepted: PostgreSQL's own default `max_connections` is 100, and
/// more connections than that per process only queue inside PostgreSQL instead.
const MAX_POOL_SIZE: usize = 1000;

/// libpq's `sslmode` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// Where the trusted roots come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RootCert {
    /// A PEM file (`sslrootcert=FILE`).
    File(String),
    /// The public web roots (`sslrootcert=system`).
    System,
}

/// A store URL split into what tokio-postgres reads and what this module does.
#[derive(Debug, PartialEq, Eq)]
pub struct StoreOptions {
    /// The URL without `sslmode`, `sslrootcert` and `pool_size`, for tokio-postgres.
    pub url: String,
    pub sslmode: SslMode,
    pub sslrootcert: Option<RootCert>,
    pub pool_size: usize,
}

impl StoreOptions {
    /// The mode tokio-postgres negotiates with: it knows only disable, prefer and require;
    /// the verification of the `verify-*` modes is this module's connector's.
    pub fn driver_mode(&self) -> tokio_postgres::config::SslMode {
        match self.sslmode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        }
    }
}

/// Splits `url`'s query into the parameters this module reads and the rest. Errors name the
/// parameter and its value, never anything else of the URL (which may hold a password).
pub fn split(url: &str) -> Result<StoreOptions, String> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut rest = Vec::new();
    let mut options = StoreOptions {
        url: String::new(),
        sslmode: SslMode::Prefer,
        sslrootcert: None,
        pool_size: DEFAULT_POOL_SIZE,
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, raw) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(raw)
            .ok_or_else(|| format!("--store: the value of {name} is not valid percent-encoding"))?;
        match name {
            "sslmode" => {
                options.sslmode = match value.as_str() {
                    "disable" => SslMode::Disable,
                    "prefer" => SslMode::Prefer,
                    "require" => SslMode::Require,
                    "verify-ca" => SslMode::VerifyCa,
                    "verify-full" => SslMode::VerifyFull,
                    other => {
                        return Err(format!(
                            "--store: sslmode={other} is not one of disable, prefer, require, \
                             verify-ca, verify-full"
                        ));
                    }
                }
            }
            "sslrootcert" if value.is_empty() => {
                return Err("--store: sslrootcert names no file".into());
            }
            "sslrootcert" if value == "system" => options.sslrootcert = Some(RootCert::System),
            "sslrootcert" => options.sslrootcert = Some(RootCert::File(value)),
            "pool_size" => {
                options.pool_size = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_POOL_SIZE).contains(n))
                    .ok_or_else(|| {
                        format!(
                            "--store: pool_size={value} is not a number of connections from 1 \
                             to {MAX_POOL_SIZE}"
                        )
                    })?;
            }
            _ => rest.push(pair),
        }
    }
    if matches!(options.sslmode, SslMode::VerifyCa | SslMode::VerifyFull)
        && options.sslrootcert.is_none()
    {
        return Err(format!(
            "--store: sslmode={} needs sslrootcert=FILE (the CA that signed the PostgreSQL \
             server's certificate, PEM) or sslrootcert=system (the public roots)",
            if options.sslmode == SslMode::VerifyCa {
                "verify-ca"
            } else {
                "verify-full"
            }
        ));
    }
    options.url = if rest.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    Ok(options)
}

/// `%XX` escapes decoded; `None` for a broken escape or bytes that are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The connector for `options`, given the contents of the `sslrootcert` file when it names
/// one (the caller reads it). Errors say what is wrong with the roots.
pub fn connector(options: &StoreOptions, root_pem: Option<&[u8]>) -> Result<MakeRustls, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = match (&options.sslrootcert, root_pem) {
        (None, _) => None,
        (Some(RootCert::System), _) => Some(RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        }),
        (Some(RootCert::File(path)), pem) => {
            let pem = pem.ok_or_else(|| format!("--store: sslrootcert {path} was not read"))?;
            let mut store = RootCertStore::empty();
            let certs = CertificateDer::pem_slice_iter(pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("--store: sslrootcert {path}: not PEM certificates: {e}"))?;
            let (added, _) = store.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!(
                    "--store: sslrootcert {path} holds no usable certificate"
                ));
            }
            Some(store)
        }
    };
    let verifier = Verifier {
        roots: roots.map(Arc::new),
        check_name: options.sslmode == SslMode::VerifyFull,
        algorithms: provider.signature_verification_algorithms,
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("--store: TLS: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(MakeRustls {
        config: Arc::new(config),
    })
}

/// The server certificate check of every mode: the chain against the roots when there are
/// any, the host name with `verify-full`; the handshake's signatures always (so the server
/// holds the key of the certificate it showed, whatever the mode).
#[derive(Debug)]
struct Verifier {
    roots: Option<Arc<RootCertStore>>,
    check_name: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        if let Some(roots) = &self.roots {
            verify_server_cert_signed_by_trust_anchor(
                &cert,
                roots,
                intermediates,
                now,
                self.algorithms.all,
            )?;
            if self.check_name {
                verify_server_name(&cert, server_name)?;
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// tokio-postgres' TLS hook over tokio-rustls; cheap to clone (the pool clones it per
/// connection).
#[derive(Clone)]
pub struct MakeRustls {
    config: Arc<ClientConfig>,
}

impl<S> MakeTlsConnect<S> for MakeRustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = rustls::pki_types::InvalidDnsNameError;

    /// `domain` is the URL's host (not `hostaddr`), which `verify-full` checks.
    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsConnect, Self::Error> {
        Ok(RustlsConnect {
            name: ServerName::try_from(domain.to_string())?,
            config: self.config.clone(),
        })
    }
}

/// One connection's handshake.
pub struct RustlsConnect {
    name: ServerName<'static>,
    config: Arc<ClientConfig>,
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let tls = tokio_rustls::TlsConnector::from(self.config)
                .connect(self.name, stream)
                .await?;
            Ok(RustlsStream(tls))
        })
    }
}

/// A TLS connection to PostgreSQL.
pub struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        // See the module doc: plain SCRAM, no channel binding.
        ChannelBinding::none()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_url_parameters_are_taken_out_and_the_rest_kept() {
        let o = split("postgresql://u:secret@db:5432/vakt?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=x&pool_size=8").unwrap();
        assert_eq!(
            o.url,
            "postgresql://u:secret@db:5432/vakt?application_name=x"
        );
        assert_eq!(o.sslmode, SslMode::VerifyFull);
        assert_eq!(o.sslrootcert, Some(RootCert::File("/etc/ca.pem".into())));
        assert_eq!(o.pool_size, 8);
        assert_eq!(o.driver_mode(), tokio_postgres::config::SslMode::Require);

        // Nothing said: libpq's default, prefer, and the default pool.
        let o = split("postgresql://u@db/vakt").unwrap();
        assert_eq!(o.url, "postgresql://u@db/vakt");
        assert_eq!(
            (o.sslmode, o.sslrootcert, o.pool_size),
            (SslMode::Prefer, None, 32)
        );
        let o = split("postgresql://u@db/vakt?sslmode=require&sslrootcert=system").unwrap();
        assert_eq!(o.url, "postgresql://u@db/vakt");
        assert_eq!(o.sslrootcert, Some(RootCert::System));
    }

    #[test]
    fn bad_parameters_are_named_without_the_rest_of_the_url() {
        for (url, says) in [
            (
                "postgresql://u:hunter2@db/v?sslmode=verify",
                "sslmode=verify is not one of",
            ),
            (
                "postgresql://u:hunter2@db/v?sslmode=verify-full",
                "needs sslrootcert=FILE",
            ),
            (
                "postgresql://u:hunter2@db/v?sslmode=verify-ca",
                "sslmode=verify-ca needs",
            ),
            (
                "postgresql://u:hunter2@db/v?sslrootcert=",
                "sslrootcert names no file",
            ),
            (
                "postgresql://u:hunter2@db/v?pool_size=0",
                "pool_size=0 is not a number",
            ),
            (
                "postgresql://u:hunter2@db/v?pool_size=many",
                "pool_size=many is not",
            ),
            (
                "postgresql://u:hunter2@db/v?sslrootcert=%zz",
                "sslrootcert is not valid",
            ),
        ] {
            let err = split(url).unwrap_err();
            assert!(err.contains(says), "{url}: {err}");
            assert!(!err.contains("hunter2"), "{url}: {err}");
        }
    }

    #[test]
    fn a_root_file_without_certificates_is_refused() {
        let o = split("postgresql://u@db/v?sslmode=verify-full&sslrootcert=/r.pem").unwrap();
        let err = connector(&o, Some(b"not a certificate")).err().unwrap();
        assert!(
            err.contains("sslrootcert /r.pem holds no usable certificate"),
            "{err}"
        );
        assert!(
            connector(&o, None).is_err(),
            "a root file that was not read"
        );
    }
}
