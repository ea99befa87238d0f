//! The admin side of the command-signing key: `vakt signing-key rotate` makes a new
//! generation (signing.rs) and hands the chain to every connected agent at once; agents that are
//! offline get it when they next connect (`api::agent`). `vakt signing-key show` lists the
//! generations and how many devices trust each, so IT can see when a rotation has reached the
//! whole fleet.

use super::AdminApi;
use crate::api::internal;
use crate::timefmt::now_ms;
use tonic::{Request, Response, Status};
use vakt_proto::pb;

/// The generations with the number of (not retired) devices that trust each.
fn signing_keys(api: &AdminApi) -> Result<pb::SigningKeys, Status> {
    let ring = &api.state().pki.command_keys;
    // Another replica may have rotated since this one last looked.
    ring.refresh().map_err(internal)?;
    let mut generations: Vec<pb::SigningKeyGeneration> = ring
        .generations()
        .into_iter()
        .map(|g| pb::SigningKeyGeneration {
            generation: g.generation,
            fingerprint: crate::token::hex(&crate::pki::sha256(&g.public_key)),
            created_at_ms: g.created_ms,
            devices: 0,
        })
        .collect();
    for rec in api.state().store.devices().map_err(internal)? {
        let Some(d) = rec.device else { continue };
        if d.state == pb::DeviceState::Retired as i32 {
            continue;
        }
        let i = usize::try_from(d.command_key_generation).unwrap_or(usize::MAX);
        if let Some(g) = generations.get_mut(i) {
            g.devices += 1;
        }
    }
    Ok(pb::SigningKeys {
        current: ring.current().0,
        generations,
    })
}

pub(super) async fn rotate(
    api: &AdminApi,
    req: Request<pb::RotateSigningKeyRequest>,
) -> Result<Response<pb::SigningKeys>, Status> {
    let actor = api.authorize(&req, pb::Role::Admin)?;
    let ring = &api.state().pki.command_keys;
    let generation = ring.rotate(now_ms()).map_err(internal)?;
    let (_, public) = ring.current();
    let fingerprint = crate::token::hex(&crate::pki::sha256(&public));
    api.audit(
        &actor,
        "signing-key.rotate",
        &format!("generation {generation}"),
        &format!("fingerprint={fingerprint}"),
    )
    .await?;
    let handed = crate::commands::hand_key_chain(api.state());
    tracing::info!(
        generation,
        handed,
        "command-signing key rotated; connected agents were handed the new key"
    );
    Ok(Response::new(signing_keys(api)?))
}

pub(super) async fn show(
    api: &AdminApi,
    req: Request<pb::GetSigningKeysRequest>,
) -> Result<Response<pb::SigningKeys>, Status> {
    api.authorize(&req, pb::Role::Viewer)?;
    Ok(Response::new(signing_keys(api)?))
}
