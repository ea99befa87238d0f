//! What the benches over a stored fleet share: one device enrolled and reported as the agent
//! API stores it (`Store::enroll`, then `Store::store_report`), without the network.

use vakt_proto::model;
use vakt_proto::pb;
use vakt_server::api::State;

/// Enrolls device `dev-{i:05}` with the enrollment token `secret` (a certificate of its own)
/// and stores `report` as its first report.
pub async fn seed(state: &State, secret: &str, i: usize, report: &model::Report) {
    let id = format!("dev-{i:05}");
    let now = 1_790_000_000_000;
    let device = pb::Device {
        id: id.clone(),
        hostname: format!("lap-{i:05}"),
        state: pb::DeviceState::Active as i32,
        enrolled_at_ms: now,
        last_seen_ms: now,
        ..Default::default()
    };
    let mut cert = [0u8; 32];
    cert[..8].copy_from_slice(&(i as u64).to_be_bytes());
    state
        .store
        .enroll(
            &vakt_server::token::hash(secret),
            now,
            device,
            pb::HardwareIdentity::default(),
            cert,
        )
        .await
        .expect("enroll");
    let sections = vakt_proto::convert::report_to_sections(report);
    state
        .store
        .store_report(&id, 1, &sections, &[], now, "0.1.0")
        .await
        .expect("store the report");
}
