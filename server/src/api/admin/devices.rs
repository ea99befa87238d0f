//! Devices: the list (sorted by hostname), one device with its sections, and assigning a
//! device to a person (which re-evaluates the device's findings).

use super::{AdminApi, looks_like_email};
use crate::api::internal;
use tonic::{Request, Response, Status};
use vakt_proto::pb;

pub(super) async fn list(
    api: &AdminApi,
    req: Request<pb::ListDevicesRequest>,
) -> Result<Response<pb::ListDevicesResponse>, Status> {
    api.authorize(&req, pb::Role::Viewer)?;
    let mut devices = api.device_views(api.state.store.devices().map_err(internal)?);
    devices.sort_by(|a, b| a.hostname.cmp(&b.hostname).then(a.id.cmp(&b.id)));
    Ok(Response::new(pb::ListDevicesResponse { devices }))
}

pub(super) async fn get(
    api: &AdminApi,
    req: Request<pb::GetDeviceRequest>,
) -> Result<Response<pb::DeviceDetail>, Status> {
    api.authorize(&req, pb::Role::Viewer)?;
    let rec = api.find_device(&req.get_ref().id).await?;
    let device = api.device_view(rec);
    let mut sections = api.state.store.sections(&device.id).map_err(internal)?;
    sections.sort_by_key(|s| s.kind);
    Ok(Response::new(pb::DeviceDetail {
        device: Some(device),
        sections,
    }))
}

pub(super) async fn assign(
    api: &AdminApi,
    req: Request<pb::AssignDeviceRequest>,
) -> Result<Response<pb::Device>, Status> {
    let actor = api.authorize(&req, pb::Role::Operator)?;
    let r = req.into_inner();
    let email = r.email.trim().to_lowercase();
    if !looks_like_email(&email) {
        return Err(Status::invalid_argument(format!(
            "'{}' is not an e-mail address",
            r.email
        )));
    }
    let rec = api.find_device(&r.id).await?;
    let id = rec.device.map(|d| d.id).unwrap_or_default();
    let updated = api
        .state
        .store
        .update_device(&id, |rec| {
            if let Some(d) = rec.device.as_mut() {
                d.assigned_to = email.clone();
            }
        })
        .map_err(internal)?
        .ok_or_else(|| Status::not_found(format!("no device '{id}'")))?;
    api.state.store.flush().await.map_err(internal)?;
    api.audit(&actor, "device.assign", &id, &email).await?;
    crate::findings::evaluate_device(&api.state, &id)
        .await
        .map_err(internal)?;
    Ok(Response::new(api.device_view(updated)))
}
