//! The admin side of device identity: `vakt device reenroll` (the next enrollment of the
//! device's hardware may take its record over, within a day, once) and `vakt device retire`
//! (its certificates revoked for good), and what the device views show of it.

use super::AdminApi;
use crate::api::internal;
use crate::store::REENROLL_WINDOW_MS;
use crate::timefmt::{now_ms, rfc3339_ms};
use tonic::{Request, Response, Status};
use vakt_proto::pb;

/// Fills what a device view shows of its identity: the devices claiming the same hardware
/// (either way round) and when its certificate expires.
/// What a device view shows of its identity: the devices sharing its hardware (`peers`, as
/// `Store::hardware_peers_many` read them; `None` when they could not be read) and when its
/// certificate expires.
pub(super) fn identity_view(
    rec: &pb::DeviceRecord,
    peers: Option<Vec<String>>,
    d: &mut pb::Device,
) {
    let mut peers = peers.unwrap_or_default();
    for id in &d.shares_hardware_with {
        if !peers.contains(id) {
            peers.push(id.clone());
        }
    }
    peers.sort();
    d.shares_hardware_with = peers;
    d.cert_expires_at_ms = rec.cert_not_after_ms;
}

pub(super) async fn reenroll(
    api: &AdminApi,
    req: Request<pb::ReenrollDeviceRequest>,
) -> Result<Response<pb::Device>, Status> {
    let actor = api.authorize(&req, pb::Role::Admin)?;
    let rec = api.find_device(&req.get_ref().id).await?;
    let id = rec.device.map(|d| d.id).unwrap_or_default();
    let until = now_ms() + REENROLL_WINDOW_MS;
    let updated = api
        .state()
        .store
        .allow_reenroll(&id, until)
        .await
        .map_err(internal)?
        .ok_or_else(|| Status::not_found(format!("no device '{id}'")))?;
    api.audit(
        &actor,
        "device.reenroll",
        &id,
        &format!(
            "the next enrollment of its hardware until {} takes it over",
            rfc3339_ms(until)
        ),
    )
    .await?;
    Ok(Response::new(api.device_view(updated)))
}

pub(super) async fn retire(
    api: &AdminApi,
    req: Request<pb::RetireDeviceRequest>,
) -> Result<Response<pb::Device>, Status> {
    let actor = api.authorize(&req, pb::Role::Admin)?;
    let rec = api.find_device(&req.get_ref().id).await?;
    let id = rec.device.map(|d| d.id).unwrap_or_default();
    let updated = api
        .state()
        .store
        .retire(&id)
        .await
        .map_err(internal)?
        .ok_or_else(|| Status::not_found(format!("no device '{id}'")))?;
    api.audit(&actor, "device.retire", &id, "certificate revoked")
        .await?;
    // Nothing more is pushed to a stream it opened before (the stream itself was authorised
    // at its start; its reports and next streams are refused).
    if let Ok(mut map) = api.state().connected.lock() {
        map.remove(&id);
    }
    Ok(Response::new(api.device_view(updated)))
}
