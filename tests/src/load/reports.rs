//! Simulated agents reporting without pause, for the tests that break the server or its
//! database under load (crash.rs, postgres_server.rs): enrolled and dialled together, then
//! every agent reporting (even indexes a full 2,000-package report each time, odd ones
//! check-ins) until stopped, counting what the server acknowledged and what it refused.

use super::LoadError;
use super::sim::{Fleet, SimAgent};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Enrolls `n` simulated agents tagged `tag` with `token` (good for `n` uses) and dials each.
pub async fn enroll(
    fleet: &Fleet,
    tag: &str,
    n: usize,
    token: &str,
) -> Result<Vec<Arc<SimAgent>>, LoadError> {
    let mut agents = Vec::with_capacity(n);
    for i in 0..n {
        let (a, _) = SimAgent::enroll(fleet, tag, i, token, Duration::from_secs(60)).await?;
        a.dial(fleet).await?;
        agents.push(Arc::new(a));
    }
    Ok(agents)
}

/// The running load; [`ReportLoad::stop`] ends it.
pub struct ReportLoad {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
    tasks: tokio::task::JoinSet<()>,
}

impl ReportLoad {
    /// Starts every agent reporting; after a failed or unclean exchange an agent waits
    /// `pause` before the next, as a real agent backs off.
    pub fn start(agents: &[Arc<SimAgent>], pause: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (acked, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let mut tasks = tokio::task::JoinSet::new();
        for a in agents {
            let (a, stop) = (a.clone(), stop.clone());
            let (acked, refused) = (acked.clone(), refused.clone());
            tasks.spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match a.report(a.index % 2 == 0).await {
                        Ok(ack) if ack.clean => {
                            acked.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            refused.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(pause).await;
                        }
                    }
                }
            });
        }
        Self {
            stop,
            acked,
            refused,
            tasks,
        }
    }

    /// Reports acknowledged cleanly so far.
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Exchanges that failed or were not acknowledged cleanly so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Stops every agent after its exchange in flight; the reports acknowledged in all.
    pub async fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        while self.tasks.join_next().await.is_some() {}
        self.acked()
    }
}
