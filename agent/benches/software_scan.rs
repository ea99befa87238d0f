//! Software scan of this machine against `apt-cache policy` for every installed package.
//!
//! `cargo bench -p vakt-agent --bench software_scan` prints, side by side: a cold scan (a new
//! `Scanner`, so every package list is decompressed and parsed), a warm rescan (the same
//! `Scanner` again: unchanged lists come from its cache) and `apt-cache policy` given all
//! installed packages at once, both as this machine runs it and with apt's binary cache
//! (`pkgcache.bin`) in a temporary directory. The second is how a stock Debian or Ubuntu desktop
//! runs apt (this machine, a Docker-style image, sets `Dir::Cache::pkgcache ""`, so apt parses
//! every list on every call); it is the counterpart of the warm rescan, as the first is of the
//! cold scan. Each runs several times after one untimed run (which also fills apt's cache), so
//! the page cache is warm for all: the figures compare work, not disk reads.
//!
//! Two measures are shown: wall-clock time (median and minimum) and CPU time per run (user +
//! system, from /proc, for apt-cache the child's). On a busy machine the wall clock swings with
//! the load; the CPU time and the wall-clock minimum are the steadier figures, so the ratio to
//! apt is given for both.

use std::process::Command;
use std::time::{Duration, Instant};
use vakt_agent::collect::Root;
use vakt_agent::collect::software::Scanner;

/// CPU time consumed so far by this process and by its waited-for children, from
/// /proc/self/stat (fields utime, stime, cutime, cstime, in USER_HZ = 1/100 s ticks).
fn cpu_times() -> Option<(Duration, Duration)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is parenthesised and may hold spaces.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<u64> = rest
        .split_ascii_whitespace()
        .skip(11) // state … cmajflt: fields 3-13
        .take(4)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    let ticks = |t: u64| Duration::from_millis(t * 10);
    Some((ticks(f.first()? + f.get(1)?), ticks(f.get(2)? + f.get(3)?)))
}

struct Timing {
    median: Duration,
    min: Duration,
    /// CPU time per run, when /proc is there.
    cpu: Option<Duration>,
}

/// Runs `f` once untimed, then `runs` times. `child` says whose CPU time counts.
fn time<T>(runs: usize, child: bool, mut f: impl FnMut() -> T) -> Timing {
    let _ = f();
    let before = cpu_times();
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(f());
            start.elapsed()
        })
        .collect();
    let after = cpu_times();
    times.sort();
    let cpu = before.zip(after).map(|((s0, c0), (s1, c1))| {
        let spent = if child {
            c1.saturating_sub(c0)
        } else {
            s1.saturating_sub(s0)
        };
        spent / u32::try_from(runs).unwrap_or(1)
    });
    Timing {
        median: times[times.len() / 2],
        min: times[0],
        cpu,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn row(label: &str, t: &Timing) {
    println!(
        "  {label:<36} wall median {:>9}  min {:>9}  cpu/run {:>9}",
        ms(t.median),
        ms(t.min),
        t.cpu.map_or("n/a".to_string(), ms)
    );
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
    let args = inv.apt_names();
    println!(
        "software_scan: {} installed packages, {} configured package lists, {} errors",
        inv.packages.len(),
        inv.repositories.len(),
        first.errors.len()
    );

    let cold = time(15, false, || Scanner::new().scan(&root));
    let mut warm_scanner = Scanner::new();
    let _ = warm_scanner.scan(&root);
    let warm = time(50, false, || warm_scanner.scan(&root));
    let reparsed = warm_scanner.deb().lists_parsed_last_scan();
    row("cold scan (every list parsed)", &cold);
    row(&format!("warm rescan ({reparsed} lists re-parsed)"), &warm);

    if let Err(e) = Command::new("apt-cache").arg("--version").output() {
        println!("  apt-cache policy: skipped, apt-cache cannot be run ({e})");
        return;
    }
    let apt_policy = |extra: &[String]| {
        Command::new("apt-cache")
            .args(extra)
            .arg("policy")
            .args(&args)
            .output()
            .map(|o| o.stdout.len())
            .unwrap_or(0)
    };
    let policy = time(5, true, || apt_policy(&[]));
    row(
        &format!("apt-cache policy ({} packages)", args.len()),
        &policy,
    );
    let cached = tempfile::tempdir().ok().map(|dir| {
        let opts = [
            "-o".to_string(),
            format!(
                "Dir::Cache::pkgcache={}",
                dir.path().join("pkgcache.bin").display()
            ),
            "-o".to_string(),
            format!(
                "Dir::Cache::srcpkgcache={}",
                dir.path().join("srcpkgcache.bin").display()
            ),
        ];
        let t = time(10, true, || apt_policy(&opts));
        row("apt-cache policy, pkgcache.bin kept", &t);
        t
    });

    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    let cpu_ratio = |a: &Timing, b: &Timing| {
        a.cpu
            .zip(b.cpu)
            .map_or(String::new(), |(x, y)| format!(", cpu {:.3}", ratio(x, y)))
    };
    println!(
        "  cold scan / apt-cache policy: wall min {:.3}, wall median {:.3}{} (goal <= 0.1)",
        ratio(cold.min, policy.min),
        ratio(cold.median, policy.median),
        cpu_ratio(&cold, &policy)
    );
    if let Some(c) = &cached {
        println!(
            "  warm rescan / apt-cache policy with pkgcache.bin: wall min {:.3}, wall median {:.3}{}",
            ratio(warm.min, c.min),
            ratio(warm.median, c.median),
            cpu_ratio(&warm, c)
        );
        println!(
            "  cold scan / apt-cache policy with pkgcache.bin: wall min {:.3}, wall median {:.3}{}",
            ratio(cold.min, c.min),
            ratio(cold.median, c.median),
            cpu_ratio(&cold, c)
        );
    }
}
