//! The policy engine's inputs about people: the people register (replaced whole from a CSV
//! file, its errors bounded for a gRPC header), trips abroad and exemptions. Each change is
//! audited and re-evaluates every device.

use super::{Actor, AdminApi, looks_like_email};
use crate::api::{internal, required_reason};
use crate::store::JsonTree;
use crate::timefmt::now_ms;
use crate::token;
use tonic::{Request, Response, Status};
use vakt_proto::pb;

/// How many of a file's errors an answer lists, and how long each may be: an answer's message
/// is a gRPC header, which clients refuse past a few tens of KiB.
const MAX_ERROR_LINES: usize = 50;
const MAX_ERROR_LINE_CHARS: usize = 300;

pub(super) async fn import(
    api: &AdminApi,
    req: Request<pb::ImportPeopleRequest>,
) -> Result<Response<pb::ImportPeopleResponse>, Status> {
    let actor = api.authorize(&req, pb::Role::Operator)?;
    let r = req.into_inner();
    let name = if r.file_name.is_empty() {
        "people.csv"
    } else {
        &r.file_name
    };
    let people = crate::people::parse(&r.csv).map_err(|errors| {
        // The message travels as a gRPC header: bounded, whatever the file held (a
        // megabyte-long header cell quoted whole made the answer itself unreadable).
        let mut lines: Vec<String> = errors
            .iter()
            .take(MAX_ERROR_LINES)
            .map(|e| crate::api::clip(&format!("{name}: {e}"), MAX_ERROR_LINE_CHARS))
            .collect();
        if errors.len() > MAX_ERROR_LINES {
            lines.push(format!(
                "… and {} more error(s)",
                errors.len() - MAX_ERROR_LINES
            ));
        }
        Status::invalid_argument(format!(
            "nothing was imported; {} error(s):\n{}",
            errors.len(),
            lines.join("\n")
        ))
    })?;
    let records: Vec<(Vec<u8>, crate::people::Person)> = people
        .iter()
        .map(|p| (p.email.to_lowercase().into_bytes(), p.clone()))
        .collect();
    api.state
        .store
        .json_replace_all(crate::store::JsonTree::People, &records)
        .await
        .map_err(internal)?;
    api.audit(
        &actor,
        "people.import",
        name,
        &format!("{} people", people.len()),
    )
    .await?;
    crate::findings::evaluate_all(&api.state)
        .await
        .map_err(internal)?;
    Ok(Response::new(pb::ImportPeopleResponse {
        imported: u32::try_from(people.len()).unwrap_or(u32::MAX),
    }))
}

pub(super) async fn list(
    api: &AdminApi,
    req: Request<pb::ListPeopleRequest>,
) -> Result<Response<pb::ListPeopleResponse>, Status> {
    api.authorize(&req, pb::Role::Viewer)?;
    let date = |d: Option<time::Date>| d.map(|d| d.to_string()).unwrap_or_default();
    let people = crate::findings::people(&api.state)
        .map_err(internal)?
        .into_iter()
        .map(|p| pb::PersonInfo {
            email: p.email,
            name: p.name,
            manager_email: p.manager_email.unwrap_or_default(),
            end_date: date(p.end_date),
            leave_from: date(p.leave_from),
            leave_to: date(p.leave_to),
        })
        .collect();
    Ok(Response::new(pb::ListPeopleResponse { people }))
}

pub(super) async fn add_trip(
    api: &AdminApi,
    req: Request<pb::AddTripRequest>,
) -> Result<Response<pb::TripInfo>, Status> {
    let actor = api.authorize(&req, pb::Role::Operator)?;
    let r = req.into_inner();
    let person = r.person.trim().to_lowercase();
    if !looks_like_email(&person) {
        return Err(Status::invalid_argument(format!(
            "--person '{}' is not an e-mail address",
            r.person
        )));
    }
    let kind = match r.kind.as_str() {
        "business" => crate::policy::TripKind::Business,
        "private" => crate::policy::TripKind::Private,
        other => {
            return Err(Status::invalid_argument(format!(
                "--kind '{other}' must be business or private"
            )));
        }
    };
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    let date = |flag: &str, v: &str| {
        time::Date::parse(v.trim(), &fmt).map_err(|_| {
            Status::invalid_argument(format!("--{flag} '{v}' is not a date (YYYY-MM-DD)"))
        })
    };
    let (from, to) = (date("from", &r.from)?, date("to", &r.to)?);
    if to < from {
        return Err(Status::invalid_argument(format!(
            "--to {to} is before --from {from}"
        )));
    }
    let mut countries = Vec::new();
    for c in &r.countries {
        for part in c.split(',') {
            let cc = part.trim().to_uppercase();
            if cc.len() != 2 || !cc.chars().all(|ch| ch.is_ascii_uppercase()) {
                return Err(Status::invalid_argument(format!(
                    "--country '{part}' is not a two-letter ISO code (NO, FI, DE...)"
                )));
            }
            countries.push(cc);
        }
    }
    if countries.is_empty() {
        return Err(Status::invalid_argument(
            "a trip needs at least one --country",
        ));
    }
    let approved_by = r.approved_by.trim().to_lowercase();
    if !approved_by.is_empty() && !looks_like_email(&approved_by) {
        return Err(Status::invalid_argument(format!(
            "--approved-by '{}' is not an e-mail address",
            r.approved_by
        )));
    }
    let now = now_ms();
    let trip = crate::policy::Trip {
        id: format!("trip-{now:012x}{}", token::hex(&token::random_bytes::<3>())),
        person,
        kind,
        countries,
        from,
        to,
        approved_by: (!approved_by.is_empty()).then_some(approved_by),
    };
    let detail = format!(
        "{} {:?} {}..{}",
        trip.id, trip.countries, trip.from, trip.to
    );
    let audit = ("trip.add", trip.person.as_str(), detail.as_str());
    store_audited(api, &actor, JsonTree::Trips, &trip.id, &trip, audit).await?;
    Ok(Response::new(trip_info(&trip)))
}

pub(super) async fn list_trips(
    api: &AdminApi,
    req: Request<pb::ListTripsRequest>,
) -> Result<Response<pb::ListTripsResponse>, Status> {
    api.authorize(&req, pb::Role::Viewer)?;
    let trips = crate::findings::trips(&api.state)
        .map_err(internal)?
        .iter()
        .map(trip_info)
        .collect();
    Ok(Response::new(pb::ListTripsResponse { trips }))
}

/// The longest exemption IT grants with an end (ten years of minutes). A longer one ended
/// past the year 9999, which a timestamp cannot hold: it was stored as the epoch, an exemption
/// expired at once. Without `--minutes` an exemption lasts until revoked.
const MAX_GRANT_MINUTES: u32 = 10 * 366 * 24 * 60;

pub(super) async fn grant_exemption(
    api: &AdminApi,
    req: Request<pb::GrantExemptionRequest>,
) -> Result<Response<pb::ExemptionInfo>, Status> {
    let actor = api.authorize(&req, pb::Role::Operator)?;
    let r = req.into_inner();
    let subject = match (r.device.trim(), r.person.trim()) {
        (d, "") if !d.is_empty() => crate::policy::ExemptionSubject::Device(
            api.find_device(d)
                .await?
                .device
                .map(|d| d.id)
                .unwrap_or_default(),
        ),
        ("", p) if looks_like_email(&p.to_lowercase()) => {
            crate::policy::ExemptionSubject::Person(p.to_lowercase())
        }
        _ => {
            return Err(Status::invalid_argument(
                "name either a device or a person (an e-mail address)",
            ));
        }
    };
    let rule = r.rule.trim();
    let known = api
        .state
        .policy
        .read()
        .map(|p| {
            p.pack
                .rules
                .iter()
                .any(|x| x.id == rule || x.kind().as_str() == rule)
        })
        .unwrap_or(false);
    if !known {
        return Err(Status::invalid_argument(format!(
            "'{rule}' is neither a rule id nor a rule kind of the policy in force"
        )));
    }
    let reason = required_reason(&r.reason, "an exemption needs a --reason")?;
    if r.minutes > MAX_GRANT_MINUTES {
        return Err(Status::invalid_argument(format!(
            "--minutes must be at most {MAX_GRANT_MINUTES} (ten years); leave it out for an exemption until revoked"
        )));
    }
    let now = now_ms();
    let e = crate::policy::Exemption {
        id: format!("ex-{now:012x}{}", token::hex(&token::random_bytes::<3>())),
        subject,
        rule: rule.to_string(),
        from: crate::findings::ms_to_time(now),
        until: (r.minutes > 0)
            .then(|| crate::findings::ms_to_time(now + i64::from(r.minutes) * 60_000)),
        reason: reason.to_string(),
        granted_by: actor.audit_name(),
        revoked: None,
    };
    let detail = format!("rule={} reason={}", e.rule, e.reason);
    let audit = ("exemption.grant", e.id.as_str(), detail.as_str());
    store_audited(api, &actor, JsonTree::Exemptions, &e.id, &e, audit).await?;
    Ok(Response::new(exemption_info(&e)))
}

/// Ends an exemption now: `until` becomes now and the record keeps who ended it and why, so
/// findings exempted while it was in force still point at what exempted them. One that has
/// ended already is refused (nothing to end), as is one not found.
pub(super) async fn revoke_exemption(
    api: &AdminApi,
    req: Request<pb::RevokeExemptionRequest>,
) -> Result<Response<pb::ExemptionInfo>, Status> {
    let actor = api.authorize(&req, pb::Role::Operator)?;
    let r = req.into_inner();
    let reason = required_reason(&r.reason, "ending an exemption needs a --reason")?;
    let id = r.id.trim();
    let Some(mut e) = crate::findings::exemptions(&api.state)
        .map_err(internal)?
        .into_iter()
        .find(|e| e.id == id)
    else {
        return Err(Status::not_found(format!("no exemption '{id}'")));
    };
    let now = now_ms();
    if let Some(until) = e.until.map(crate::findings::time_to_ms)
        && until <= now
    {
        return Err(Status::failed_precondition(format!(
            "exemption {id} ended already ({})",
            crate::timefmt::rfc3339_ms(until)
        )));
    }
    e.until = Some(crate::findings::ms_to_time(now));
    e.revoked = Some(crate::policy::Revocation {
        by: actor.audit_name(),
        reason: reason.to_string(),
    });
    let detail = format!("rule={} reason={reason}", e.rule);
    let audit = ("exemption.revoke", e.id.as_str(), detail.as_str());
    store_audited(api, &actor, JsonTree::Exemptions, &e.id, &e, audit).await?;
    Ok(Response::new(exemption_info(&e)))
}

/// What every change to a trip or an exemption does: the record stored, the change audited
/// (`audit`: action, target, detail), then every device evaluated again, since the change
/// may exempt or un-exempt any of them.
async fn store_audited<T: serde::Serialize>(
    api: &AdminApi,
    actor: &Actor,
    tree: JsonTree,
    id: &str,
    record: &T,
    audit: (&str, &str, &str),
) -> Result<(), Status> {
    api.state
        .store
        .json_apply(tree, &[(id.as_bytes().to_vec(), record)], &[])
        .await
        .map_err(internal)?;
    let (action, target, detail) = audit;
    api.audit(actor, action, target, detail).await?;
    crate::findings::evaluate_all(&api.state)
        .await
        .map_err(internal)
}

pub(super) async fn list_exemptions(
    api: &AdminApi,
    req: Request<pb::ListExemptionsRequest>,
) -> Result<Response<pb::ListExemptionsResponse>, Status> {
    api.authorize(&req, pb::Role::Viewer)?;
    let exemptions = crate::findings::exemptions(&api.state)
        .map_err(internal)?
        .iter()
        .map(exemption_info)
        .collect();
    Ok(Response::new(pb::ListExemptionsResponse { exemptions }))
}

fn trip_info(t: &crate::policy::Trip) -> pb::TripInfo {
    pb::TripInfo {
        id: t.id.clone(),
        person: t.person.clone(),
        countries: t.countries.clone(),
        from: t.from.to_string(),
        to: t.to.to_string(),
        kind: match t.kind {
            crate::policy::TripKind::Business => "business".into(),
            crate::policy::TripKind::Private => "private".into(),
        },
        approved_by: t.approved_by.clone().unwrap_or_default(),
    }
}

fn exemption_info(e: &crate::policy::Exemption) -> pb::ExemptionInfo {
    let (device, person) = match &e.subject {
        crate::policy::ExemptionSubject::Device(d) => (d.clone(), String::new()),
        crate::policy::ExemptionSubject::Person(p) => (String::new(), p.clone()),
    };
    pb::ExemptionInfo {
        id: e.id.clone(),
        device,
        person,
        rule: e.rule.clone(),
        from_ms: crate::findings::time_to_ms(e.from),
        until_ms: e.until.map(crate::findings::time_to_ms).unwrap_or(0),
        reason: e.reason.clone(),
        granted_by: e.granted_by.clone(),
        revoked_by: e.revoked.as_ref().map(|r| r.by.clone()).unwrap_or_default(),
        revoke_reason: e
            .revoked
            .as_ref()
            .map(|r| r.reason.clone())
            .unwrap_or_default(),
    }
}
