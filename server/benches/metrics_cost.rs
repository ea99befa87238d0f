//! What counting costs a check-in: `Metrics::report_acknowledged` (one counter of a labelled
//! family and one histogram observation, the only metrics work on the check-in path) timed
//! side by side with the same loop doing nothing, on one thread and on two threads counting
//! into the same metrics at once (the contended case: both of this machine's cores).
//!
//!     cargo bench -p vakt-server --bench metrics_cost
//!
//! Prints nanoseconds per call; BENCHMARKS.md ("Metrics") puts them against a check-in's cost.

use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vakt_server::metrics::Metrics;

const CALLS: u32 = 2_000_000;

fn per_call(threads: u32, work: impl Fn(u32) + Send + Sync + 'static) -> f64 {
    let work = Arc::new(work);
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let w = work.clone();
            std::thread::spawn(move || {
                for i in 0..CALLS {
                    w(i);
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    start.elapsed().as_nanos() as f64 / f64::from(CALLS)
}

fn main() {
    let metrics = Arc::new(Metrics::new(Histogram::new(exponential_buckets(
        0.0005, 2.0, 16,
    ))));
    println!("metrics_cost: {CALLS} calls per thread; ns per call (wall time / calls per thread)");
    for threads in [1, 2] {
        let baseline = per_call(threads, |i| {
            black_box(i);
        });
        let m = metrics.clone();
        let counted = per_call(threads, move |i| {
            m.report_acknowledged(i % 8 == 0, Duration::from_micros(u64::from(i % 4096)));
        });
        println!(
            "threads {threads}: nothing {baseline:.1} ns, report_acknowledged {counted:.1} ns, difference {:.1} ns",
            counted - baseline
        );
    }
}
