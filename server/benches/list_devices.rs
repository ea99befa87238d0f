//! What `vakt devices` (`AdminService.ListDevices`) costs over a fleet of 10,000 laptops, now
//! that every device view carries its wipe readiness (issue 19), which is judged from the
//! device's stored storage section.
//!
//!     cargo bench -p vakt-server --bench list_devices
//!
//! Fills a store through `server::prepare` (as `serve` opens it) with 10,000 enrolled devices,
//! each with a report of host, 300 packages and a storage section (root on LUKS2, /home
//! plain, swap), then times the whole gRPC method as the admin API runs it (authorization,
//! reading and decoding every device, the views, sorting), without the network. The median
//! and the minimum of 15 runs after one untimed run, so sled's cache is warm.
//!
//! BENCHMARKS.md ("Listing devices") puts this against the same bench with the readiness
//! left out of the view.

mod common;

use std::time::{Duration, Instant};
use tonic::Request;
use vakt_proto::model;
use vakt_proto::pb;
use vakt_proto::pb::admin_service_server::AdminService;
use vakt_server::api::admin::AdminApi;

const DEVICES: usize = 10_000;
const RUNS: usize = 15;

fn report(i: usize) -> model::Report {
    let software = (0..300)
        .map(|p| model::Package {
            name: format!("package-{p}"),
            version: format!("1.{p}.{i}-1"),
            format: model::PackageFormat::Deb,
            source: model::SoftwareSource::OsVendor,
            origin: "Debian".into(),
            current: true,
            arch: "amd64".into(),
            user: String::new(),
            path: String::new(),
        })
        .collect();
    let vol = |mount: &str, device: &str, scheme: Option<model::CryptScheme>| model::Volume {
        mount: mount.into(),
        device: device.into(),
        encrypted: scheme.is_some(),
        scheme,
        ..Default::default()
    };
    model::Report {
        host: common::host(i),
        software,
        storage: model::Storage {
            volumes: vec![
                vol("/", "/dev/nvme0n1p3", Some(model::CryptScheme::Luks2)),
                vol("/boot", "/dev/nvme0n1p1", None),
                vol("/home", "/dev/sdb1", None),
            ],
            swap: vec![vol("", "/dev/nvme0n1p2", Some(model::CryptScheme::Plain))],
            wipe: Some(model::WipePlan {
                strategy: model::WipeStrategy::LuksErase,
                devices: Vec::new(),
            }),
            ..Default::default()
        },
        ..Default::default()
    }
}

#[tokio::main]
async fn main() {
    let (_dir, state, bearer) = common::prepared().await;
    let fill = Instant::now();
    common::fill(&state, DEVICES, report).await;
    println!(
        "list_devices: {DEVICES} devices stored in {:.1} s",
        fill.elapsed().as_secs_f64()
    );

    let api = AdminApi::new(state.clone());
    let list = || {
        let mut req = Request::new(pb::ListDevicesRequest::default());
        req.metadata_mut()
            .insert("authorization", bearer.parse().expect("ascii"));
        api.list_devices(req)
    };
    let first = list().await.expect("ListDevices").into_inner();
    assert_eq!(first.devices.len(), DEVICES);
    let partial = first
        .devices
        .iter()
        .filter(|d| {
            d.wipe_readiness
                .as_ref()
                .is_some_and(|w| w.state == "partial")
        })
        .count();
    let mut times: Vec<Duration> = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let t = Instant::now();
        std::hint::black_box(list().await.expect("ListDevices"));
        times.push(t.elapsed());
    }
    times.sort();
    println!(
        "list_devices: {DEVICES} devices ({partial} with readiness partial): median {:.1} ms, min {:.1} ms over {RUNS} runs",
        times[RUNS / 2].as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3,
    );
}
