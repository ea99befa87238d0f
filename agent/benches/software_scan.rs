//! Software scan of this machine against `apt-cache policy` for every installed package.
//!
//! `cargo bench -p vakt-agent --bench software_scan` prints, side by side: a cold scan (a new
//! `Scanner`, so every package list is decompressed and parsed), a warm rescan (the same
//! `Scanner` again: unchanged lists come from its cache) and `apt-cache policy` given all
//! installed packages at once. Each is run several times; the median and the minimum are shown.
//! The operating system's page cache is warm for all three (every variant runs once before
//! timing), so the figures compare parsing work, not disk reads.

use std::process::Command;
use std::time::{Duration, Instant};
use vakt_agent::collect::Root;
use vakt_agent::collect::software::Scanner;

fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, Duration) {
    let _ = f(); // warm-up, not timed
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(f());
            start.elapsed()
        })
        .collect();
    times.sort();
    (times[times.len() / 2], times[0])
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let root = Root::new("/");
    let mut scanner = Scanner::new();
    let first = scanner.deb().scan(&root);
    let inv = first.value;
    if inv.packages.is_empty() {
        println!("software_scan: no dpkg database on this machine; nothing to measure");
        return;
    }
    let native = inv
        .packages
        .iter()
        .find(|p| p.installed.name == "dpkg")
        .map(|p| p.installed.arch.clone())
        .unwrap_or_default();
    let args: Vec<String> = inv
        .packages
        .iter()
        .map(|p| {
            let arch = &p.installed.arch;
            if arch == "all" || *arch == native {
                p.installed.name.clone()
            } else {
                format!("{}:{arch}", p.installed.name)
            }
        })
        .collect();
    println!(
        "software_scan: {} installed packages, {} configured package lists, {} errors",
        inv.packages.len(),
        inv.repositories.len(),
        first.errors.len()
    );

    let (cold, cold_min) = time(5, || Scanner::new().scan(&root));
    let mut warm_scanner = Scanner::new();
    let _ = warm_scanner.scan(&root);
    let (warm, warm_min) = time(20, || warm_scanner.scan(&root));
    let reparsed = warm_scanner.deb().lists_parsed_last_scan();

    println!(
        "  cold scan (lists parsed)        median {:>10}  min {:>10}",
        ms(cold),
        ms(cold_min)
    );
    println!(
        "  warm rescan (cache, {reparsed} re-parsed) median {:>10}  min {:>10}",
        ms(warm),
        ms(warm_min)
    );
    let apt = Command::new("apt-cache").arg("--version").output();
    if apt.is_err() {
        println!("  apt-cache policy: skipped, apt-cache is not installed");
        return;
    }
    let (policy, policy_min) = time(5, || {
        Command::new("apt-cache")
            .arg("policy")
            .args(&args)
            .output()
            .map(|o| o.stdout.len())
            .unwrap_or(0)
    });
    println!(
        "  apt-cache policy ({} packages)  median {:>10}  min {:>10}",
        args.len(),
        ms(policy),
        ms(policy_min)
    );
    let ratio = |d: Duration| d.as_secs_f64() / policy.as_secs_f64();
    println!(
        "  cold scan = {:.3} x apt-cache policy (goal <= 0.1); warm rescan = {:.3} x",
        ratio(cold),
        ratio(warm)
    );
}
