//! `vakt-loadgen`: simulates a fleet of agents against a running `vakt-server` and prints what
//! the server sustained, beside a bare tonic baseline measured in the same run.
//!
//! Every simulated agent enrolls for real with a key of its own (tokens made through the
//! admin API with the token from `--token-file`), keeps its own mutual-TLS connection and holds
//! a Connect stream. The phases, in order: enroll all; hold all streams (server memory before
//! and after, with `--server-pid-file`); a first report each; full reports (2,000 packages) from
//! a sample; no-change check-ins from all, with lock latency over half a sample meanwhile; the
//! bare baseline; lock latency over the other half with the fleet only holding its streams
//! (loss reported → signed lock verified by the agent → result stored and acknowledged);
//! optionally a server restart under check-in load (`--restart-cmd`) or, with replicas, the
//! kill -9 of the first one under check-in load (`--kill-cmd`: the fail-over phase); holding
//! for `--hold-after`; and last the check that nothing acknowledged is missing from the store.
//!
//! With several `--server`s (replicas on one database) agent `i` starts with server `i % N`
//! and fails over as the real agent does (`vakt_tests::load::failover`), and `--lock-via
//! other` queues each lock through a replica other than the one holding the laptop's stream
//! (which needs command routing between replicas to arrive).
//!
//! Needs about two open files per agent: raise `ulimit -n` first (see BENCHMARKS.md).

// The result is one `serde_json::json!` object with over a hundred keys and values.
#![recursion_limit = "256"]

use clap::Parser;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use vakt_proto::pb;
use vakt_proto::pb::agent_service_client::AgentServiceClient;
use vakt_tests::load::{LoadError, admin, baseline::Baseline, sim, stats};

#[derive(Parser, Debug)]
#[command(name = "vakt-loadgen", about = "Fleet simulator for vakt-server")]
struct Cli {
    /// The server, as agents reach it; several (comma-separated or the flag repeated) are
    /// replicas on one database, and the agents are spread over them.
    #[arg(long, default_value = "https://127.0.0.1:7443", value_delimiter = ',')]
    server: Vec<String>,
    /// Which replica queues a lock: `same` (the one holding the laptop's stream) or `other`
    /// (the next one in `--server`'s list; needs at least two).
    #[arg(long, value_enum, default_value_t = LockVia::Same)]
    lock_via: LockVia,
    /// The server's CA certificate (DATA/ca.pem).
    #[arg(long)]
    ca: PathBuf,
    /// A file holding an admin token (DATA/admin.token).
    #[arg(long)]
    token_file: PathBuf,
    /// Simulated agents.
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// Seconds each measured phase (full reports, check-ins, baseline) runs.
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Seconds to keep every stream held after the measurements.
    #[arg(long, default_value_t = 0)]
    hold_after: u64,
    /// Print the figures as one JSON object.
    #[arg(long)]
    json: bool,
    /// A shell command that restarts the server (kill -9 and start on the same data and port);
    /// run under check-in load, and `reconnect_s` measures until every stream is back.
    #[arg(long)]
    restart_cmd: Option<String>,
    /// With several `--server`s: a shell command that kill -9s the first one (and does not
    /// start it again), run under check-in load; the fail-over phase measures until every
    /// agent that was on it holds its stream on another replica and has a report
    /// acknowledged there.
    #[arg(long)]
    kill_cmd: Option<String>,
    /// During the restart or the kill each agent checks in once every this many seconds (0: as fast as
    /// the server answers). Flat out, the simulator's own TLS handshakes starve behind its ten
    /// thousand check-in loops on the same two cores, which measures the simulator.
    #[arg(long, default_value_t = 5.0)]
    restart_checkin_every: f64,
    /// A file holding the server's pid (read again after a restart), for its memory.
    #[arg(long)]
    server_pid_file: Option<PathBuf>,
    /// Enrollments and dials in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Agents that send full 2,000-package reports in the full-report phase.
    #[arg(long, default_value_t = 100)]
    full_agents: usize,
    /// Connected agents whose loss is reported, one after another, for lock latency: half
    /// while the fleet checks in, half while it only holds its streams.
    #[arg(long, default_value_t = 200)]
    lock_sample: usize,
    /// Loopback source addresses to spread connections over (127.0.0.1 to 127.0.0.N).
    #[arg(long, default_value_t = 8)]
    source_addrs: usize,
    /// Seconds an enrollment refused by the rate limit keeps trying.
    #[arg(long, default_value_t = 600)]
    enroll_patience: u64,
}

/// Where `--lock-via` queues a lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LockVia {
    Same,
    Other,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // tokio's default: one worker thread per core, as the server has.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build();
    // The probe: the admin clients and the laptops whose locks are timed, on a thread of their
    // own. An admin's workstation and a lost laptop are not queued behind ten thousand other
    // laptops; in one runtime with the simulated fleet they would be, and under saturating
    // check-ins the lock figure would time this process's own run queue (seconds, measured
    // in session 9), not the servers'.
    let probe = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("loadgen-probe")
        .enable_all()
        .build();
    let (rt, probe) = match (rt, probe) {
        (Ok(rt), Ok(probe)) => (rt, probe),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("vakt-loadgen: runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli, probe.handle().clone())) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vakt-loadgen: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn progress(msg: impl std::fmt::Display) {
    eprintln!("[loadgen] {msg}");
}

fn read(path: &PathBuf) -> Result<String, LoadError> {
    std::fs::read_to_string(path).map_err(|e| LoadError::Other(format!("{}: {e}", path.display())))
}

fn server_rss(pid_file: &Option<PathBuf>) -> Option<u64> {
    let pid: u32 = std::fs::read_to_string(pid_file.as_ref()?)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    stats::rss_kib(pid)
}

fn rate(n: u64, d: Duration) -> f64 {
    let s = d.as_secs_f64();
    if s > 0.0 { n as f64 / s } else { 0.0 }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Runs `each(agent)` for every agent with at most `limit` in flight; the results in order.
async fn for_all<T, F, Fut>(agents: &[Arc<sim::SimAgent>], limit: usize, each: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(Arc<sim::SimAgent>) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let sem = Arc::new(Semaphore::new(limit.max(1)));
    let mut set = tokio::task::JoinSet::new();
    for (i, a) in agents.iter().enumerate() {
        let sem = sem.clone();
        let fut = each(a.clone());
        set.spawn(async move {
            let _permit = sem.acquire_owned().await;
            (i, fut.await)
        });
    }
    let mut out: Vec<Option<T>> = (0..agents.len()).map(|_| None).collect();
    while let Some(r) = set.join_next().await {
        if let Ok((i, v)) = r
            && let Some(slot) = out.get_mut(i)
        {
            *slot = Some(v);
        }
    }
    out.into_iter().flatten().collect()
}

/// Every agent in `agents` reports in a closed loop (the next report as soon as the last was
/// acknowledged) until `until` or `stop`; returns clean acknowledgements and failures.
async fn report_loop(
    fleet: &Arc<sim::Fleet>,
    agents: &[Arc<sim::SimAgent>],
    full: bool,
    until: Instant,
    stop: Arc<AtomicBool>,
    pace: Option<Duration>,
) -> Looped {
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    // The slowest acknowledged report and how many took over 250 ms: tells a server that
    // stalls for everyone from a slow lock path.
    let max_us = Arc::new(AtomicU64::new(0));
    let slow = Arc::new(AtomicU64::new(0));
    let mut set = tokio::task::JoinSet::new();
    for (i, a) in agents.iter().enumerate() {
        let (a, ok, failed, stop) = (a.clone(), ok.clone(), failed.clone(), stop.clone());
        let (max_us, slow, fleet) = (max_us.clone(), slow.clone(), fleet.clone());
        // Spread the fleet over the whole interval instead of starting it in one burst (a
        // small fleet too: a kill then always finds reports in flight).
        let offset = i as f64 / agents.len() as f64;
        set.spawn(async move {
            if let Some(p) = pace {
                nap(p.mul_f64(offset), &stop).await;
            }
            let mut just_moved = false;
            while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let after_move = std::mem::take(&mut just_moved);
                match a.report_on(full).await {
                    Ok(ack) if ack.clean => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        let us = u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX);
                        max_us.fetch_max(us, Ordering::Relaxed);
                        if us > 250_000 {
                            slow.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    Err((on, e)) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        if std::env::var_os("VAKT_LOADGEN_DEBUG").is_some() {
                            eprintln!("agent {}: {e}", a.index);
                        }
                        // With replicas the agent moves to another and sends the report
                        // again there at once, as the real agent does. The real agent
                        // collects again first; the simulator has nothing to collect, so a
                        // report that fails straight after a move waits as below, rather
                        // than hopping between servers as fast as it can dial.
                        if a.fail_over_after(&fleet, on, &e).await && !after_move {
                            just_moved = true;
                            continue;
                        }
                        // The server may be restarting: the agent retries, not spins.
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
                if let Some(p) = pace {
                    nap(p.saturating_sub(t.elapsed()), &stop).await;
                }
            }
        });
    }
    while set.join_next().await.is_some() {}
    Looped {
        ok: ok.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        max_ms: max_us.load(Ordering::Relaxed) as f64 / 1000.0,
        over_250ms: slow.load(Ordering::Relaxed),
    }
}

/// Sleeps `d`, or less when `stop` is set meanwhile (looked at every 100 ms).
async fn nap(d: Duration, stop: &AtomicBool) {
    let until = Instant::now() + d;
    while !stop.load(Ordering::Relaxed) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        tokio::time::sleep(left.min(Duration::from_millis(100))).await;
    }
}

/// What a closed loop of reports achieved.
#[derive(Debug, Clone, Copy, Default)]
struct Looped {
    ok: u64,
    failed: u64,
    /// The slowest acknowledged report.
    max_ms: f64,
    /// Acknowledged reports that took over 250 ms.
    over_250ms: u64,
}

/// The bare baseline: as many connections as agents (as the open-file limit allows), each
/// sending the same no-change report a check-in sends, in a closed loop for `d`.
async fn baseline(conns: usize, d: Duration, sources: usize) -> Result<(f64, u64), LoadError> {
    let b = Baseline::start(2)?;
    let sample = vakt_proto::convert::report_to_sections(&vakt_tests::load::inventory::report(
        "baseline", 0, 20, 0,
    ));
    let (req, _) = vakt_agent::link::build_request(&Default::default(), &sample);
    let req = pb::ReportRequest {
        sections: Vec::new(),
        ..req
    };
    let url = b.url.clone();
    let dial = |i: usize| {
        let (url, ca, cert, key) = (
            url.clone(),
            b.ca_pem.clone(),
            b.cert_pem.clone(),
            b.key_pem.clone(),
        );
        async move {
            vakt_agent::link::endpoint(&url, &ca, Some((&cert, &key)))?
                .local_address(vakt_tests::load::source_addr(&url, i, sources))
                .connect()
                .await
                .map_err(|e| LoadError::Other(format!("baseline dial: {e}")))
        }
    };
    let sem = Arc::new(Semaphore::new(64));
    let mut set = tokio::task::JoinSet::new();
    for i in 0..conns {
        let (sem, f) = (sem.clone(), dial(i));
        set.spawn(async move {
            let _p = sem.acquire_owned().await;
            f.await
        });
    }
    let mut channels = Vec::with_capacity(conns);
    while let Some(r) = set.join_next().await {
        if let Ok(Ok(c)) = r {
            channels.push(c);
        }
    }
    let ok = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + d;
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for c in &channels {
        let (mut client, req, ok) = (AgentServiceClient::new(c.clone()), req.clone(), ok.clone());
        set.spawn(async move {
            while Instant::now() < until {
                if client.report(req.clone()).await.is_ok() {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    while set.join_next().await.is_some() {}
    let n = ok.load(Ordering::Relaxed);
    Ok((rate(n, start.elapsed()), channels.len() as u64))
}

/// Reports the loss of each agent in `sample`, one after another, and measures each until the
/// agent's lock result is acknowledged (stored). Returns the latencies (ms) and the failures.
async fn measure_locks(
    mut admins: Vec<admin::Admin>,
    via: LockVia,
    fleet: Arc<sim::Fleet>,
    sample: Vec<Arc<sim::SimAgent>>,
) -> (Vec<f64>, u64) {
    let mut ms = Vec::new();
    let mut failed = 0u64;
    let n = admins.len();
    for a in sample {
        // Where the laptop is now (it may have failed over).
        let holder = a.replica();
        let queue_on = match via {
            LockVia::Same => holder,
            LockVia::Other => (holder + 1) % n.max(1),
        };
        let Some(admin) = admins.get_mut(queue_on) else {
            failed += 1;
            continue;
        };
        match lock_one(admin, &fleet, &a, Duration::from_secs(30)).await {
            Some((total, answered)) => {
                if total > Duration::from_millis(250) {
                    // Where a slow one spent its time: the admin call, or delivery and result.
                    progress(format_args!(
                        "slow lock {}: {:.0} ms, of which the ReportLoss call {:.0} ms",
                        a.device_id,
                        total.as_secs_f64() * 1000.0,
                        answered.as_secs_f64() * 1000.0
                    ));
                }
                ms.push(total.as_secs_f64() * 1000.0);
            }
            None => failed += 1,
        }
    }
    (ms, failed)
}

/// Reports the loss of `a` through `admin` and waits at most `patience` for the agent's lock
/// result to be acknowledged (stored). The time from the call to that, and the call's own.
async fn lock_one(
    admin: &mut admin::Admin,
    fleet: &sim::Fleet,
    a: &sim::SimAgent,
    patience: Duration,
) -> Option<(Duration, Duration)> {
    let waiter = fleet.expect_lock(&a.device_id);
    let t0 = Instant::now();
    let opened = admin
        .report_loss(pb::ReportLossRequest {
            device: a.device_id.clone(),
            reported_by: "loadgen@example.org".into(),
            police_report: String::new(),
            notes: "vakt-loadgen lock latency".into(),
        })
        .await;
    if let Err(s) = opened {
        progress(format_args!("report loss {}: {s}", a.device_id));
        return None;
    }
    let answered = t0.elapsed();
    match tokio::time::timeout(patience, waiter).await {
        Ok(Ok(at)) => Some((at.duration_since(t0), answered)),
        _ => None,
    }
}

/// Every agent checking in once every `every` seconds (0: flat out) until the flag returned
/// is set: the load under a restart or a kill.
fn paced_load(
    fleet: &Arc<sim::Fleet>,
    agents: &[Arc<sim::SimAgent>],
    every: f64,
) -> (Arc<AtomicBool>, tokio::task::JoinHandle<Looped>) {
    let load_until = Instant::now() + Duration::from_secs(600);
    let stop_load = Arc::new(AtomicBool::new(false));
    let (fleet, agents, stop) = (fleet.clone(), agents.to_vec(), stop_load.clone());
    let pace = (every > 0.0).then(|| Duration::from_secs_f64(every));
    let load =
        tokio::spawn(
            async move { report_loop(&fleet, &agents, false, load_until, stop, pace).await },
        );
    (stop_load, load)
}

/// Runs `cmd` with `sh -c`; an error unless it succeeds.
async fn shell(cmd: &str, what: &str) -> Result<(), LoadError> {
    let status = tokio::process::Command::new("sh")
        .args(["-c", cmd])
        .status()
        .await
        .map_err(|e| LoadError::Other(format!("{what}: {e}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(LoadError::Other(format!("{what} failed: {status}")))
    }
}

/// Every agent sends one report (once more if it failed and the agent moved to another
/// server), so the final check compares against a settled sequence.
async fn settle(fleet: &Arc<sim::Fleet>, agents: &[Arc<sim::SimAgent>], limit: usize) {
    for_all(agents, limit, |a| {
        let fleet = fleet.clone();
        async move {
            if let Err((on, e)) = a.report_on(false).await
                && a.fail_over_after(&fleet, on, &e).await
            {
                let _ = a.report(false).await;
            }
        }
    })
    .await;
}

/// Percentiles of a fail-over figure (ms): p50, p99 and the largest, as JSON.
fn spread(ms: &[f64]) -> serde_json::Value {
    serde_json::json!({
        "p50": stats::percentile(ms, 50.0).map(round1),
        "p99": stats::percentile(ms, 99.0).map(round1),
        "max": stats::percentile(ms, 100.0).map(round1),
    })
}

/// What the fail-over phase saw of the agents that were on the killed replica: per agent, ms
/// from the kill to its stream open on another replica, and to its first report
/// acknowledged there.
#[derive(Debug, Default)]
struct Moved {
    stream_ms: Vec<f64>,
    report_ms: Vec<f64>,
}

/// Watches `watched` (the killed replica's agents) from `since` (ms since the fleet's base,
/// taken just before the kill) until each holds its stream on another replica and has a
/// report acknowledged there, or `deadline`. Prints the curve every 5 s.
async fn watch_moves(watched: &[Arc<sim::SimAgent>], since: u64, deadline: Instant) -> Moved {
    let t = Instant::now();
    let mut stream: Vec<Option<u64>> = vec![None; watched.len()];
    let mut report: Vec<Option<u64>> = vec![None; watched.len()];
    let mut next_curve_point = Duration::from_secs(5);
    loop {
        for (i, a) in watched.iter().enumerate() {
            // Read the time before the server: a Welcome stores the server first.
            let w = a.welcomed_ms.load(Ordering::Acquire);
            if stream[i].is_none() && w > since && a.welcomed_on.load(Ordering::Relaxed) != 0 {
                stream[i] = Some(w - since);
            }
            let r = a.acked_ms.load(Ordering::Acquire);
            if report[i].is_none() && r > since && a.acked_on.load(Ordering::Relaxed) != 0 {
                report[i] = Some(r - since);
            }
        }
        let moved = stream.iter().flatten().count();
        let acked = report.iter().flatten().count();
        if t.elapsed() >= next_curve_point {
            progress(format_args!(
                "{moved} streams moved, {acked} reports acknowledged elsewhere after {:.0} s",
                next_curve_point.as_secs_f64()
            ));
            next_curve_point += Duration::from_secs(5);
        }
        if (moved == watched.len() && acked == watched.len()) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ms = |v: Vec<Option<u64>>| v.into_iter().flatten().map(|x| x as f64).collect();
    Moved {
        stream_ms: ms(stream),
        report_ms: ms(report),
    }
}

/// [`measure_locks`] on the probe runtime (see `main`).
async fn measure_locks_on(
    probe: &tokio::runtime::Handle,
    admins: Vec<admin::Admin>,
    via: LockVia,
    fleet: &Arc<sim::Fleet>,
    sample: &[Arc<sim::SimAgent>],
) -> (Vec<f64>, u64) {
    let n = sample.len() as u64;
    probe
        .spawn(measure_locks(admins, via, fleet.clone(), sample.to_vec()))
        .await
        .unwrap_or((Vec::new(), n))
}

async fn run(cli: Cli, probe: tokio::runtime::Handle) -> Result<(), LoadError> {
    let n = cli.agents.max(1);
    // Agents' connections and enrollment sockets; the baseline's client and server ends (two
    // per connection, in this process) get what the limit leaves, up to one per agent.
    let need = n as u64 + 256;
    let limit = stats::open_files_limit().unwrap_or(u64::MAX);
    if limit < need + 200 {
        return Err(LoadError::Other(format!(
            "{n} agents need about {need} open files but the limit is {limit}: run `ulimit -n {}` first",
            3 * need
        )));
    }
    let baseline_conns = usize::try_from((limit - need) / 2).map_or(n, |spare| spare.min(n));
    let ca_pem = read(&cli.ca)?;
    let admin_token = read(&cli.token_file)?;
    // One admin client per replica: a lock is queued on the replica `--lock-via` names.
    let mut admins = Vec::with_capacity(cli.server.len());
    for server in &cli.server {
        // Made on the probe runtime, so the connection's task runs there (see `main`).
        let (server, ca_pem, admin_token) = (server.clone(), ca_pem.clone(), admin_token.clone());
        let client = probe
            .spawn(async move { admin::client(&server, &ca_pem, &admin_token).await })
            .await
            .map_err(|e| LoadError::Other(format!("probe runtime: {e}")))??;
        admins.push(client);
    }
    let Some(mut admin) = admins.first().cloned() else {
        return Err(LoadError::Other("--server names no server".into()));
    };
    if cli.kill_cmd.is_some() && cli.server.len() < 2 {
        return Err(LoadError::Other(
            "--kill-cmd needs at least two --server replicas (with one, use --restart-cmd)".into(),
        ));
    }
    if cli.lock_via == LockVia::Other && cli.server.len() < 2 {
        return Err(LoadError::Other(
            "--lock-via other needs at least two --server replicas".into(),
        ));
    }
    let lock_via = match cli.lock_via {
        LockVia::Same => "the replica holding the laptop",
        LockVia::Other => "another replica than the one holding the laptop",
    };
    let uses = u32::try_from(n).map_err(|_| LoadError::Other("too many agents".into()))?;
    let token = admin::enroll_token(&mut admin, uses).await?;
    let fleet = sim::Fleet::over(&cli.server, &ca_pem, cli.source_addrs);
    let tag = format!("{:06x}", vakt_agent::link::now_ms() & 0xff_ffff);
    let d = Duration::from_secs(cli.duration.max(1));

    // 1. Enrollment.
    progress(format_args!("enrolling {n} agents (tag {tag})"));
    let t = Instant::now();
    let patience = Duration::from_secs(cli.enroll_patience);
    let enrolled = {
        let (fleet, tag, token) = (fleet.clone(), tag.clone(), token.clone());
        let sem = Arc::new(Semaphore::new(cli.concurrency.max(1)));
        let mut set = tokio::task::JoinSet::new();
        for i in 0..n {
            let (fleet, tag, token, sem) = (fleet.clone(), tag.clone(), token.clone(), sem.clone());
            set.spawn(async move {
                let _p = sem.acquire_owned().await;
                sim::SimAgent::enroll(&fleet, &tag, i, &token, patience).await
            });
        }
        let mut v = Vec::with_capacity(n);
        let mut limited = 0u64;
        let mut failures = 0u64;
        while let Some(r) = set.join_next().await {
            match r {
                Ok(Ok((a, l))) => {
                    limited += u64::from(l);
                    v.push(Arc::new(a));
                }
                Ok(Err(e)) => {
                    failures += 1;
                    if failures <= 3 {
                        progress(format_args!("enrollment failed: {e}"));
                    }
                }
                Err(e) => progress(format_args!("enrollment task: {e}")),
            }
        }
        v.sort_by_key(|a| a.index);
        (v, limited, failures)
    };
    let (agents, enroll_limited, enroll_failed) = enrolled;
    let enroll_s = t.elapsed();
    let enroll_per_s = rate(agents.len() as u64, enroll_s);
    progress(format_args!(
        "{} enrolled in {:.1} s ({enroll_per_s:.0}/s; {enroll_limited} rate-limited retries, {enroll_failed} failed)",
        agents.len(),
        enroll_s.as_secs_f64()
    ));

    // The laptops whose locks are timed, spread across the fleet; their connections and
    // streams live on the probe runtime (see `main`), and they check in with the rest.
    let step = (agents.len() / cli.lock_sample.max(1)).max(1);
    let sample: Vec<_> = agents
        .iter()
        .step_by(step)
        .take(cli.lock_sample)
        .cloned()
        .collect();
    let sampled: std::collections::HashSet<usize> = sample.iter().map(|a| a.index).collect();

    // 2. Every agent dials its own connection and holds its stream.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_before = server_rss(&cli.server_pid_file);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let t = Instant::now();
    let dialled = for_all(&agents, cli.concurrency, {
        let (fleet, probe) = (fleet.clone(), probe.clone());
        move |a| {
            let (fleet, stop) = (fleet.clone(), stop_rx.clone());
            let on_probe = sampled.contains(&a.index).then(|| probe.clone());
            async move {
                if let Some(probe) = on_probe {
                    return probe
                        .spawn(async move {
                            a.dial(&fleet).await?;
                            tokio::spawn(a.hold(fleet, stop));
                            Ok::<_, LoadError>(())
                        })
                        .await
                        .map_err(|e| LoadError::Other(format!("probe runtime: {e}")))?;
                }
                a.dial(&fleet).await?;
                tokio::spawn(a.hold(fleet, stop));
                Ok::<_, LoadError>(())
            }
        }
    })
    .await;
    let dial_failed = dialled.iter().filter(|r| r.is_err()).count();
    if let Some(Err(e)) = dialled.iter().find(|r| r.is_err()) {
        progress(format_args!("{dial_failed} could not dial, e.g.: {e}"));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while fleet.streams_up.load(Ordering::Relaxed) < agents.len() - dial_failed
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let connect_s = t.elapsed();
    let agents_connected = fleet.streams_up.load(Ordering::Relaxed);
    progress(format_args!(
        "{agents_connected} streams held after {:.1} s",
        connect_s.as_secs_f64()
    ));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_held = server_rss(&cli.server_pid_file);

    // 3. A first report each (small inventory), so that later check-ins have nothing to send.
    let t = Instant::now();
    let first = for_all(&agents, cli.concurrency, |a| async move {
        a.report(false).await
    })
    .await;
    let first_ok = first
        .iter()
        .filter(|r| r.as_ref().is_ok_and(|a| a.clean))
        .count();
    progress(format_args!(
        "{first_ok} first reports in {:.1} s",
        t.elapsed().as_secs_f64()
    ));

    // 4. Full reports from a sample.
    let full_n = cli.full_agents.min(agents.len());
    let full_agents: Vec<_> = agents.iter().take(full_n).cloned().collect();
    let t = Instant::now();
    let Looped {
        ok: full_ok,
        failed: full_failed,
        ..
    } = report_loop(
        &fleet,
        &full_agents,
        true,
        Instant::now() + d,
        Arc::default(),
        None,
    )
    .await;
    let full_reports_per_s = rate(full_ok, t.elapsed());
    progress(format_args!(
        "full reports: {full_ok} from {full_n} agents ({full_reports_per_s:.0}/s, {full_failed} failed)"
    ));

    // 5. No-change check-ins from everyone, and meanwhile lock latency over half the lock
    // sample (spread across the fleet): the loss of a laptop is reported while the rest of the
    // fleet keeps the server busy.
    let (busy_sample, idle_sample) = sample.split_at(sample.len() / 2);
    let t = Instant::now();
    let busy_admins = admins.clone();
    let (checkin_loop, (busy_ms, busy_failed)) = tokio::join!(
        // Timed on its own: a lock that never arrives (queued on another replica without
        // routing) keeps the join waiting after the check-ins ended.
        async {
            let looped = report_loop(
                &fleet,
                &agents,
                false,
                Instant::now() + d,
                Arc::default(),
                None,
            )
            .await;
            (looped, t.elapsed())
        },
        async {
            // Let the check-in load build up first.
            tokio::time::sleep(d / 4).await;
            measure_locks_on(&probe, busy_admins, cli.lock_via, &fleet, busy_sample).await
        }
    );
    let (
        Looped {
            ok: checkins,
            failed: checkin_failed,
            max_ms: checkin_max_ms,
            over_250ms: checkins_over_250ms,
        },
        checkin_s,
    ) = checkin_loop;
    let checkins_per_s = rate(checkins, checkin_s);
    let busy_p50 = stats::percentile(&busy_ms, 50.0).map(round1);
    let busy_p99 = stats::percentile(&busy_ms, 99.0).map(round1);
    progress(format_args!(
        "check-ins: {checkins} in {:.1} s ({checkins_per_s:.0}/s, {checkin_failed} failed, slowest {checkin_max_ms:.0} ms, {checkins_over_250ms} over 250 ms); locks meanwhile, queued on {lock_via}: {} measured, p50 {busy_p50:?} ms, p99 {busy_p99:?} ms, {busy_failed} failed",
        checkin_s.as_secs_f64(),
        busy_ms.len()
    ));

    // 6. The bare baseline, as many connections as the open-file limit leaves room for.
    let (baseline_echo_per_s, baseline_conns) =
        baseline(baseline_conns.min(agents.len()), d, cli.source_addrs).await?;
    progress(format_args!(
        "baseline: {baseline_echo_per_s:.0}/s over {baseline_conns} connections"
    ));

    // 7. Lock latency over the other half of the sample, the fleet holding its streams.
    let (lock_ms, lock_failed) =
        measure_locks_on(&probe, admins.clone(), cli.lock_via, &fleet, idle_sample).await;
    let p50 = stats::percentile(&lock_ms, 50.0).map(round1);
    let p99 = stats::percentile(&lock_ms, 99.0).map(round1);
    progress(format_args!(
        "locks (fleet idle), queued on {lock_via}: {} measured, p50 {p50:?} ms, p99 {p99:?} ms, {lock_failed} failed",
        lock_ms.len()
    ));
    if cli.lock_via == LockVia::Other && lock_failed + busy_failed > 0 {
        progress(
            "a lock queued on another replica reaches the laptop only when that replica tells \
             the holding one (command routing between replicas); without it the lock waits \
             for the laptop's next reconnect, so these locks count as failed after 30 s",
        );
    }

    // 8. Restart under check-in load.
    let mut reconnect_s = None;
    let mut restart_checkins = Looped::default();
    if let Some(cmd) = &cli.restart_cmd {
        let (stop_load, load) = paced_load(&fleet, &agents, cli.restart_checkin_every);
        tokio::time::sleep(Duration::from_secs(2)).await;
        // The restart command restarts the first server: with replicas, only its agents
        // reconnect (to another replica or back to it; `--kill-cmd` measures that better).
        let watched: Vec<_> = agents
            .iter()
            .filter(|a| a.replica() == 0)
            .cloned()
            .collect();
        let expected = if cli.server.len() == 1 {
            agents_connected
        } else {
            watched
                .iter()
                .filter(|a| a.welcomed_ms.load(Ordering::Relaxed) > 0)
                .count()
        };
        let since = fleet.ms_since_base();
        let t = Instant::now();
        progress(format_args!("restarting the server: {cmd}"));
        shell(cmd, "restart command").await?;
        let deadline = Instant::now() + Duration::from_secs(600);
        let mut next_curve_point = Duration::from_secs(5);
        loop {
            let back = watched
                .iter()
                .filter(|a| a.welcomed_ms.load(Ordering::Relaxed) > since)
                .count();
            // The curve, every 5 s: a long tail (agents in long backoff) looks different from
            // a server that lets everyone back slowly.
            if t.elapsed() >= next_curve_point {
                progress(format_args!(
                    "{back} streams back after {:.0} s",
                    next_curve_point.as_secs_f64()
                ));
                next_curve_point += Duration::from_secs(5);
            }
            if back >= expected || Instant::now() > deadline {
                reconnect_s = Some(round1(t.elapsed().as_secs_f64()));
                progress(format_args!("{back} streams back after {reconnect_s:?} s"));
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Let check-ins run on the restarted server a moment, then stop them.
        tokio::time::sleep(Duration::from_secs(3)).await;
        stop_load.store(true, Ordering::Relaxed);
        restart_checkins = load.await.unwrap_or_default();
        settle(&fleet, &agents, cli.concurrency).await;
    }

    // 8b. Fail-over: kill -9 of the first replica under check-in load (the agents holding
    // their streams); its agents move to the others. A laptop among them, not locked before,
    // is locked through a survivor right after the kill.
    let mut moved = Moved::default();
    let mut failover_watched = 0;
    let mut moved_to = vec![0usize; cli.server.len()];
    let mut failover_checkins = Looped::default();
    let mut failover_lock: Option<(String, Option<f64>)> = None;
    if let Some(cmd) = &cli.kill_cmd {
        let (stop_load, load) = paced_load(&fleet, &agents, cli.restart_checkin_every);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let watched: Vec<_> = agents
            .iter()
            .filter(|a| {
                a.replica() == 0
                    && a.welcomed_ms.load(Ordering::Relaxed) > 0
                    && a.welcomed_on.load(Ordering::Relaxed) == 0
            })
            .cloned()
            .collect();
        failover_watched = watched.len();
        let locked_before: std::collections::HashSet<_> =
            sample.iter().map(|a| a.device_id.as_str()).collect();
        let lock_target = watched
            .iter()
            .find(|a| !locked_before.contains(a.device_id.as_str()))
            .cloned();
        // The survivor the lock is queued on and the final check asks (checked above: two
        // or more servers).
        let mut survivor = admins.get(1).cloned().unwrap_or_else(|| admin.clone());
        progress(format_args!(
            "kill -9 of the first replica ({} agents on it): {cmd}",
            watched.len()
        ));
        let since = fleet.ms_since_base();
        shell(cmd, "kill command").await?;
        let deadline = Instant::now() + Duration::from_secs(600);
        let (m, lock) = tokio::join!(watch_moves(&watched, since, deadline), {
            let (mut survivor, fleet) = (survivor.clone(), fleet.clone());
            async move {
                let a = lock_target?;
                let took = lock_one(&mut survivor, &fleet, &a, Duration::from_secs(120)).await;
                Some((
                    a.device_id.clone(),
                    took.map(|(t, _)| t.as_secs_f64() * 1000.0),
                ))
            }
        });
        moved = m;
        // Where they went: the real agent takes another server at random, so with three or
        // more replicas this shows the survivors sharing the load.
        for a in &watched {
            if let Some(n) = moved_to.get_mut(a.welcomed_on.load(Ordering::Relaxed)) {
                *n += 1;
            }
        }
        failover_lock = lock;
        progress(format_args!(
            "fail-over: {} of {} streams moved (p50 {:?}, p99 {:?}, max {:?} ms), {} reports acknowledged elsewhere (p50 {:?}, max {:?} ms); lock of a moved laptop through a survivor: {failover_lock:?}",
            moved.stream_ms.len(),
            failover_watched,
            stats::percentile(&moved.stream_ms, 50.0),
            stats::percentile(&moved.stream_ms, 99.0),
            stats::percentile(&moved.stream_ms, 100.0),
            moved.report_ms.len(),
            stats::percentile(&moved.report_ms, 50.0),
            stats::percentile(&moved.report_ms, 100.0),
        ));
        tokio::time::sleep(Duration::from_secs(3)).await;
        stop_load.store(true, Ordering::Relaxed);
        failover_checkins = load.await.unwrap_or_default();
        settle(&fleet, &agents, cli.concurrency).await;
        // The first replica is gone: the final check asks a survivor.
        std::mem::swap(&mut admin, &mut survivor);
    }

    // 9. Hold.
    if cli.hold_after > 0 {
        progress(format_args!("holding for {} s", cli.hold_after));
        tokio::time::sleep(Duration::from_secs(cli.hold_after)).await;
    }
    let rss_end = server_rss(&cli.server_pid_file);
    let streams_end = fleet.streams_up.load(Ordering::Relaxed);

    // 10. Nothing acknowledged may be missing.
    let lost_items = admin::lost_acknowledged(&mut admin, &agents, &fleet, full_n).await?;
    for l in &lost_items {
        progress(format_args!("LOST: {l}"));
    }
    let lost = lost_items.len();
    let _ = stop_tx.send(true);

    let per_agent = match (rss_before, rss_held) {
        (Some(b), Some(h)) if agents_connected > 0 => {
            Some(round1(h.saturating_sub(b) as f64 / agents_connected as f64))
        }
        _ => None,
    };
    let out = serde_json::json!({
        "agents_connected": agents_connected,
        "enroll_per_s": round1(enroll_per_s),
        "checkins_per_s": round1(checkins_per_s),
        "full_reports_per_s": round1(full_reports_per_s),
        "lock_latency_ms": { "p50": p50, "p99": p99 },
        "reconnect_s": reconnect_s,
        "failover_moved": cli.kill_cmd.as_ref().map(|_| moved.stream_ms.len()),
        "failover_stream_ms": spread(&moved.stream_ms),
        "failover_report_acked_ms": spread(&moved.report_ms),
        "failover_lock_ms": failover_lock.as_ref().and_then(|l| l.1.map(round1)),
        "baseline_echo_per_s": round1(baseline_echo_per_s),
        "lost_acknowledged": lost,
        "details": {
            "agents": n,
            "servers": cli.server.len(),
            "lock_via": lock_via,
            "enrolled": agents.len(),
            "enroll_rate_limited_retries": enroll_limited,
            "enroll_failed": enroll_failed,
            "connect_s": round1(connect_s.as_secs_f64()),
            "first_reports_ok": first_ok,
            "full_report_agents": full_n,
            "full_reports": full_ok,
            "full_reports_failed": full_failed,
            "checkins": checkins,
            "checkins_failed": checkin_failed,
            "baseline_connections": baseline_conns,
            "lock_samples": lock_ms.len(),
            "lock_failed": lock_failed,
            "lock_under_checkins_ms": { "p50": busy_p50, "p99": busy_p99 },
            "lock_under_checkins_samples": busy_ms.len(),
            "lock_under_checkins_failed": busy_failed,
            "restart_checkin_every_s": cli.restart_checkin_every,
            "restart_checkins_ok": restart_checkins.ok,
            "restart_checkins_failed": restart_checkins.failed,
            "failover_watched": failover_watched,
            "failover_reports_acked": moved.report_ms.len(),
            "failover_checkins_ok": failover_checkins.ok,
            "failover_checkins_failed": failover_checkins.failed,
            "failover_lock_device": failover_lock.as_ref().map(|l| l.0.clone()),
            "failover_moved_to": moved_to,
            "failover_dials_failed": fleet.dials_failed.load(Ordering::Relaxed),
            "failover_streams_failed_after_move": fleet.streams_failed_after_move.load(Ordering::Relaxed),
            "checkin_slowest_ms": checkin_max_ms,
            "checkins_over_250ms": checkins_over_250ms,
            "command_redeliveries": fleet.redeliveries.load(Ordering::Relaxed),
            "commands_refused": fleet.refused.load(Ordering::Relaxed),
            "streams_at_end": streams_end,
            "phase_s": cli.duration,
            "server_rss_kib_before_streams": rss_before,
            "server_rss_kib_streams_held": rss_held,
            "server_rss_kib_end": rss_end,
            "server_kib_per_held_agent": per_agent,
        }
    });
    if cli.json {
        println!("{out}");
    } else {
        println!(
            "{}",
            serde_json::to_string_pretty(&out).map_err(|e| LoadError::Other(e.to_string()))?
        );
    }
    Ok(())
}
