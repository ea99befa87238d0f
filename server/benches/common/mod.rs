//! What the benches over a stored fleet share: devices enrolled and reported as the agent API
//! stores them (`Store::enroll`, then `Store::store_report`), without the network.

use vakt_proto::model;
use vakt_proto::pb;
use vakt_server::api::State;

/// A server's state on an embedded store in a fresh temporary directory (kept alive by the
/// returned guard), as `serve` prepares it, and the bearer header of its first admin token.
pub async fn prepared() -> (tempfile::TempDir, State, String) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let state = vakt_server::server::prepare(
        dir.path(),
        &[],
        vakt_server::notify::NotifyConfig::default(),
    )
    .await
    .expect("prepare the data directory");
    let admin = std::fs::read_to_string(dir.path().join("admin.token")).expect("admin.token");
    let bearer = format!("Bearer {}", admin.trim());
    (dir, state, bearer)
}

/// Device `i`'s host facts, named as [`fill`] names it (`lap-{i:05}`).
pub fn host(i: usize) -> model::HostFacts {
    model::HostFacts {
        hostname: format!("lap-{i:05}"),
        os: "Debian GNU/Linux 12 (bookworm)".into(),
        serial: format!("PF{i:06}"),
        ..Default::default()
    }
}

/// Devices written at once, so they share flushes as a fleet's do.
const AT_ONCE: usize = 256;

/// Enrolls `devices` devices (`dev-00000`, ...) on one enrollment token and stores
/// `report(i)` as device i's first report.
pub async fn fill(state: &State, devices: usize, report: fn(usize) -> model::Report) {
    let count = u32::try_from(devices).expect("a fleet that fits a token's use count");
    let (secret, _) =
        vakt_server::api::admin::create_enroll_token(&state.store, count, 3600, "bench", "")
            .await
            .expect("an enrollment token");
    for start in (0..devices).step_by(AT_ONCE) {
        let tasks: Vec<_> = (start..(start + AT_ONCE).min(devices))
            .map(|i| {
                let (state, secret) = (state.clone(), secret.clone());
                tokio::spawn(async move { seed(&state, &secret, i, &report(i)).await })
            })
            .collect();
        for t in tasks {
            t.await.expect("seed task");
        }
    }
}

/// Enrolls device `dev-{i:05}` with the enrollment token `secret` (a certificate of its own)
/// and stores `report` as its first report.
async fn seed(state: &State, secret: &str, i: usize, report: &model::Report) {
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
