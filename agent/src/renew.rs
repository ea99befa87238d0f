//! The device certificate's life on the agent: renewal over the current mutual TLS when less
//! than a third of its lifetime is left (a new key pair each time; key and certificate saved
//! as one), and, once it has expired, a clear message and re-enrollment with the configured
//! token (the server lets an enrollment take over a record whose certificate expired).

use crate::config::Config;
use crate::link::{self, LinkError};
use crate::state::{Identity, StateDir};
use tonic::transport::Channel;
use vakt_proto::pb;
use vakt_proto::pb::agent_service_client::AgentServiceClient;

/// Where a certificate stands at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// More than a third of its lifetime is left.
    Fresh {
        not_after_ms: i64,
    },
    /// Less than a third is left: time to renew.
    Due {
        not_after_ms: i64,
    },
    Expired {
        at_ms: i64,
    },
}

/// The validity window of a PEM certificate (ms since the epoch). Also the server's, for its
/// own certificate.
pub fn validity(cert_pem: &str) -> Result<(i64, i64), LinkError> {
    let bad = |e: String| LinkError::BadCertificate(e);
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
    let cert = pem.parse_x509().map_err(|e| bad(e.to_string()))?;
    let v = cert.validity();
    let ms = |s: i64| s.saturating_mul(1000);
    Ok((ms(v.not_before.timestamp()), ms(v.not_after.timestamp())))
}

/// Where the certificate stands at `now_ms`.
pub fn health(cert_pem: &str, now_ms: i64) -> Result<Health, LinkError> {
    let (not_before, not_after) = validity(cert_pem)?;
    Ok(if now_ms >= not_after {
        Health::Expired { at_ms: not_after }
    } else if now_ms >= not_after - (not_after - not_before) / 3 {
        Health::Due {
            not_after_ms: not_after,
        }
    } else {
        Health::Fresh {
            not_after_ms: not_after,
        }
    })
}

/// What the agent says of an expired certificate (its log and `vakt-agent status`).
pub fn expired_text(at_ms: i64) -> String {
    LinkError::CertificateExpired(link::rfc3339(at_ms)).to_string()
}

/// Renews over `channel` (the current certificate's): a new key pair, a CSR for it, and the
/// new certificate saved with its key as one. The server keeps accepting the old certificate
/// until the new one is first used, so a crash anywhere here leaves a working identity.
pub async fn renew(
    channel: Channel,
    state: &StateDir,
    id: &Identity,
) -> Result<Identity, LinkError> {
    let (key_pem, csr_der) = link::key_and_csr(&id.device_id)?;
    let resp = AgentServiceClient::new(channel)
        .renew(pb::RenewRequest { csr_der })
        .await
        .map_err(link::status_error)?
        .into_inner();
    // Check before saving: a certificate that does not parse would lock the agent out.
    validity(&resp.certificate_pem)?;
    state.save_pair(&key_pem, &resp.certificate_pem)?;
    Ok(Identity {
        key_pem,
        cert_pem: resp.certificate_pem,
        ..id.clone()
    })
}

/// The check at every report: renews when due, and for an expired certificate says so and
/// re-enrolls with the token if one is configured. `Some` is the identity to use from now on.
pub async fn maintain(
    cfg: &Config,
    state: &StateDir,
    id: &Identity,
    channel: Channel,
    hardware: pb::HardwareIdentity,
) -> Result<Option<Identity>, LinkError> {
    match health(&id.cert_pem, link::now_ms())? {
        Health::Fresh { .. } => Ok(None),
        Health::Due { not_after_ms } => match renew(channel, state, id).await {
            Ok(new) => {
                tracing::info!(
                    old_expiry = %link::rfc3339(not_after_ms),
                    "device certificate renewed"
                );
                Ok(Some(new))
            }
            Err(e) => {
                tracing::warn!(
                    "could not renew the device certificate (valid until {}); trying again at the next report: {e}",
                    link::rfc3339(not_after_ms)
                );
                Ok(None)
            }
        },
        Health::Expired { at_ms } => reenroll_expired(cfg, state, hardware, at_ms)
            .await
            .map(Some),
    }
}

/// For a certificate that expired at `at_ms`: says so, and re-enrolls with the configured
/// token if there is one (the server lets it take its own record over).
pub async fn reenroll_expired(
    cfg: &Config,
    state: &StateDir,
    hardware: pb::HardwareIdentity,
    at_ms: i64,
) -> Result<Identity, LinkError> {
    tracing::error!("{}", expired_text(at_ms));
    let has_token = cfg.enroll_token_file.as_ref().is_some_and(|p| p.exists());
    if !has_token {
        return Err(LinkError::CertificateExpired(link::rfc3339(at_ms)));
    }
    let new = link::enroll(cfg, state, hardware).await?;
    tracing::info!(device = %new.device_id, "re-enrolled with the configured token");
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(lifetime_s: i64) -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["x".to_string()]).unwrap();
        let now = time::OffsetDateTime::from_unix_timestamp(1_000_000).unwrap();
        p.not_before = now;
        p.not_after = now + time::Duration::seconds(lifetime_s);
        p.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn renews_with_a_third_left_and_knows_expiry() {
        let pem = cert(90);
        let start = 1_000_000_000;
        assert!(matches!(
            health(&pem, start + 59_000),
            Ok(Health::Fresh { .. })
        ));
        assert!(matches!(
            health(&pem, start + 61_000),
            Ok(Health::Due { .. })
        ));
        assert_eq!(
            health(&pem, start + 90_000).unwrap(),
            Health::Expired {
                at_ms: start + 90_000
            }
        );
        assert!(expired_text(start + 90_000).contains("re-enroll with a token"));
        assert!(health("garbage", 0).is_err());
    }
}
