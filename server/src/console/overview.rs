//! The overview: devices by state, open loss cases, wipes waiting for a second admin, and the
//! latest check-ins (and the devices that stopped checking in).

use super::view::{self, DEVICE_STATES};
use super::{Authed, Frame, html};
use crate::timefmt::now_ms;
use askama::Template;
use axum::http::StatusCode;
use axum::response::Response;
use vakt_proto::pb;
use vakt_proto::pb::admin_service_server::AdminService;

/// A device that has not checked in for this long is listed as silent.
const SILENT_AFTER_MS: i64 = 7 * 24 * 3600 * 1000;
/// How many check-ins the overview lists.
const RECENT: usize = 10;

pub struct StateCount {
    pub state: &'static str,
    pub label: &'static str,
    pub n: usize,
}

pub struct CheckIn {
    pub id: String,
    pub hostname: String,
    pub state: &'static str,
    pub state_label: &'static str,
    pub assigned_to: String,
    pub ago: String,
    pub when: String,
    pub connected: bool,
}

pub struct OpenCase {
    pub device_id: String,
    pub hostname: String,
    pub opened: String,
    pub reported_by: String,
    pub steps_done: usize,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct Overview {
    c: Frame,
    total: usize,
    connected: usize,
    states: Vec<StateCount>,
    awaiting_approval: usize,
    cases: Vec<OpenCase>,
    recent: Vec<CheckIn>,
    silent: Vec<CheckIn>,
}

fn check_in(a: &Authed, now: i64, d: &pb::Device) -> CheckIn {
    CheckIn {
        id: d.id.clone(),
        hostname: d.hostname.clone(),
        state: crate::api::device_state_name(d.state),
        state_label: a.lang.device_state(d.state),
        assigned_to: d.assigned_to.clone(),
        ago: view::ago(a.lang, now, d.last_seen_ms),
        when: view::when(d.last_seen_ms),
        connected: d.connected,
    }
}

pub async fn page(a: Authed) -> Response {
    let devices = match a.api().list_devices(a.req(pb::ListDevicesRequest {})).await {
        Ok(r) => r.into_inner().devices,
        Err(s) => return a.fail(s, "/"),
    };
    let commands = match a
        .api()
        .list_commands(a.req(pb::ListCommandsRequest::default()))
        .await
    {
        Ok(r) => r.into_inner().commands,
        Err(s) => return a.fail(s, "/"),
    };
    let cases = match a
        .api()
        .list_losses(a.req(pb::ListLossesRequest { open_only: true }))
        .await
    {
        Ok(r) => r.into_inner().cases,
        Err(s) => return a.fail(s, "/"),
    };
    let now = now_ms();
    let states = DEVICE_STATES
        .iter()
        .map(|s| StateCount {
            state: crate::api::device_state_name(*s as i32),
            label: a.lang.device_state(*s as i32),
            n: devices.iter().filter(|d| d.state == *s as i32).count(),
        })
        .collect();
    let mut by_last_seen: Vec<&pb::Device> = devices.iter().collect();
    by_last_seen.sort_by(|x, y| y.last_seen_ms.cmp(&x.last_seen_ms));
    let recent = by_last_seen
        .iter()
        .take(RECENT)
        .map(|d| check_in(&a, now, d))
        .collect();
    let silent = by_last_seen
        .iter()
        .rev()
        .filter(|d| now.saturating_sub(d.last_seen_ms) > SILENT_AFTER_MS)
        .filter(|d| d.state == pb::DeviceState::Active as i32)
        .map(|d| check_in(&a, now, d))
        .collect();
    let cases = cases
        .iter()
        .map(|c| OpenCase {
            device_id: c.device_id.clone(),
            hostname: c.hostname.clone(),
            opened: view::when(c.opened_ms),
            reported_by: c.reported_by.clone(),
            steps_done: crate::loss::checklist(c).iter().filter(|s| s.done).count(),
        })
        .collect();
    let page = Overview {
        c: a.frame("overview", a.t("Översikt", "Overview")),
        total: devices.len(),
        connected: devices.iter().filter(|d| d.connected).count(),
        states,
        awaiting_approval: commands
            .iter()
            .filter(|c| {
                c.kind == pb::CommandKind::Wipe as i32
                    && c.state == pb::CommandState::AwaitingApproval as i32
            })
            .count(),
        cases,
        recent,
        silent,
    };
    html(StatusCode::OK, &page)
}
