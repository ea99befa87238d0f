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
//! `sslcert=FILE&sslkey=FILE` (PEM, both or neither) present a client certificate, for a
//! PostgreSQL that authenticates replicas by certificate (`hostssl … cert` in pg_hba.conf). As
//! libpq does, a key file that others can read is refused (group-readable only when root owns
//! it), and the files are read once, at start.
//!
//! Channel binding (SCRAM-SHA-256-PLUS, RFC 5802) is offered over TLS: the stream reports the
//! `tls-server-end-point` binding (RFC 5929: the hash of the server's certificate, with the
//! hash its signature uses, SHA-256 for MD5 and SHA-1), so a password exchange made through a
//! server in the middle, which must show a certificate of its own, fails even where the
//! certificate is not checked (`sslmode=require`). `channel_binding=require` in the URL (read
//! by tokio-postgres, as by libpq) refuses a server that does not bind. A certificate signed
//! with Ed25519 or RSA-PSS names no single hash: no binding is offered then (PostgreSQL cannot
//! compute it either), and SCRAM-SHA-256 goes on without it.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
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
    /// The URL without `sslmode`, `sslrootcert`, `sslcert`, `sslkey` and `pool_size`, for
    /// tokio-postgres.
    pub url: String,
    pub sslmode: SslMode,
    pub sslrootcert: Option<RootCert>,
    /// The client certificate chain and its key (`sslcert`, `sslkey`), PEM files.
    pub client_cert: Option<(String, String)>,
    pub pool_size: usize,
}

/// A client certificate and key as read from the files `sslcert` and `sslkey` name.
pub struct ClientPem<'a> {
    pub cert: &'a [u8],
    pub key: &'a [u8],
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
        client_cert: None,
        pool_size: DEFAULT_POOL_SIZE,
    };
    let (mut sslcert, mut sslkey) = (None, None);
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
            "sslcert" | "sslkey" if value.is_empty() => {
                return Err(format!("--store: {name} names no file"));
            }
            "sslcert" => sslcert = Some(value),
            "sslkey" => sslkey = Some(value),
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
    options.client_cert = match (sslcert, sslkey) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        (Some(_), None) => {
            return Err(
                "--store: sslcert needs sslkey=FILE (the certificate's private key)".into(),
            );
        }
        (None, Some(_)) => {
            return Err("--store: sslkey needs sslcert=FILE (the client certificate)".into());
        }
    };
    if options.client_cert.is_some() && options.sslmode == SslMode::Disable {
        return Err("--store: sslcert with sslmode=disable: a client certificate needs TLS".into());
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
/// one and of the `sslcert` and `sslkey` files (the caller reads them). Errors say what is
/// wrong with the roots or the client certificate.
pub fn connector(
    options: &StoreOptions,
    root_pem: Option<&[u8]>,
    client: Option<ClientPem<'_>>,
) -> Result<MakeRustls, String> {
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
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("--store: TLS: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let config = match (&options.client_cert, client) {
        (None, _) => builder.with_no_client_auth(),
        (Some((cert_path, _)), None) => {
            return Err(format!("--store: sslcert {cert_path} was not read"));
        }
        (Some((cert_path, key_path)), Some(pem)) => {
            let chain = CertificateDer::pem_slice_iter(pem.cert)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("--store: sslcert {cert_path}: not PEM certificates: {e}"))?;
            if chain.is_empty() {
                return Err(format!("--store: sslcert {cert_path} holds no certificate"));
            }
            let key = PrivateKeyDer::from_pem_slice(pem.key)
                .map_err(|e| format!("--store: sslkey {key_path}: no PEM private key: {e}"))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                format!(
                    "--store: sslcert {cert_path} and sslkey {key_path} do not go together: {e}"
                )
            })?
        }
    };
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

/// RFC 5929's `tls-server-end-point` for a server certificate (DER): its hash with the hash
/// function of its signature algorithm, SHA-256 in place of MD5 and SHA-1. `None` for an
/// algorithm without one hash (Ed25519, RSA-PSS) or a certificate that does not parse: no
/// binding is offered then, which PostgreSQL accepts (its own computation fails alike).
fn end_point_hash(der: &[u8]) -> Option<Vec<u8>> {
    use ring::digest::{SHA256, SHA384, SHA512, digest};
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let algorithm = match cert.signature_algorithm.algorithm.to_id_string().as_str() {
        // md5WithRSA, sha1WithRSA, ecdsa-with-SHA1: SHA-256 by the RFC's rule.
        "1.2.840.113549.1.1.4" | "1.2.840.113549.1.1.5" | "1.2.840.10045.4.1" => &SHA256,
        // sha256WithRSA, ecdsa-with-SHA256.
        "1.2.840.113549.1.1.11" | "1.2.840.10045.4.3.2" => &SHA256,
        // sha384WithRSA, ecdsa-with-SHA384.
        "1.2.840.113549.1.1.12" | "1.2.840.10045.4.3.3" => &SHA384,
        // sha512WithRSA, ecdsa-with-SHA512.
        "1.2.840.113549.1.1.13" | "1.2.840.10045.4.3.4" => &SHA512,
        _ => return None,
    };
    Some(digest(algorithm, der).as_ref().to_vec())
}

/// A TLS connection to PostgreSQL.
pub struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        let (_, session) = self.0.get_ref();
        match session
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|cert| end_point_hash(cert))
        {
            Some(hash) => ChannelBinding::tls_server_end_point(hash),
            None => ChannelBinding::none(),
        }
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
            (
                "postgresql://u:hunter2@db/v?sslcert=/c.pem",
                "sslcert needs sslkey",
            ),
            (
                "postgresql://u:hunter2@db/v?sslkey=/k.pem",
                "sslkey needs sslcert",
            ),
            (
                "postgresql://u:hunter2@db/v?sslkey=&sslcert=/c.pem",
                "sslkey names no file",
            ),
            (
                "postgresql://u:hunter2@db/v?sslmode=disable&sslcert=/c.pem&sslkey=/k.pem",
                "a client certificate needs TLS",
            ),
        ] {
            let err = split(url).unwrap_err();
            assert!(err.contains(says), "{url}: {err}");
            assert!(!err.contains("hunter2"), "{url}: {err}");
        }
    }

    #[test]
    fn a_client_certificate_is_taken_out_of_the_url_and_checked() {
        let o = split("postgresql://u@db/v?sslcert=%2Fc.pem&sslkey=%2Fk.pem&x=1").unwrap();
        assert_eq!(o.url, "postgresql://u@db/v?x=1");
        assert_eq!(o.client_cert, Some(("/c.pem".into(), "/k.pem".into())));
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["vakt".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
        let pem = |cert: &'static str, key: &'static str| ClientPem {
            cert: cert.as_bytes(),
            key: key.as_bytes(),
        };
        let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
        let (c, k) = (leak(cert_pem), leak(key_pem));
        assert!(connector(&o, None, Some(pem(c, k))).is_ok());
        let other = leak(rcgen::KeyPair::generate().unwrap().serialize_pem());
        for (client, says) in [
            (None, "sslcert /c.pem was not read"),
            (Some(pem("junk", k)), "sslcert /c.pem holds no certificate"),
            (Some(pem(c, "junk")), "sslkey /k.pem: no PEM private key"),
            (Some(pem(c, other)), "do not go together"),
        ] {
            let err = connector(&o, None, client).err().unwrap();
            assert!(err.contains(says), "{err}");
        }
    }

    #[test]
    fn the_end_point_hash_follows_the_signature_algorithm() {
        // rcgen signs with ECDSA P-256 and SHA-256 by default; P-384 uses SHA-384.
        let p256 = rcgen::KeyPair::generate().unwrap();
        let der = rcgen::CertificateParams::new(vec!["db".to_string()])
            .unwrap()
            .self_signed(&p256)
            .unwrap()
            .der()
            .to_vec();
        let h = end_point_hash(&der).unwrap();
        assert_eq!(
            h,
            ring::digest::digest(&ring::digest::SHA256, &der).as_ref()
        );
        let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let der = rcgen::CertificateParams::new(vec!["db".to_string()])
            .unwrap()
            .self_signed(&p384)
            .unwrap()
            .der()
            .to_vec();
        assert_eq!(end_point_hash(&der).unwrap().len(), 48);
        let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let der = rcgen::CertificateParams::new(vec!["db".to_string()])
            .unwrap()
            .self_signed(&ed)
            .unwrap()
            .der()
            .to_vec();
        assert_eq!(end_point_hash(&der), None, "Ed25519 names no hash");
        assert_eq!(end_point_hash(b"junk"), None);
    }

    #[test]
    fn a_root_file_without_certificates_is_refused() {
        let o = split("postgresql://u@db/v?sslmode=verify-full&sslrootcert=/r.pem").unwrap();
        let err = connector(&o, Some(b"not a certificate"), None)
            .err()
            .unwrap();
        assert!(
            err.contains("sslrootcert /r.pem holds no usable certificate"),
            "{err}"
        );
        assert!(
            connector(&o, None, None).is_err(),
            "a root file that was not read"
        );
    }
}
