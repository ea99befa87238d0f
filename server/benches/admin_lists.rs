//! What the admin lists the console and `vakt` call all the time cost over a fleet of 10,000
//! laptops with 100,000 commands in their history, before and after session 11's changes,
//! side by side in one run on the same data.
//!
//!     cargo bench -p vakt-server --bench admin_lists
//!
//! Fills a store through `server::prepare` (as `serve` opens it) with 10,000 enrolled devices,
//! each with a report of host, 300 packages and a storage section (root on LUKS2, /home
//! plain, swap: readiness `partial`), and 100,000 finished commands spread over them plus one
//! loss case with its lock, wipe and unlock. Then, each the median and the minimum of 15 runs
//! after one untimed run (so sled's cache is warm for every path):
//!
//! - **ListDevices** as the admin API runs it (authorization, every device, the views,
//!   sorting), without the network: "before", every record stripped of the readiness it now
//!   keeps, which makes the views read and judge every storage section as they always did;
//!   "after", the records as reports leave them now. And where the "before" time went: the
//!   device records alone, the storage sections read and decoded (`Store::section_many`), the
//!   judgement of sections already decoded;
//! - **opening the store** (`Store::open`) with every record unjudged (it judges them, as an
//!   old data directory's first start does) and again with all judged;
//! - **ListCommands for one device**: before, every command decoded and filtered (the old
//!   `list_commands`); after, the API call through the by-device index;
//! - **the incident report** of the loss case: before, every command decoded and filtered by
//!   case; after, the API call (the case's device's commands only).

mod common;

use std::time::{Duration, Instant};
use tonic::Request;
use vakt_proto::model;
use vakt_proto::pb;
use vakt_proto::pb::admin_service_server::AdminService;
use vakt_server::api::admin::AdminApi;
use vakt_server::store::Store;

const DEVICES: usize = 10_000;
const COMMANDS: usize = 100_000;
const RUNS: usize = 15;
/// The device whose commands and loss case are listed.
const LISTED: usize = 4_242;

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

fn command(id: String, device: usize, kind: pb::CommandKind, case: &str) -> pb::CommandInfo {
    pb::CommandInfo {
        id,
        device_id: format!("dev-{device:05}"),
        kind: kind as i32,
        state: pb::CommandState::Succeeded as i32,
        requested_by: "it-admin".into(),
        reason: "reported lost at the station".into(),
        detail: "locked: 3 sessions ended, 2 accounts expired".into(),
        loss_case_id: case.into(),
        created_ms: 1_790_000_000_000,
        ..Default::default()
    }
}

/// The history (ten finished commands a device, time-ordered ids), written a thousand a
/// transaction, then a loss case of device `LISTED` with its lock, wipe and unlock.
async fn fill_commands(store: &Store) -> String {
    let all: Vec<_> = (0..COMMANDS)
        .map(|i| {
            command(
                format!("cmd-{i:09}"),
                i % DEVICES,
                pb::CommandKind::Lock,
                "",
            )
        })
        .collect();
    for chunk in all.chunks(1_000) {
        store
            .save_loss(&pb::LossCase::default(), chunk, None)
            .await
            .expect("write the history");
    }
    let case = pb::LossCase {
        id: "case-listed".into(),
        device_id: format!("dev-{LISTED:05}"),
        hostname: format!("lap-{LISTED:05}"),
        reported_by: "Anna Andersson".into(),
        ..Default::default()
    };
    let kinds = [
        pb::CommandKind::Lock,
        pb::CommandKind::Wipe,
        pb::CommandKind::Unlock,
    ];
    let case_commands: Vec<_> = kinds
        .iter()
        .enumerate()
        .map(|(n, k)| command(format!("cmd-1{n:08}"), LISTED, *k, &case.id))
        .collect();
    store
        .save_loss(&case, &case_commands, None)
        .await
        .expect("write the loss case");
    case.id
}

/// Median and minimum of `RUNS` timed runs of `f`, after one untimed run.
fn time<T>(mut f: impl FnMut() -> T) -> (Duration, Duration) {
    std::hint::black_box(f());
    let mut d: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(f());
            t.elapsed()
        })
        .collect();
    d.sort();
    (d[RUNS / 2], d[0])
}

/// [`time`] for an admin call, which must succeed.
async fn time_call<T, F>(mut f: impl FnMut() -> F) -> (Duration, Duration)
where
    F: std::future::Future<Output = Result<T, tonic::Status>>,
{
    f().await.expect("the call succeeds");
    let mut d = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let t = Instant::now();
        std::hint::black_box(f().await.expect("the call succeeds"));
        d.push(t.elapsed());
    }
    d.sort();
    (d[RUNS / 2], d[0])
}

fn row(what: &str, (median, min): (Duration, Duration)) {
    println!(
        "| {what} | {:.2} ms | {:.2} ms |",
        median.as_secs_f64() * 1e3,
        min.as_secs_f64() * 1e3
    );
}

/// `msg` as a call with the admin token's `authorization` header (`bearer`).
fn authorized<T>(bearer: &str, msg: T) -> Request<T> {
    let mut req = Request::new(msg);
    req.metadata_mut()
        .insert("authorization", bearer.parse().expect("ascii"));
    req
}

/// Every record with `f` applied (no flush: what the lists read is the same either way).
fn rewrite_all(store: &Store, f: impl Fn(&mut pb::DeviceRecord)) {
    for i in 0..DEVICES {
        store
            .update_device(&format!("dev-{i:05}"), &f)
            .expect("rewrite a device record");
    }
}

/// Opens the store in `dir` once the previous holder's handles are gone, timed.
async fn open_timed(dir: &std::path::Path) -> Duration {
    for _ in 0..100 {
        let t = Instant::now();
        match Store::open(dir) {
            Ok(s) => {
                let took = t.elapsed();
                drop(s);
                return took;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    panic!("the store stayed locked");
}

#[tokio::main]
async fn main() {
    let (dir, state, bearer) = common::prepared().await;
    let fill = Instant::now();
    common::fill(&state, DEVICES, report).await;
    let case = fill_commands(&state.store).await;
    println!(
        "admin_lists: {DEVICES} devices and {} commands stored in {:.1} s",
        COMMANDS + 3,
        fill.elapsed().as_secs_f64()
    );
    let store = state.store.clone();
    let api = AdminApi::new(state.clone());
    let list = || api.list_devices(authorized(&bearer, pb::ListDevicesRequest::default()));
    let listed = format!("dev-{LISTED:05}");
    let commands_of = || {
        api.list_commands(authorized(
            &bearer,
            pb::ListCommandsRequest {
                device: listed.clone(),
            },
        ))
    };
    let incident = || {
        api.get_incident_report(authorized(
            &bearer,
            pb::GetLossRequest {
                device: case.clone(),
            },
        ))
    };

    // The answers are the same before and after.
    let after_devices = list().await.expect("ListDevices").into_inner().devices;
    let partial = after_devices
        .iter()
        .filter(|d| {
            d.wipe_readiness
                .as_ref()
                .is_some_and(|w| w.state == "partial")
        })
        .count();
    assert_eq!(partial, DEVICES);
    let old_filter = |device: &str| {
        store
            .commands()
            .expect("commands")
            .into_iter()
            .filter(|c| c.device_id == device)
            .collect::<Vec<_>>()
    };
    let after_commands = commands_of().await.expect("ListCommands").into_inner();
    assert_eq!(after_commands.commands, old_filter(&listed));
    assert_eq!(after_commands.commands.len(), COMMANDS / DEVICES + 3);

    println!("| {DEVICES} devices, {COMMANDS} commands | median | min |");
    println!("| --- | ---: | ---: |");
    let list_after = time_call(list).await;
    let commands_before = time(|| old_filter(&listed));
    let commands_after = time_call(commands_of).await;
    let incident_before = time(|| {
        store
            .commands()
            .expect("commands")
            .into_iter()
            .filter(|c| c.loss_case_id == case)
            .count()
    });
    let incident_after = time_call(incident).await;

    // Where a list without kept readiness spends its time.
    let records = time(|| store.devices().expect("devices"));
    let ids: Vec<String> = (0..DEVICES).map(|i| format!("dev-{i:05}")).collect();
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let sections_read = time(|| {
        id_refs
            .chunks(1000)
            .map(|c| {
                store
                    .section_many(c, pb::SectionKind::Storage)
                    .expect("read")
            })
            .collect::<Vec<_>>()
    });
    let sections: Vec<pb::Section> = store
        .section_many(&id_refs, pb::SectionKind::Storage)
        .expect("read")
        .into_iter()
        .map(|s| s.expect("decodes").expect("stored"))
        .collect();
    let judged = time(|| {
        sections
            .iter()
            .map(|s| vakt_server::readiness::from_section(Some(s)).to_pb(1))
            .collect::<Vec<_>>()
    });

    rewrite_all(&store, |r| {
        r.readiness = None;
        r.readiness_version = 0;
    });
    let before_devices = list().await.expect("ListDevices").into_inner().devices;
    assert_eq!(before_devices, after_devices, "the same list either way");
    let list_before = time_call(list).await;

    row(
        "ListDevices, before (every storage section read and judged)",
        list_before,
    );
    row(
        "ListDevices, after (the readiness kept in the device record)",
        list_after,
    );
    row("- the device records alone (`Store::devices`)", records);
    row(
        "- the storage sections read and decoded (`section_many`)",
        sections_read,
    );
    row(
        "- the judgement of decoded sections (`from_section`, `to_pb`)",
        judged,
    );
    row(
        "ListCommands --device, before (every command decoded)",
        commands_before,
    );
    row(
        "ListCommands --device, after (the by-device index)",
        commands_after,
    );
    row(
        "incident report, before: its commands (every command decoded)",
        incident_before,
    );
    row("incident report, after: the whole call", incident_after);

    // Opening: an old data directory's first start judges every device, later ones none.
    drop((api, state, store));
    let data = dir.path();
    let first = open_timed(data).await;
    let again = open_timed(data).await;
    println!(
        "| Store::open, every device unjudged (it judges them) | {:.1} ms | |",
        first.as_secs_f64() * 1e3
    );
    println!(
        "| Store::open again, all judged | {:.1} ms | |",
        again.as_secs_f64() * 1e3
    );
}
