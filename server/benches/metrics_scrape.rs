//! What one `/metrics` scrape costs the server with 10,000 devices in the store, counting the
//! store's figures at every scrape (as before session 10) and within the window in which a
//! count is served again (`metrics::STATE_MAX_AGE`).
//!
//!     cargo bench -p vakt-server --bench metrics_scrape
//!
//! Fills a store through `server::prepare` (as `serve` opens it) with 10,000 enrolled devices,
//! each with a host report and three findings (two open, one resolved: what the scrape
//! decodes), then times `Metrics::render_at` as the endpoint calls it, without the network:
//!
//! - "count": the clock moved past the window before each scrape, so every scrape counts,
//!   which is what every scrape did before (the same code that counts, run each time);
//! - "cached": scrapes within the window, which reuse the last count;
//! - "8 at once": eight scrapes started together when the window has passed: they share one
//!   count; before, a mutex ran their counts one after the other, timed here as eight
//!   counting scrapes in a row.
//!
//! The median and the minimum of 15 runs each, after one untimed count so sled's cache is warm;
//! old and new in the same process, one after the other. BENCHMARKS.md ("Metrics") has them.

mod common;

use std::time::{Duration, Instant};
use vakt_proto::model;
use vakt_server::metrics::STATE_MAX_AGE;
use vakt_server::policy::{Finding, FindingStatus, RuleKind, Severity};
use vakt_server::store::JsonTree;

const DEVICES: usize = 10_000;
const RUNS: usize = 15;

/// Device `i`'s report: the host section (the scrape reads device records and findings,
/// not sections).
fn report(i: usize) -> model::Report {
    model::Report {
        host: common::host(i),
        ..Default::default()
    }
}

/// Device `i`'s findings as the policy engine stores them (key: device, NUL, finding id).
fn findings(i: usize) -> Vec<(Vec<u8>, Finding)> {
    let device = format!("dev-{i:05}");
    let at = time::OffsetDateTime::from_unix_timestamp(1_790_000_000).expect("a time");
    [
        (
            "software-source",
            RuleKind::SoftwareSource,
            Severity::Warning,
            FindingStatus::Open,
        ),
        (
            "disk-encryption",
            RuleKind::DiskEncryption,
            Severity::Violation,
            FindingStatus::Open,
        ),
        (
            "checkin-overdue",
            RuleKind::CheckinOverdue,
            Severity::Notice,
            FindingStatus::Resolved,
        ),
    ]
    .into_iter()
    .enumerate()
    .map(|(n, (rule, kind, severity, status))| {
        let id = format!("f-{i:05}-{n}");
        let mut key = device.as_bytes().to_vec();
        key.push(0);
        key.extend_from_slice(id.as_bytes());
        let f = Finding {
            id,
            device: device.clone(),
            rule: rule.into(),
            key: format!("{rule}:{i}"),
            kind,
            section: "software".into(),
            severity,
            status,
            evidence: [("package".to_string(), format!("package-{i}"))].into(),
            message_sv: "Programvara från en okänd källa".into(),
            message_en: "Software from an unknown source".into(),
            first_seen: at,
            last_seen: at,
            resolved_at: (status == FindingStatus::Resolved).then_some(at),
            violation_since: (severity == Severity::Violation).then_some(at),
        };
        (key, f)
    })
    .collect()
}

fn summary(times: &mut [Duration]) -> String {
    times.sort();
    format!(
        "median {:.3} ms, min {:.3} ms",
        times[times.len() / 2].as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3
    )
}

#[tokio::main]
async fn main() {
    let (_dir, state, _) = common::prepared().await;
    let fill = Instant::now();
    common::fill(&state, DEVICES, report).await;
    for start in (0..DEVICES).step_by(1000) {
        let puts: Vec<_> = (start..(start + 1000).min(DEVICES))
            .flat_map(findings)
            .collect();
        state
            .store
            .json_apply(JsonTree::Findings, &puts, &[])
            .await
            .expect("store the findings");
    }
    println!(
        "metrics_scrape: {DEVICES} devices, {} findings stored in {:.1} s",
        3 * DEVICES,
        fill.elapsed().as_secs_f64()
    );

    let metrics = state.metrics.clone();
    let t0 = Instant::now();
    let first = metrics.render_at(&state, t0).await.expect("a scrape");
    assert!(
        first.contains(&format!("vakt_devices{{state=\"active\"}} {DEVICES}")),
        "{first}"
    );
    let mut clock = t0;

    let mut count = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        clock += STATE_MAX_AGE;
        let t = Instant::now();
        std::hint::black_box(metrics.render_at(&state, clock).await.expect("a scrape"));
        count.push(t.elapsed());
    }

    let mut cached = Vec::with_capacity(RUNS);
    for n in 0..RUNS {
        let within = clock + Duration::from_millis(n as u64);
        let t = Instant::now();
        std::hint::black_box(metrics.render_at(&state, within).await.expect("a scrape"));
        cached.push(t.elapsed());
    }

    // Before, eight scrapes at once took turns under a mutex, each counting.
    let mut in_turn = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let t = Instant::now();
        for _ in 0..8 {
            clock += STATE_MAX_AGE;
            std::hint::black_box(metrics.render_at(&state, clock).await.expect("a scrape"));
        }
        in_turn.push(t.elapsed());
    }

    let mut together = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        clock += STATE_MAX_AGE;
        let t = Instant::now();
        let scrapes: Vec<_> = (0..8)
            .map(|_| {
                let (metrics, state) = (metrics.clone(), state.clone());
                tokio::spawn(async move { metrics.render_at(&state, clock).await.map(|_| ()) })
            })
            .collect();
        for s in scrapes {
            s.await.expect("scrape task").expect("a scrape");
        }
        together.push(t.elapsed());
    }

    println!(
        "metrics_scrape: count at every scrape (before): {}",
        summary(&mut count)
    );
    println!(
        "metrics_scrape: scrape within {} s of a count (now): {}",
        STATE_MAX_AGE.as_secs(),
        summary(&mut cached)
    );
    println!(
        "metrics_scrape: 8 scrapes at once (before: each counting, in turn): {}",
        summary(&mut in_turn)
    );
    println!(
        "metrics_scrape: 8 scrapes at once past the window (now, one count shared): {}",
        summary(&mut together)
    );
}
