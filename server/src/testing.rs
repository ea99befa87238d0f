//! Fixtures the unit tests of several modules share: a device enrolled straight into the
//! store, with one report or none, and a laptop report that the Sorsele pack finds violations in.

#![allow(clippy::unwrap_used)]

use crate::api::admin::create_enroll_token;
use crate::state::State;
use crate::timefmt::now_ms;
use vakt_proto::{model, pb};

/// Enrolls a device straight into the store and stores one report for it.
pub async fn seed_device(state: &State, hostname: &str, report: &model::Report) -> String {
    let id = enroll_device(state, hostname).await;
    let sections = vakt_proto::convert::report_to_sections(report);
    state
        .store
        .store_report(&id, 1, &sections, &[], now_ms(), "0.1.0")
        .await
        .unwrap();
    id
}

/// Enrolls a device straight into the store, as one that has not reported yet.
pub async fn enroll_device(state: &State, hostname: &str) -> String {
    let (secret, _) = create_enroll_token(&state.store, 1, 600, "test", "")
        .await
        .unwrap();
    let id = format!("dev-{hostname}");
    let now = now_ms();
    let device = pb::Device {
        id: id.clone(),
        hostname: hostname.into(),
        state: pb::DeviceState::Active as i32,
        enrolled_at_ms: now,
        last_seen_ms: now,
        ..Default::default()
    };
    state
        .store
        .enroll(
            &crate::token::hash(&secret),
            now,
            device,
            pb::HardwareIdentity::default(),
            [7; 32],
        )
        .await
        .unwrap();
    id
}

pub fn laptop_report() -> model::Report {
    model::Report {
        host: model::HostFacts {
            hostname: "lap-anna".into(),
            os: "Debian GNU/Linux 12 (bookworm)".into(),
            serial: "PF3XYZ".into(),
            ..Default::default()
        },
        software: vec![model::Package {
            name: "nodejs".into(),
            version: "20.20.2-1nodesource1".into(),
            format: model::PackageFormat::Deb,
            source: model::SoftwareSource::Unlisted,
            origin: "NodeSource".into(),
            current: false,
            arch: String::new(),
            user: String::new(),
            path: String::new(),
        }],
        mail: model::MailSettings {
            forwards: vec![model::MailForward {
                client: "thunderbird".into(),
                user: "anna".into(),
                rule: "<script>alert(1)</script>".into(),
                enabled: true,
                target: "anna@gmail.com".into(),
                kind: model::ForwardKind::Forward,
                keeps_copy: false,
                problem: String::new(),
            }],
            ..Default::default()
        },
        roaming: model::RoamingState {
            modems: vec![model::Modem {
                registration: "roaming".into(),
                roaming: true,
                operator_mcc: "242".into(),
                country: "NO".into(),
                home_mcc: "240".into(),
                data_connected: true,
                rx_bytes: 1_048_576,
                ..Default::default()
            }],
            abroad: Vec::new(),
        },
        storage: model::Storage::default(),
        errors: Vec::new(),
    }
}
