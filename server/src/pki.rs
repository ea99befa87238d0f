//! The server's own certificate authority, its TLS certificate, and the command-signing key.
//!
//! First start in an empty data directory creates the CA and the Ed25519 command-signing key;
//! every start issues a fresh server certificate for `localhost`, `127.0.0.1`, `::1` and the
//! configured host names, so adding a `--hostname` needs no manual step. Agents' certificates are
//! issued from their CSRs: the server sets the subject and usages itself and copies nothing from
//! the request but the public key.

use crate::fsutil::{read_opt, write_private, write_public};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Bad { path: PathBuf, message: String },
    #[error("certificate: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("the certificate signing request is not valid: {0}")]
    BadCsr(rcgen::Error),
    #[error(transparent)]
    ServerCert(#[from] crate::certs::CertsError),
    #[error("a certificate lifetime must be at least {min}, not {given}")]
    LifetimeTooShort { min: String, given: String },
    #[error("a certificate lifetime must be at most {max} (the CA's own is 20 years), not {given}")]
    LifetimeTooLong { max: String, given: String },
}

/// How long an agent certificate is valid unless `serve --device-cert-lifetime` says otherwise.
/// Agents renew theirs when a third of it is left.
pub const DEFAULT_DEVICE_CERT_LIFETIME: std::time::Duration =
    std::time::Duration::from_secs(825 * 24 * 3600);
/// How long the server's own certificate is valid; the running server reissues it when a
/// third is left (`certs::keep_fresh`).
pub const SERVER_CERT_LIFETIME: std::time::Duration =
    std::time::Duration::from_secs(397 * 24 * 3600);
/// The shortest device certificate lifetime accepted (tests use a minute or so).
pub const MIN_DEVICE_CERT_LIFETIME: std::time::Duration = std::time::Duration::from_secs(60);
/// The longest certificate lifetime accepted, device or server: a certificate should not
/// outlive the CA that vouches for it (20 years), and a lifetime past the year 9999 cannot be
/// written into one at all.
///
/// Ten years as humantime counts them (365.25 days each), so the message says "10years".
pub const MAX_CERT_LIFETIME: std::time::Duration = std::time::Duration::from_secs(10 * 31_557_600);

/// The loaded PKI of one data directory.
pub struct Pki {
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
    /// The server certificate issued at start (the one in use: [`Pki::server_cert`]).
    pub server_cert_pem: String,
    pub server_key_pem: String,
    server_cert: std::sync::Arc<crate::certs::ServerCert>,
    dir: PathBuf,
    hostnames: Vec<String>,
    /// The command-signing keys, every generation (`signing.rs`).
    pub command_keys: crate::signing::KeyRing,
    /// Seconds a device certificate is valid; set once at start, read at each issue.
    device_cert_lifetime_s: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki").finish_non_exhaustive()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Pki {
    /// Loads the PKI under `dir`, creating what is missing, and issues the server certificate.
    pub fn load_or_create(dir: &Path, hostnames: &[String]) -> Result<Self, PkiError> {
        let ca_cert_path = dir.join("ca.pem");
        let ca_key_path = dir.join("ca.key");
        let (ca_pem, ca_key) = match (
            read_opt(&ca_cert_path).map_err(io(&ca_cert_path))?,
            read_opt(&ca_key_path).map_err(io(&ca_key_path))?,
        ) {
            (Some(cert), Some(key)) => {
                let key = KeyPair::from_pem(&key).map_err(|e| PkiError::Bad {
                    path: ca_key_path.clone(),
                    message: e.to_string(),
                })?;
                (cert, key)
            }
            (None, None) => {
                let (cert, key) = new_ca()?;
                write_private(&ca_key_path, key.as_bytes()).map_err(io(&ca_key_path))?;
                write_public(&ca_cert_path, cert.as_bytes()).map_err(io(&ca_cert_path))?;
                let key = KeyPair::from_pem(&key)?;
                (cert, key)
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(PkiError::Bad {
                    path: dir.to_path_buf(),
                    message: "ca.pem and ca.key must both exist or both be absent".into(),
                });
            }
        };
        let command_keys = crate::signing::KeyRing::load_or_create(dir)?;
        Self::with_issuer(dir, hostnames, ca_pem, ca_key, &ca_cert_path, command_keys)
    }

    /// The PKI of a replica whose CA and command keys come from the database (`secrets.rs`):
    /// `dir` gets only the CA certificate (`ca.pem`, for agents and `vakt`) and this replica's
    /// own server certificate, issued now.
    pub fn with_shared_ca(
        dir: &Path,
        hostnames: &[String],
        ca_pem: String,
        ca_key_pem: &str,
        command_keys: crate::signing::KeyRing,
    ) -> Result<Self, PkiError> {
        let ca_cert_path = dir.join("ca.pem");
        let key = KeyPair::from_pem(ca_key_pem).map_err(|e| PkiError::Bad {
            path: PathBuf::from("secrets/ca.key"),
            message: e.to_string(),
        })?;
        let pki = Self::with_issuer(dir, hostnames, ca_pem, key, &ca_cert_path, command_keys)?;
        write_public(&ca_cert_path, pki.ca_pem.as_bytes()).map_err(io(&ca_cert_path))?;
        Ok(pki)
    }

    fn with_issuer(
        dir: &Path,
        hostnames: &[String],
        ca_pem: String,
        ca_key: KeyPair,
        ca_cert_path: &Path,
        command_keys: crate::signing::KeyRing,
    ) -> Result<Self, PkiError> {
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).map_err(|e| PkiError::Bad {
            path: ca_cert_path.to_path_buf(),
            message: e.to_string(),
        })?;
        let (server_cert_pem, server_key_pem) =
            issue_server_cert(&issuer, dir, hostnames, SERVER_CERT_LIFETIME)?;
        Ok(Self {
            ca_pem,
            issuer,
            server_cert: std::sync::Arc::new(crate::certs::ServerCert::from_pem(
                &server_cert_pem,
                &server_key_pem,
            )?),
            server_cert_pem,
            server_key_pem,
            dir: dir.to_path_buf(),
            hostnames: hostnames.to_vec(),
            command_keys,
            device_cert_lifetime_s: std::sync::atomic::AtomicU64::new(
                DEFAULT_DEVICE_CERT_LIFETIME.as_secs(),
            ),
        })
    }

    /// Sets how long device certificates issued from now on are valid (at least
    /// [`MIN_DEVICE_CERT_LIFETIME`]).
    pub fn set_device_cert_lifetime(&self, d: std::time::Duration) -> Result<(), PkiError> {
        check_cert_lifetime(d)?;
        self.device_cert_lifetime_s
            .store(d.as_secs(), std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    fn device_cert_lifetime(&self) -> Duration {
        let s = self
            .device_cert_lifetime_s
            .load(std::sync::atomic::Ordering::Relaxed);
        Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX))
    }

    /// The server certificate both ports present (replaced by [`Pki::reissue_server_cert`]).
    pub fn server_cert(&self) -> std::sync::Arc<crate::certs::ServerCert> {
        self.server_cert.clone()
    }

    /// Issues a new server certificate valid for `lifetime`, writes `server.pem` and serves
    /// it from the next handshake on.
    pub fn reissue_server_cert(&self, lifetime: std::time::Duration) -> Result<(), PkiError> {
        check_cert_lifetime(lifetime)?;
        let (cert, key) = issue_server_cert(&self.issuer, &self.dir, &self.hostnames, lifetime)?;
        self.server_cert.replace(&cert, &key)?;
        Ok(())
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Issues a client certificate for `device_id` to the key in a CSR, after checking the CSR's
    /// own signature (proof that the requester holds the private key).
    pub fn issue_device_cert(
        &self,
        csr_der: &[u8],
        device_id: &str,
        now: OffsetDateTime,
    ) -> Result<IssuedCert, PkiError> {
        let mut csr = CertificateSigningRequestParams::from_der(&csr_der.to_vec().into())
            .map_err(PkiError::BadCsr)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, device_id);
        dn.push(DnType::OrganizationName, "Vakt device");
        params.distinguished_name = dn;
        params.subject_alt_names = vec![SanType::URI(
            format!("urn:vakt:device:{device_id}")
                .try_into()
                .map_err(PkiError::Cert)?,
        )];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let lifetime = self.device_cert_lifetime();
        // Back-dated for laptops whose clock is a little behind, but by no more than a tenth
        // of the lifetime, so the agent's "a third left" stays a third of the intended life.
        params.not_before = now - Ord::min(lifetime / 10_i32, Duration::minutes(5));
        let not_after = now + lifetime;
        params.not_after = not_after;
        params.serial_number = Some(random_serial());
        csr.params = params;
        let cert = csr.signed_by(&self.issuer)?;
        Ok(IssuedCert {
            sha256: sha256(cert.der()),
            pem: cert.pem(),
            not_after_ms: i64::try_from(not_after.unix_timestamp_nanos() / 1_000_000)
                .unwrap_or(i64::MAX),
        })
    }
}

/// Refuses a certificate lifetime shorter than [`MIN_DEVICE_CERT_LIFETIME`] or longer than
/// [`MAX_CERT_LIFETIME`].
pub fn check_cert_lifetime(d: std::time::Duration) -> Result<(), PkiError> {
    let given = || humantime::format_duration(d).to_string();
    if d < MIN_DEVICE_CERT_LIFETIME {
        return Err(PkiError::LifetimeTooShort {
            min: humantime::format_duration(MIN_DEVICE_CERT_LIFETIME).to_string(),
            given: given(),
        });
    }
    if d > MAX_CERT_LIFETIME {
        return Err(PkiError::LifetimeTooLong {
            max: humantime::format_duration(MAX_CERT_LIFETIME).to_string(),
            given: given(),
        });
    }
    Ok(())
}

/// A freshly issued device certificate.
pub struct IssuedCert {
    pub pem: String,
    pub sha256: [u8; 32],
    /// When it expires (ms since the epoch), kept in the device record.
    pub not_after_ms: i64,
}

/// A new self-signed CA: its certificate and private key, as PEM.
pub fn new_ca() -> Result<(String, String), PkiError> {
    let key = KeyPair::generate()?;
    let cert = ca_params()?.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn ca_params() -> Result<CertificateParams, rcgen::Error> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Vakt CA");
    dn.push(DnType::OrganizationName, "Vakt");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    p.not_before = now - Duration::minutes(5);
    p.not_after = now + Duration::days(365 * 20);
    p.serial_number = Some(random_serial());
    Ok(p)
}

/// A server certificate for `hostnames` valid for `lifetime`, written to `dir/server.pem`
/// (PEM of the certificate and of its key).
fn issue_server_cert(
    issuer: &Issuer<'static, KeyPair>,
    dir: &Path,
    hostnames: &[String],
    lifetime: std::time::Duration,
) -> Result<(String, String), PkiError> {
    let key = KeyPair::generate()?;
    let cert = server_params(hostnames, lifetime)?.signed_by(&key, issuer)?;
    let path = dir.join("server.pem");
    write_public(&path, cert.pem().as_bytes()).map_err(io(&path))?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn server_params(
    hostnames: &[String],
    lifetime: std::time::Duration,
) -> Result<CertificateParams, rcgen::Error> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    for h in hostnames {
        if !names.contains(h) {
            names.push(h.clone());
        }
    }
    let mut p = CertificateParams::new(names)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "vakt-server");
    p.distinguished_name = dn;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let now = OffsetDateTime::now_utc();
    let lifetime = Duration::seconds(i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX));
    // As for device certificates: back-dated by at most a tenth, so "renew with a third left"
    // (certs::keep_fresh) is a third of the intended life.
    p.not_before = now - Ord::min(lifetime / 10_i32, Duration::minutes(5));
    p.not_after = now + lifetime;
    p.serial_number = Some(random_serial());
    Ok(p)
}

fn random_serial() -> rcgen::SerialNumber {
    let mut b = crate::token::random_bytes::<16>();
    b[0] &= 0x7f; // positive
    rcgen::SerialNumber::from_slice(&b)
}

/// sha-256 of a DER certificate: how the store recognises a device's current certificate.
pub fn sha256(der: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

pub(crate) fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = base64_encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub(crate) fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        if c == b'=' {
            break;
        }
        let v = B64.iter().position(|&x| x == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trip() {
        for n in 0..40 {
            let data: Vec<u8> = (0..n).map(|i| (i * 37 % 256) as u8).collect();
            assert_eq!(base64_decode(&base64_encode(&data)).unwrap(), data);
        }
        assert_eq!(base64_encode(b"Man"), "TWFu");
        assert_eq!(base64_encode(b"Ma"), "TWE=");
    }

    #[test]
    fn certificate_lifetimes_are_bounded_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::load_or_create(dir.path(), &[]).unwrap();
        let years = |n: u64| std::time::Duration::from_secs(n * 31_557_600);
        assert!(matches!(
            pki.set_device_cert_lifetime(std::time::Duration::from_secs(59)),
            Err(PkiError::LifetimeTooShort { .. })
        ));
        // 10,000 years would have made every enrollment panic past the year 9999.
        let err = pki.set_device_cert_lifetime(years(10_000)).unwrap_err();
        assert!(err.to_string().contains("at most 10years"), "{err}");
        assert!(matches!(
            pki.reissue_server_cert(years(11)),
            Err(PkiError::LifetimeTooLong { .. })
        ));
        pki.set_device_cert_lifetime(years(10)).unwrap();
        let key = KeyPair::generate().unwrap();
        let csr = CertificateParams::new(vec!["ignored".to_string()])
            .unwrap()
            .serialize_request(&key)
            .unwrap();
        pki.issue_device_cert(csr.der(), "dev-1", OffsetDateTime::now_utc())
            .unwrap();
    }

    #[test]
    fn create_then_reload_keeps_ca_and_command_key() {
        let dir = tempfile::tempdir().unwrap();
        let a = Pki::load_or_create(dir.path(), &[]).unwrap();
        let b = Pki::load_or_create(dir.path(), &["vakt.example.org".into()]).unwrap();
        assert_eq!(a.ca_pem(), b.ca_pem());
        assert_eq!(a.command_keys.current(), b.command_keys.current());
        assert_ne!(
            a.server_cert_pem, b.server_cert_pem,
            "server cert is reissued"
        );
    }

    #[test]
    fn issues_device_cert_from_csr_and_rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::load_or_create(dir.path(), &[]).unwrap();
        let key = KeyPair::generate().unwrap();
        let csr = CertificateParams::new(vec!["ignored".to_string()])
            .unwrap()
            .serialize_request(&key)
            .unwrap();
        let cert = pki
            .issue_device_cert(csr.der(), "dev-1", OffsetDateTime::now_utc())
            .unwrap();
        assert!(cert.pem.contains("BEGIN CERTIFICATE"));
        assert!(matches!(
            pki.issue_device_cert(b"garbage", "dev-1", OffsetDateTime::now_utc()),
            Err(PkiError::BadCsr(_))
        ));
    }
}
