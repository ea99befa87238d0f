//! What a Connect and the expiry timer cost as the command history grows.
//!
//! `cargo bench -p vakt-server --bench command_backlog` fills a store with a history of
//! finished commands (locks, unlocks, wipes of the past, spread over the fleet) plus one open
//! command for every hundredth device, then prints, side by side for each history size:
//!
//! - **connect, scan**: finding one device's open commands the way every Connect did before
//!   the index (decode every command, keep the device's open ones);
//! - **connect, index**: the same through `Store::open_commands_of`, as `commands::deliver`
//!   does now;
//! - **expiry, scan / index**: the once-a-minute expiry pass's read, all commands decoded
//!   against the open ones only (`Store::open_commands`);
//! - **open**: `Store::open` on that data, which now rebuilds the index from the tree.
//!
//! Each figure is the median of several runs after one untimed run, so sled's cache is warm
//! for both paths. A restart makes every agent reconnect at once, so a Connect's cost is
//! paid once per held agent within a minute: the "10,000 Connects" column is that, by the
//! scan and by the index.

use std::path::Path;
use std::time::{Duration, Instant};
use vakt_proto::pb;
use vakt_server::store::{OpenCommands, Store};

/// Devices the history is spread over.
const DEVICES: usize = 10_000;

fn command(i: usize, device: usize, state: pb::CommandState) -> pb::CommandInfo {
    pb::CommandInfo {
        // Zero-padded, so ids sort by age as the server's time-ordered ids do.
        id: format!("cmd-{i:09}"),
        device_id: format!("dev-{device:05}"),
        kind: pb::CommandKind::Lock as i32,
        state: state as i32,
        requested_by: "it-admin".into(),
        reason: "reported lost at the station".into(),
        detail: "locked: 3 sessions ended, 2 accounts expired".into(),
        created_ms: 1_790_000_000_000 + i as i64,
        expires_ms: 1_790_000_000_000 + i as i64 + 86_400_000,
        ..Default::default()
    }
}

/// Writes `history` finished commands and one open command for every hundredth device, in
/// transactions of a thousand (one flush each).
async fn fill(store: &Store, history: usize) {
    let open = (0..DEVICES)
        .step_by(100)
        .map(|d| (d, pb::CommandState::Pending));
    let finished = (0..history).map(|i| (i % DEVICES, pb::CommandState::Succeeded));
    let all: Vec<_> = finished
        .chain(open)
        .enumerate()
        .map(|(i, (d, st))| command(i, d, st))
        .collect();
    for (n, chunk) in all.chunks(1_000).enumerate() {
        let case = pb::LossCase {
            id: format!("case-{n}"),
            ..Default::default()
        };
        store
            .save_loss(&case, chunk, None)
            .await
            .expect("write the history");
    }
}

/// Median and minimum of `runs` timed runs of `f`, after one untimed run.
fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, Duration) {
    std::hint::black_box(f());
    let mut d: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(f());
            t.elapsed()
        })
        .collect();
    d.sort();
    (d[d.len() / 2], d[0])
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

/// One device's open commands the way a Connect found them before the index.
fn scan_device(store: &Store, device: &str) -> Vec<pb::CommandInfo> {
    store
        .commands()
        .expect("read commands")
        .into_iter()
        .filter(|c| c.device_id == device && OpenCommands::is_open(c.state))
        .collect()
}

fn reopen(dir: &Path) -> Store {
    // sled's own flush threads may hold the directory a moment after the last handle drops.
    for _ in 0..50 {
        match Store::open(dir) {
            Ok(s) => return s,
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    Store::open(dir).expect("reopen the store")
}

#[tokio::main]
async fn main() {
    println!(
        "{:>9} | {:>14} {:>14} {:>22} | {:>14} {:>14} | {:>10}",
        "history",
        "connect, scan",
        "connect, index",
        "10,000 Connects, s/i",
        "expiry, scan",
        "expiry, index",
        "open"
    );
    for history in [0, 1_000, 10_000, 100_000] {
        let dir = tempfile::tempdir().expect("temporary directory");
        {
            let store = Store::open(dir.path()).expect("open the store");
            fill(&store, history).await;
            store.flush().await.expect("flush");
        }
        let (open, _) = time(3, || drop(reopen(dir.path())));
        let store = reopen(dir.path());
        let device = "dev-00100";
        let runs = if history >= 100_000 { 5 } else { 21 };
        let (scan, _) = time(runs, || scan_device(&store, device));
        let (index, _) = time(runs, || store.open_commands_of(device).expect("index"));
        assert_eq!(
            scan_device(&store, device).len(),
            store.open_commands_of(device).expect("index").len(),
            "both paths find the same commands"
        );
        let (expiry_scan, _) = time(runs, || store.commands().expect("read commands"));
        let (expiry_index, _) = time(runs, || store.open_commands().expect("index"));
        println!(
            "{:>9} | {:>14} {:>14} {:>22} | {:>14} {:>14} | {:>10}",
            history,
            ms(scan),
            ms(index),
            format!(
                "{:.1} s / {:.2} s",
                scan.as_secs_f64() * 10_000.0,
                index.as_secs_f64() * 10_000.0
            ),
            ms(expiry_scan),
            ms(expiry_index),
            ms(open)
        );
    }
}
