//! The identity side of the agent API: who a client certificate belongs to (with the
//! promotion of a renewed certificate at its first use), certificate renewal, and what IT
//! hears when an enrollment claims hardware another device holds.

use super::{State, internal};
use crate::store::{CertInfo, EnrollPlan, Revoked};
use crate::timefmt::now_ms;
use crate::tls::Peer;
use tonic::{Request, Response, Status};
use vakt_proto::pb;

/// The sha-256 of the caller's client certificate, taken at the handshake.
fn presented<T>(req: &Request<T>) -> Result<[u8; 32], Status> {
    Peer::of(req).and_then(|p| p.cert_sha256).ok_or_else(|| {
        Status::unauthenticated("this call needs the device's client certificate (enroll first)")
    })
}

/// The device calling, from its client certificate. A certificate this server revoked is
/// refused with the reason, so the agent's log says what to do.
pub(super) async fn caller<T>(state: &State, req: &Request<T>) -> Result<pb::DeviceRecord, Status> {
    let sha = presented(req)?;
    if let Some(rec) = state
        .store
        .device_by_cert_promoting(&sha)
        .await
        .map_err(internal)?
    {
        return Ok(rec);
    }
    Err(Status::unauthenticated(
        match state.store.revoked_cert(&sha).map_err(internal)? {
            Some(Revoked::Retired(id)) => format!(
                "device {id} was retired by IT and its certificate revoked; to use this laptop again, re-enroll it with a new enrollment token"
            ),
            Some(Revoked::Replaced(id)) => format!(
                "this certificate of device {id} was replaced by a newer one (renewed or re-enrolled) and is revoked; re-enroll with a token if this laptop lost the newer one"
            ),
            None => "this client certificate has been revoked or was not issued by this server; re-enroll the device".to_string(),
        },
    ))
}

/// `AgentService.Renew`: a certificate for the caller's device (named by the certificate the
/// call came with, never by the message) to the key in the CSR, whose subject is ignored. The
/// new certificate is pending until its first use; the old one works until then.
pub(super) async fn renew(
    state: &State,
    req: Request<pb::RenewRequest>,
) -> Result<Response<pb::RenewResponse>, Status> {
    let sha = presented(&req)?;
    let rec = caller(state, &req).await?;
    let device_id = rec.device.map(|d| d.id).unwrap_or_default();
    let r = req.into_inner();
    if r.csr_der.is_empty() {
        return Err(Status::invalid_argument(
            "renewal needs a certificate signing request",
        ));
    }
    // Nothing is stored before the CSR has proved itself.
    let cert = state
        .pki
        .issue_device_cert(&r.csr_der, &device_id, time::OffsetDateTime::now_utc())
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let info = CertInfo {
        sha256: cert.sha256,
        not_after_ms: cert.not_after_ms,
    };
    state
        .store
        .renew_cert(&device_id, &sha, info)
        .await
        .map_err(internal)?
        .ok_or_else(|| {
            Status::failed_precondition(
                "this certificate is not the device's current one (a renewal is already in use); call with the newest certificate",
            )
        })?;
    tracing::info!(device = %device_id, "certificate renewed (pending until first use)");
    Ok(Response::new(pb::RenewResponse {
        certificate_pem: cert.pem,
        not_after_ms: cert.not_after_ms,
    }))
}

/// After an enrollment is stored: the audit entry of a take-over, or the notice for IT that a
/// new device claims hardware held by others (audit `device.shared-hardware` and a mail to
/// the IT address when one is configured).
pub(super) async fn after_enroll(
    state: &State,
    plan: &EnrollPlan,
    device_id: &str,
    hw: &pb::HardwareIdentity,
) -> Result<(), Status> {
    let now = now_ms();
    match plan {
        EnrollPlan::New { shares_with } if shares_with.is_empty() => Ok(()),
        EnrollPlan::New { shares_with } => {
            let others = shares_with.join(", ");
            let detail = format!(
                "machine_id={} serial={} hostname={} shares_with={others}",
                hw.machine_id, hw.serial, hw.hostname
            );
            state
                .store
                .audit("system", "device.shared-hardware", device_id, &detail, now)
                .await
                .map_err(internal)?;
            tracing::warn!(device = %device_id, shares_with = %others, "enrollment claims hardware of a device with a valid certificate: enrolled as a new device");
            if let Some(it) = state.notify.it_address.clone() {
                let subject = format!(
                    "Ny enhet delar hårdvara med {others} / New device shares hardware with {others}"
                );
                let body = format!(
                    "En ny enhet {device_id} ({host}) registrerades med samma maskin-id och \
                     serienummer som {others}, som fortfarande har ett giltigt certifikat. Den \
                     befintliga enheten är orörd. Är det en klonad avbildning, en ominstallation \
                     (använd då `vakt device reenroll` före nästa registrering) eller någon som \
                     utger sig för att vara datorn?\n\nA new device {device_id} ({host}) enrolled \
                     with the same machine id and serial as {others}, which still holds a valid \
                     certificate. The existing device is untouched. Is this a cloned image, a \
                     reinstall (then use `vakt device reenroll` before the next enrollment), or \
                     someone impersonating the laptop?\n",
                    host = hw.hostname,
                );
                crate::notify::enqueue(state, std::slice::from_ref(&it), &subject, &body)
                    .await
                    .map_err(internal)?;
            }
            Ok(())
        }
        EnrollPlan::TakeOver { id, why } => state
            .store
            .audit(
                "system",
                "device.reenroll-take-over",
                id,
                &format!("hostname={}: {}", hw.hostname, why.as_str()),
                now,
            )
            .await
            .map(|_| ())
            .map_err(internal),
    }
}
