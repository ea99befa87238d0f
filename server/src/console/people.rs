//! People (from the HR export), their trips, and exemptions from rules: what the policy's rules
//! look at besides the devices. Importing people, adding a trip, granting an exemption and
//! ending one are the admin API's calls, with its validation and audit entries.

use super::view;
use super::{Authed, Frame, Lang, Page, Post, html};
use askama::Template;
use axum::extract::Path;
use axum::http::StatusCode;
use serde::Deserialize;
use std::collections::HashMap;
use vakt_proto::pb;
use vakt_proto::pb::admin_service_server::AdminService;

pub struct PersonRow {
    pub p: pb::PersonInfo,
    /// The devices assigned to this person: (id, hostname).
    pub devices: Vec<(String, String)>,
}

pub struct TripRow {
    pub t: pb::TripInfo,
    pub kind: &'static str,
    pub countries: String,
}

pub struct ExemptionRow {
    pub e: pb::ExemptionInfo,
    pub subject: String,
    pub from: String,
    pub until: String,
    /// Still in force (no end, or one to come): it can be ended.
    pub in_force: bool,
}

#[derive(Template)]
#[template(path = "people.html")]
struct PeoplePage {
    c: Frame,
    people: Vec<PersonRow>,
    trips: Vec<TripRow>,
    exemptions: Vec<ExemptionRow>,
}

pub async fn page(a: Authed) -> Page {
    let answer = a.api().list_people(a.req(pb::ListPeopleRequest {})).await;
    let people = a.ok(answer, "/")?.people;
    let answer = a.api().list_trips(a.req(pb::ListTripsRequest {})).await;
    let trips = a.ok(answer, "/")?.trips;
    let answer = a
        .api()
        .list_exemptions(a.req(pb::ListExemptionsRequest {}))
        .await;
    let exemptions = a.ok(answer, "/")?.exemptions;
    let devices = a.devices("/").await?;
    let mut by_person: HashMap<String, Vec<(String, String)>> = HashMap::new();
    let mut hostnames = HashMap::new();
    for d in &devices {
        hostnames.insert(d.id.clone(), d.hostname.clone());
        if !d.assigned_to.is_empty() {
            by_person
                .entry(d.assigned_to.to_lowercase())
                .or_default()
                .push((d.id.clone(), d.hostname.clone()));
        }
    }
    let people = people
        .into_iter()
        .map(|p| PersonRow {
            devices: by_person
                .get(&p.email.to_lowercase())
                .cloned()
                .unwrap_or_default(),
            p,
        })
        .collect();
    let trips = trips
        .into_iter()
        .rev()
        .map(|t| TripRow {
            kind: a.lang.trip_kind(&t.kind),
            countries: t.countries.join(", "),
            t,
        })
        .collect();
    let now = crate::timefmt::now_ms();
    let exemptions = exemptions
        .into_iter()
        .rev()
        .map(|e| ExemptionRow {
            in_force: e.until_ms == 0 || e.until_ms > now,
            subject: if e.device.is_empty() {
                e.person.clone()
            } else {
                hostnames
                    .get(&e.device)
                    .cloned()
                    .unwrap_or_else(|| e.device.clone())
            },
            from: view::when(e.from_ms),
            until: if e.until_ms > 0 {
                view::when(e.until_ms)
            } else {
                a.t("tills vidare", "until revoked").to_string()
            },
            e,
        })
        .collect();
    let page = PeoplePage {
        c: a.frame("people", a.t("Personer och resor", "People and trips")),
        people,
        trips,
        exemptions,
    };
    Ok(html(StatusCode::OK, &page))
}

#[derive(Deserialize)]
pub struct ImportForm {
    #[serde(default)]
    csv: String,
}

pub async fn import(Post(a, f): Post<ImportForm>) -> Page {
    let answer = a
        .api()
        .import_people(a.req(pb::ImportPeopleRequest {
            csv: f.csv.into_bytes(),
            file_name: "people.csv".into(),
        }))
        .await;
    let n = a.ok(answer, "/people")?.imported;
    let msg = match a.lang {
        Lang::Sv => format!("{n} personer importerade; enheterna bedöms om."),
        Lang::En => format!("{n} people imported; devices are evaluated again."),
    };
    Ok(a.done("/people", msg))
}

#[derive(Deserialize)]
pub struct TripForm {
    #[serde(default)]
    person: String,
    #[serde(default)]
    countries: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    approved_by: String,
}

pub async fn add_trip(Post(a, f): Post<TripForm>) -> Page {
    // "NO FI" and "NO, FI" both work: the API splits on commas, the form on spaces too.
    let countries = f
        .countries
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let answer = a
        .api()
        .add_trip(a.req(pb::AddTripRequest {
            person: f.person,
            countries,
            from: f.from,
            to: f.to,
            kind: f.kind,
            approved_by: f.approved_by,
        }))
        .await;
    let t = a.ok(answer, "/people#trips")?;
    let msg = match a.lang {
        Lang::Sv => format!("Resan {} för {} är registrerad.", t.id, t.person),
        Lang::En => format!("Trip {} for {} is recorded.", t.id, t.person),
    };
    Ok(a.done("/people#trips", msg))
}

#[derive(Deserialize)]
pub struct ExemptionForm {
    #[serde(default)]
    device: String,
    #[serde(default)]
    person: String,
    #[serde(default)]
    rule: String,
    #[serde(default)]
    minutes: String,
    #[serde(default)]
    reason: String,
}

pub async fn grant_exemption(Post(a, f): Post<ExemptionForm>) -> Page {
    let back = "/people#exemptions";
    let minutes = match f.minutes.trim() {
        "" => 0,
        m => m.parse::<u32>().map_err(|_| {
            a.error_page(
                StatusCode::BAD_REQUEST,
                a.t("Uppgifterna godtogs inte", "The input was not accepted"),
                a.t(
                    "Minuter ska vara ett heltal (tomt: tills vidare).",
                    "Minutes must be a whole number (empty: until revoked).",
                ),
                back,
            )
        })?,
    };
    let answer = a
        .api()
        .grant_exemption(a.req(pb::GrantExemptionRequest {
            device: f.device,
            person: f.person,
            rule: f.rule,
            minutes,
            reason: f.reason,
        }))
        .await;
    let e = a.ok(answer, back)?;
    let msg = match a.lang {
        Lang::Sv => format!("Undantaget {} från {} är beviljat.", e.id, e.rule),
        Lang::En => format!("Exemption {} from {} is granted.", e.id, e.rule),
    };
    Ok(a.done(back, msg))
}

#[derive(Deserialize)]
pub struct RevokeExemptionForm {
    #[serde(default)]
    reason: String,
}

pub async fn revoke_exemption(
    Path(id): Path<String>,
    Post(a, f): Post<RevokeExemptionForm>,
) -> Page {
    let back = "/people#exemptions";
    let answer = a
        .api()
        .revoke_exemption(a.req(pb::RevokeExemptionRequest {
            id,
            reason: f.reason,
        }))
        .await;
    let e = a.ok(answer, back)?;
    let msg = match a.lang {
        Lang::Sv => format!("Undantaget {} från {} har upphört.", e.id, e.rule),
        Lang::En => format!("Exemption {} from {} has ended.", e.id, e.rule),
    };
    Ok(a.done(back, msg))
}
