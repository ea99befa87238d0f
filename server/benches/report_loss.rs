//! What a loss report (`vakt loss report DEVICE`, `AdminService.ReportLoss`) costs on a store
//! of 10,000 devices and 5,000 closed loss cases, and what its lookups cost before and after
//! the store's indexes, side by side in one run.
//!
//!     cargo bench -p vakt-server --bench report_loss
//!
//! Fills an embedded store through `server::prepare` (as `serve` opens it) with 10,000
//! enrolled devices, each with a host and storage report, and 5,000 closed loss cases, one
//! for each of the last 5,000 devices. Then:
//! - the whole gRPC method as the admin API runs it, without the network, 30 times by
//!   hostname and 30 by id, alternating which goes first (each opens a case and queues a
//!   lock, so each device once);
//! - for 30 other devices without a case, "before": the lookups `ReportLoss` made until the
//!   indexes (every device decoded to find the hostname, every loss case decoded to find an
//!   open one), through the same public store calls it used (`devices`, `losses`), and
//!   "after": the lookups it makes now (`devices_named`, `open_loss_of`).
//!
//! Median and worst of the 30. BENCHMARKS.md ("Loss report lookups") records the figures.

mod common;

use std::time::{Duration, Instant};
use tonic::Request;
use vakt_proto::model;
use vakt_proto::pb;
use vakt_proto::pb::admin_service_server::AdminService;
use vakt_server::api::admin::AdminApi;

const DEVICES: usize = 10_000;
const CLOSED_CASES: usize = 5_000;
const RUNS: usize = 30;

fn report(i: usize) -> model::Report {
    model::Report {
        host: common::host(i),
        storage: model::Storage {
            volumes: vec![model::Volume {
                mount: "/".into(),
                device: "/dev/nvme0n1p3".into(),
                encrypted: true,
                scheme: Some(model::CryptScheme::Luks2),
                ..Default::default()
            }],
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Closed loss cases for the last `CLOSED_CASES` devices, written 256 at a time.
async fn closed_cases(state: &vakt_server::api::State) {
    let now = 1_790_000_000_000_i64;
    for start in ((DEVICES - CLOSED_CASES)..DEVICES).step_by(256) {
        let tasks: Vec<_> = (start..(start + 256).min(DEVICES))
            .map(|i| {
                let store = state.store.clone();
                tokio::spawn(async move {
                    let opened = now + i64::try_from(i).expect("small");
                    let case = pb::LossCase {
                        id: vakt_server::loss::new_id(opened),
                        device_id: format!("dev-{i:05}"),
                        hostname: format!("lap-{i:05}"),
                        open: false,
                        opened_ms: opened,
                        closed_ms: opened + 3_600_000,
                        ..Default::default()
                    };
                    store
                        .save_loss(&case, &[], None)
                        .await
                        .expect("save a case");
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("case task");
        }
    }
}

/// Median and worst, in milliseconds.
fn summary(mut times: Vec<Duration>) -> String {
    times.sort();
    format!(
        "median {:.2} ms, worst {:.2} ms",
        times[times.len() / 2].as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3
    )
}

#[tokio::main]
async fn main() {
    let (_dir, state, bearer) = common::prepared().await;
    let fill = Instant::now();
    common::fill(&state, DEVICES, report).await;
    closed_cases(&state).await;
    println!(
        "report_loss: {DEVICES} devices and {CLOSED_CASES} closed cases stored in {:.1} s",
        fill.elapsed().as_secs_f64()
    );
    let store = &state.store;
    let api = AdminApi::new(state.clone());
    let report_loss = |device: String| {
        let mut req = Request::new(pb::ReportLossRequest {
            device,
            ..Default::default()
        });
        req.metadata_mut()
            .insert("authorization", bearer.parse().expect("ascii"));
        api.report_loss(req)
    };
    let (mut by_name, mut by_id) = (Vec::new(), Vec::new());
    for run in 0..RUNS {
        // Each device once (a report opens its case); the order alternates, so neither call
        // always follows the other's writes.
        let name = format!("LAP-{run:05}");
        let id = format!("dev-{:05}", 100 + run);
        for by_id_now in [run % 2 == 1, run % 2 == 0] {
            let t = Instant::now();
            if by_id_now {
                std::hint::black_box(report_loss(id.clone()).await.expect("ReportLoss"));
                by_id.push(t.elapsed());
            } else {
                let case = report_loss(name.clone()).await.expect("ReportLoss");
                by_name.push(t.elapsed());
                assert_eq!(case.into_inner().hostname, name.to_lowercase());
            }
        }
    }
    let (mut before, mut after) = (Vec::new(), Vec::new());
    for run in 0..RUNS {
        // Devices without a case, as a loss report meets them.
        let name = format!("LAP-{:05}", 200 + run);
        let t = Instant::now();
        let found: Vec<_> = store
            .devices()
            .expect("devices")
            .into_iter()
            .filter(|r| {
                r.device
                    .as_ref()
                    .is_some_and(|d| d.hostname.eq_ignore_ascii_case(&name))
            })
            .collect();
        let id = found[0]
            .device
            .as_ref()
            .map(|d| d.id.clone())
            .expect("a device");
        let open = store
            .losses()
            .expect("losses")
            .into_iter()
            .rev()
            .find(|c| c.device_id == id && c.open);
        before.push(t.elapsed());
        assert!(open.is_none() && found.len() == 1);

        let t = Instant::now();
        let found = store.devices_named(&name).await.expect("devices_named");
        let open = store.open_loss_of(&id).await.expect("open_loss_of");
        after.push(t.elapsed());
        assert!(open.is_none() && found.len() == 1);
    }
    println!(
        "report_loss: lookups before the indexes: {}",
        summary(before)
    );
    println!(
        "report_loss: lookups through the indexes: {}",
        summary(after)
    );
    println!("report_loss: ReportLoss by hostname: {}", summary(by_name));
    println!("report_loss: ReportLoss by id: {}", summary(by_id));
}
