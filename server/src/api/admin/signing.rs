//! The admin side of the command-signing key: `vakt signing-key rotate` makes a new
//! generation (signing.rs) and hands the chain to every connected agent at once; agents that are
//! offline get it when they next connect (`api::agent`). `vakt signing-key show` lists the
//! generations, how many devices trust each and which are retired, so IT can see when a
//! rotation has reached the whole fleet. `vakt signing-key retire --through N` destroys the
//! private keys of generations ≤ N; it is refused while a device that is not retired still
//! trusts one of them (it could no longer be locked or wiped until it connects), unless forced,
//! and then says which devices wait.

use super::AdminApi;
use crate::api::internal;
use crate::signing::RetireError;
use crate::timefmt::now_ms;
use tonic::{Request, Response, Status};
use vakt_proto::pb;

/// How many stranded devices a refusal names (the count is always given in full).
const NAMED: usize = 5;

/// The generations with the number of (not retired) devices that trust each.
fn signing_keys(api: &AdminApi) -> Result<pb::SigningKeys, Status> {
    let ring = &api.state().pki.command_keys;
    // Another replica may have rotated or retired since this one last looked.
    ring.refresh().map_err(internal)?;
    let mut generations: Vec<pb::SigningKeyGeneration> = ring
        .generations()
        .into_iter()
        .map(|g| pb::SigningKeyGeneration {
            generation: g.generation,
            fingerprint: crate::token::hex(&crate::pki::sha256(&g.public_key)),
            created_at_ms: g.created_ms,
            devices: 0,
            retired: g.retired_ms.is_some(),
            retired_at_ms: g.retired_ms.unwrap_or(0),
        })
        .collect();
    for d in trusting_devices(api)? {
        let i = usize::try_from(d.generation).unwrap_or(usize::MAX);
        if let Some(g) = generations.get_mut(i) {
            g.devices += 1;
        }
    }
    Ok(pb::SigningKeys {
        current: ring.current().0,
        generations,
    })
}

/// Every device that is not retired, with the generation it trusts.
fn trusting_devices(api: &AdminApi) -> Result<Vec<pb::StrandedDevice>, Status> {
    Ok(api
        .state()
        .store
        .devices()
        .map_err(internal)?
        .into_iter()
        .filter_map(|rec| rec.device)
        .filter(|d| d.state != pb::DeviceState::Retired as i32)
        .map(|d| pb::StrandedDevice {
            device_id: d.id,
            hostname: d.hostname,
            generation: d.command_key_generation,
        })
        .collect())
}

/// "pc-1 (generation 0), pc-2 (generation 1) and 3 more": the first few, by host name.
fn some_names(devices: &[pb::StrandedDevice]) -> String {
    let mut names: Vec<String> = devices
        .iter()
        .take(NAMED)
        .map(|d| {
            let name = if d.hostname.is_empty() {
                &d.device_id
            } else {
                &d.hostname
            };
            format!("{name} (generation {})", d.generation)
        })
        .collect();
    if devices.len() > NAMED {
        names.push(format!("{} more", devices.len() - NAMED));
    }
    names.join(", ")
}

fn retire_status(e: RetireError) -> Status {
    match e {
        RetireError::NoSuch { .. } | RetireError::Current(_) => {
            Status::invalid_argument(e.to_string())
        }
        RetireError::Pki(e) => internal(e),
    }
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

pub(super) async fn retire(
    api: &AdminApi,
    req: Request<pb::RetireSigningKeysRequest>,
) -> Result<Response<pb::RetiredSigningKeys>, Status> {
    let actor = api.authorize(&req, pb::Role::Admin)?;
    let r = req.into_inner();
    let ring = &api.state().pki.command_keys;
    ring.refresh().map_err(internal)?;
    ring.check_retirable(r.through).map_err(retire_status)?;
    let mut stranded: Vec<pb::StrandedDevice> = trusting_devices(api)?
        .into_iter()
        .filter(|d| d.generation <= r.through)
        .collect();
    stranded.sort_by(|a, b| (a.generation, &a.hostname).cmp(&(b.generation, &b.hostname)));
    if !stranded.is_empty() && !r.force {
        // An attempt to destroy keys devices still need is worth IT's eye even when refused
        // (a mistaken script, or a token used by someone who should not): it is audited.
        api.audit(
            &actor,
            "signing-key.retire-refused",
            &format!("generations 0-{}", r.through),
            &format!("stranded={} ({})", stranded.len(), some_names(&stranded)),
        )
        .await?;
        return Err(Status::failed_precondition(format!(
            "{} device(s) still trust generation {} or older and could no longer be locked or \
             wiped: {}. Each acknowledges the current key when it next connects (see vakt \
             signing-key show); retire then, or add --force if the old key may have leaked",
            stranded.len(),
            r.through,
            some_names(&stranded)
        )));
    }
    let retired = ring.retire(r.through, now_ms()).map_err(retire_status)?;
    api.audit(
        &actor,
        "signing-key.retire",
        &format!("generations 0-{}", r.through),
        &format!(
            "retired={:?} forced={} stranded={}{}",
            retired,
            r.force,
            stranded.len(),
            if stranded.is_empty() {
                String::new()
            } else {
                format!(" ({})", some_names(&stranded))
            }
        ),
    )
    .await?;
    // Devices connected on a retired key get the chain now, so their commands need not wait
    // for a reconnect (the others have nothing to follow).
    let handed = crate::commands::hand_key_chain_to(api.state(), |id| {
        stranded.iter().any(|d| d.device_id == id)
    });
    tracing::info!(
        through = r.through,
        ?retired,
        stranded = stranded.len(),
        handed,
        "command-signing keys retired"
    );
    Ok(Response::new(pb::RetiredSigningKeys {
        keys: Some(signing_keys(api)?),
        retired,
        stranded,
    }))
}
