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
use ring::signature::{Ed25519KeyPair, KeyPair as _};
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
}

/// How long an agent certificate is valid. Re-enrolling issues a new one.
const DEVICE_CERT_DAYS: i64 = 825;

/// The loaded PKI of one data directory.
pub struct Pki {
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
    pub server_cert_pem: String,
    pub server_key_pem: String,
    command_key: Ed25519KeyPair,
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
                let key = KeyPair::generate()?;
                let cert = ca_params()?.self_signed(&key)?;
                write_private(&ca_key_path, key.serialize_pem().as_bytes())
                    .map_err(io(&ca_key_path))?;
                write_public(&ca_cert_path, cert.pem().as_bytes()).map_err(io(&ca_cert_path))?;
                (cert.pem(), key)
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(PkiError::Bad {
                    path: dir.to_path_buf(),
                    message: "ca.pem and ca.key must both exist or both be absent".into(),
                });
            }
        };
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).map_err(|e| PkiError::Bad {
            path: ca_cert_path.clone(),
            message: e.to_string(),
        })?;

        let command_key_path = dir.join("command.key");
        let command_key = match read_opt(&command_key_path).map_err(io(&command_key_path))? {
            Some(pem) => {
                let der = pem_body(&pem).ok_or_else(|| PkiError::Bad {
                    path: command_key_path.clone(),
                    message: "not a PEM private key".into(),
                })?;
                Ed25519KeyPair::from_pkcs8(&der).map_err(|e| PkiError::Bad {
                    path: command_key_path.clone(),
                    message: e.to_string(),
                })?
            }
            None => {
                let rng = ring::rand::SystemRandom::new();
                let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|e| PkiError::Bad {
                    path: command_key_path.clone(),
                    message: e.to_string(),
                })?;
                write_private(
                    &command_key_path,
                    pem_encode("PRIVATE KEY", pkcs8.as_ref()).as_bytes(),
                )
                .map_err(io(&command_key_path))?;
                Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|e| PkiError::Bad {
                    path: command_key_path.clone(),
                    message: e.to_string(),
                })?
            }
        };

        let server_key = KeyPair::generate()?;
        let server_cert = server_params(hostnames)?.signed_by(&server_key, &issuer)?;
        write_public(&dir.join("server.pem"), server_cert.pem().as_bytes())
            .map_err(io(&dir.join("server.pem")))?;
        Ok(Self {
            ca_pem,
            issuer,
            server_cert_pem: server_cert.pem(),
            server_key_pem: server_key.serialize_pem(),
            command_key,
        })
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The Ed25519 public key agents pin at enrollment.
    pub fn command_public_key(&self) -> Vec<u8> {
        self.command_key.public_key().as_ref().to_vec()
    }

    /// Signs `message` with the command-signing key.
    pub fn sign_command(&self, message: &[u8]) -> Vec<u8> {
        self.command_key.sign(message).as_ref().to_vec()
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
        params.not_before = now - Duration::minutes(5);
        params.not_after = now + Duration::days(DEVICE_CERT_DAYS);
        params.serial_number = Some(random_serial());
        csr.params = params;
        let cert = csr.signed_by(&self.issuer)?;
        Ok(IssuedCert {
            sha256: sha256(cert.der()),
            pem: cert.pem(),
        })
    }
}

/// A freshly issued device certificate.
pub struct IssuedCert {
    pub pem: String,
    pub sha256: [u8; 32],
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

fn server_params(hostnames: &[String]) -> Result<CertificateParams, rcgen::Error> {
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
    p.not_before = now - Duration::minutes(5);
    p.not_after = now + Duration::days(397);
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

fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = base64_encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn pem_body(pem: &str) -> Option<Vec<u8>> {
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    base64_decode(&body)
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

fn base64_decode(s: &str) -> Option<Vec<u8>> {
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
    fn create_then_reload_keeps_ca_and_command_key() {
        let dir = tempfile::tempdir().unwrap();
        let a = Pki::load_or_create(dir.path(), &[]).unwrap();
        let b = Pki::load_or_create(dir.path(), &["vakt.example.org".into()]).unwrap();
        assert_eq!(a.ca_pem(), b.ca_pem());
        assert_eq!(a.command_public_key(), b.command_public_key());
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
