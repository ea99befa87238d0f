//! The policy pack and its findings: checking a pack (offline too: `vakt policy check` calls
//! [`check_pack`] directly), applying one (stored, put in force, every device re-evaluated),
//! showing the one in force, and listing findings.

use super::AdminApi;
use crate::api::internal;
use crate::timefmt::now_ms;
use tonic::{Request, Response, Status};
use vakt_proto::pb;

pub(super) async fn list_findings(
    api: &AdminApi,
    req: Request<pb::ListFindingsRequest>,
) -> Result<Response<pb::ListFindingsResponse>, Status> {
    api.authorize(&req, pb::Role::Viewer)?;
    let r = req.into_inner();
    let device = if r.device.trim().is_empty() {
        None
    } else {
        Some(
            api.find_device(&r.device)
                .await?
                .device
                .map(|d| d.id)
                .unwrap_or_default(),
        )
    };
    let hostnames: std::collections::HashMap<String, String> = api
        .state
        .store
        .devices()
        .map_err(internal)?
        .into_iter()
        .filter_map(|r| r.device.map(|d| (d.id, d.hostname)))
        .collect();
    let mut findings: Vec<pb::FindingInfo> =
        crate::findings::findings(&api.state, device.as_deref())
            .map_err(internal)?
            .iter()
            .filter(|f| r.include_resolved || f.status != crate::policy::FindingStatus::Resolved)
            .map(|f| crate::findings::finding_info(f, hostnames.get(&f.device).map_or("", |h| h)))
            .collect();
    findings.sort_by(|a, b| {
        a.hostname
            .cmp(&b.hostname)
            .then(a.first_seen_ms.cmp(&b.first_seen_ms))
    });
    Ok(Response::new(pb::ListFindingsResponse { findings }))
}

pub(super) async fn check(
    api: &AdminApi,
    req: Request<pb::PolicyText>,
) -> Result<Response<pb::PolicyCheck>, Status> {
    api.authorize(&req, pb::Role::Viewer)?;
    Ok(Response::new(check_pack(req.get_ref())))
}

pub(super) async fn apply(
    api: &AdminApi,
    req: Request<pb::PolicyText>,
) -> Result<Response<pb::PolicyInfo>, Status> {
    let actor = api.authorize(&req, pb::Role::Admin)?;
    let r = req.into_inner();
    let pack = crate::policy::check(&r.toml).map_err(|errors| {
        let name = if r.file_name.is_empty() {
            "policy"
        } else {
            &r.file_name
        };
        let lines: Vec<String> = errors.iter().map(|e| e.in_file(name).to_string()).collect();
        Status::invalid_argument(format!(
            "the policy was not applied; {} error(s):\n{}",
            lines.len(),
            lines.join("\n")
        ))
    })?;
    let now = now_ms();
    let version = api
        .state
        .policy
        .read()
        .map(|p| p.stored.version)
        .unwrap_or(0)
        + 1;
    let stored = crate::findings::StoredPolicy {
        version,
        toml: r.toml.clone(),
        applied_ms: now,
        applied_by: actor.audit_name(),
    };
    api.state
        .store
        .json_apply(
            crate::store::JsonTree::Policies,
            &[(version.to_be_bytes().to_vec(), stored.clone())],
            &[],
        )
        .await
        .map_err(internal)?;
    let info = policy_info(&pack, &stored);
    if let Ok(mut p) = api.state.policy.write() {
        *p = crate::findings::PolicyInForce { pack, stored };
    }
    api.audit(
        &actor,
        "policy.apply",
        &format!("version {version}"),
        &format!("{} {} rules", info.pack_version, info.rules),
    )
    .await?;
    crate::findings::evaluate_all(&api.state)
        .await
        .map_err(internal)?;
    Ok(Response::new(info))
}

pub(super) async fn show(
    api: &AdminApi,
    req: Request<pb::ShowPolicyRequest>,
) -> Result<Response<pb::PolicyInfo>, Status> {
    api.authorize(&req, pb::Role::Viewer)?;
    let p = api
        .state
        .policy
        .read()
        .map_err(|_| Status::internal("policy lock poisoned"))?
        .clone();
    Ok(Response::new(policy_info(&p.pack, &p.stored)))
}

/// Validates a pack's text; errors as `FILE:LINE:COL: message`.
pub fn check_pack(r: &pb::PolicyText) -> pb::PolicyCheck {
    let name = if r.file_name.is_empty() {
        "policy"
    } else {
        &r.file_name
    };
    match crate::policy::check(&r.toml) {
        Ok(pack) => pb::PolicyCheck {
            ok: true,
            errors: Vec::new(),
            rules: u32::try_from(pack.rules.len()).unwrap_or(u32::MAX),
        },
        Err(errors) => pb::PolicyCheck {
            ok: false,
            errors: errors.iter().map(|e| e.in_file(name).to_string()).collect(),
            rules: 0,
        },
    }
}

fn policy_info(
    pack: &crate::policy::Pack,
    stored: &crate::findings::StoredPolicy,
) -> pb::PolicyInfo {
    pb::PolicyInfo {
        version: stored.version,
        organisation: pack.organisation.clone(),
        document: pack.document.clone(),
        reference: pack.reference.clone(),
        pack_version: pack.version.clone(),
        applied_ms: stored.applied_ms,
        applied_by: stored.applied_by.clone(),
        toml: stored.toml.clone(),
        rules: u32::try_from(pack.rules.len()).unwrap_or(u32::MAX),
    }
}
