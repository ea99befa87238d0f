//! The server's own TLS certificate, replaceable while the server runs: [`ServerCert`] is the
//! rustls certificate resolver both ports use, and [`keep_fresh`] reissues the certificate
//! (and rewrites `server.pem`) when less than a third of its lifetime is left, so a server
//! that runs for years never serves an expired certificate and needs no restart for it.
//! Clients trust the CA, not this certificate, so a reissue is invisible to them; connections
//! already open keep the certificate they were made with.

use crate::pki::{Pki, PkiError};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::sync::{Arc, RwLock};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("the server certificate PEM: {0}")]
    Pem(#[from] rustls::pki_types::pem::Error),
    #[error("the server certificate PEM holds no certificate")]
    NoCertificate,
    #[error("the server certificate: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("the server certificate does not parse: {0}")]
    Parse(String),
}

/// The certificate in use and its validity (ms since the epoch).
#[derive(Debug)]
struct Current {
    key: Arc<CertifiedKey>,
    cert_pem: String,
    not_before_ms: i64,
    not_after_ms: i64,
}

/// The server certificate both TLS ports present; [`ServerCert::replace`] swaps it for every
/// handshake from then on.
#[derive(Debug)]
pub struct ServerCert {
    current: RwLock<Arc<Current>>,
}

/// The validity window (ms since the epoch) of a DER certificate. Read here rather than through
/// the agent's renewal code: the server library depends on `vakt-proto` only (ARCHITECTURE.md,
/// invariants).
fn validity(der: &CertificateDer<'_>) -> Result<(i64, i64), CertsError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| CertsError::Parse(e.to_string()))?;
    let v = cert.validity();
    let ms = |s: i64| s.saturating_mul(1000);
    Ok((ms(v.not_before.timestamp()), ms(v.not_after.timestamp())))
}

fn load(cert_pem: &str, key_pem: &str) -> Result<Current, CertsError> {
    let certs =
        CertificateDer::pem_slice_iter(cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>()?;
    if certs.is_empty() {
        return Err(CertsError::NoCertificate);
    }
    let (not_before_ms, not_after_ms) = validity(&certs[0])?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())?;
    let provider = rustls::crypto::ring::default_provider();
    Ok(Current {
        key: Arc::new(CertifiedKey::from_der(certs, key, &provider)?),
        cert_pem: cert_pem.to_string(),
        not_before_ms,
        not_after_ms,
    })
}

impl ServerCert {
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CertsError> {
        Ok(Self {
            current: RwLock::new(Arc::new(load(cert_pem, key_pem)?)),
        })
    }

    /// Serves `cert_pem` from the next handshake on; nothing changes if it does not load.
    pub fn replace(&self, cert_pem: &str, key_pem: &str) -> Result<(), CertsError> {
        let next = Arc::new(load(cert_pem, key_pem)?);
        match self.current.write() {
            Ok(mut c) => *c = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
        Ok(())
    }

    fn get(&self) -> Arc<Current> {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The certificate in use (PEM).
    pub fn cert_pem(&self) -> String {
        self.get().cert_pem.clone()
    }

    /// When the certificate in use should be replaced: a third of its lifetime before it ends.
    pub fn renew_at_ms(&self) -> i64 {
        let c = self.get();
        c.not_after_ms - (c.not_after_ms - c.not_before_ms) / 3
    }
}

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get().key.clone())
    }
}

/// Issues a server certificate valid for `lifetime` now (unless that is the lifetime the
/// current one was issued with), then keeps reissuing it in the background a third of its
/// lifetime before it expires. A failed reissue is logged and tried again a minute later,
/// while the current certificate still has a third of its life.
pub fn keep_fresh(pki: Arc<Pki>, lifetime: Duration) -> Result<(), PkiError> {
    if lifetime != crate::pki::SERVER_CERT_LIFETIME {
        pki.reissue_server_cert(lifetime)?;
    }
    tokio::spawn(async move {
        loop {
            let wait_ms = pki.server_cert().renew_at_ms() - crate::timefmt::now_ms();
            if wait_ms > 0 {
                tokio::time::sleep(Duration::from_millis(wait_ms.unsigned_abs())).await;
            }
            match pki.reissue_server_cert(lifetime) {
                Ok(()) => tracing::info!("server certificate reissued; server.pem rewritten"),
                Err(e) => {
                    tracing::error!("could not reissue the server certificate: {e}");
                    tokio::time::sleep(Duration::from_secs(60)).await;
                }
            }
        }
    });
    Ok(())
}
