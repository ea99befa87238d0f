//! Each fact family (host, software, mail) collects on a thread of its own, and the
//! [`Collector`](super::Collector) waits for it only until a deadline.
//!
//! Why threads: a read can block in the kernel where nothing can interrupt it (a user's FUSE
//! file system that never answers, a hung network mount), and no check before the read can
//! rule that out. So the waiting is bounded instead of the work: a family that has not
//! finished by its deadline is reported failed for this report, with the facts of its last
//! complete run (said in the error) or none, and the rest of the report goes out.
//!
//! The thread that overran is abandoned, not killed (a thread cannot be): it owns only its own
//! data (the family's state, moved into it, and a copy of the root) and hands both back
//! through a channel if it ever finishes. Until then the family is not started again, so a
//! stuck read costs one thread, not one per report: each report says the family is still
//! stuck. When the old thread does finish, its late result is dropped (it is stale) and its
//! state (the software scanner's parsed package lists) is taken back for the next run.

use super::{Collected, Root};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};
use vakt_proto::model::SectionKind;

/// How long collection may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budgets {
    /// Each family, from the start of the collection.
    pub family: Duration,
    /// The whole collection (families run at the same time, so this matters only when it is
    /// the shorter of the two).
    pub total: Duration,
}

pub const DEFAULT_FAMILY_BUDGET: Duration = Duration::from_secs(60);
pub const DEFAULT_TOTAL_BUDGET: Duration = Duration::from_secs(120);

impl Default for Budgets {
    fn default() -> Self {
        Self {
            family: DEFAULT_FAMILY_BUDGET,
            total: DEFAULT_TOTAL_BUDGET,
        }
    }
}

impl Budgets {
    /// When the families of a collection started at `start` must have finished.
    pub fn deadline(&self, start: Instant) -> Instant {
        start + self.family.min(self.total)
    }
}

/// What a family does: collect under a root, with its state kept between runs.
pub type Work<S, T> = Arc<dyn Fn(&mut S, &Root) -> Collected<T> + Send + Sync>;

/// What a finished run sends back: the state and what it collected.
type Outcome<S, T> = (S, Collected<T>);

/// One fact family and its thread.
pub struct Family<S, T> {
    name: &'static str,
    section: SectionKind,
    work: Work<S, T>,
    /// The state while no thread holds it.
    state: Option<S>,
    /// The thread of the current (or a stuck earlier) run, and when it started.
    running: Option<(Receiver<Outcome<S, T>>, Instant)>,
    /// Whether the run now waited on was started by this collection.
    started_now: bool,
    /// The facts of the last run that finished in time, and when it finished.
    last: Option<(T, Instant)>,
}

impl<S, T> std::fmt::Debug for Family<S, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Family")
            .field("name", &self.name)
            .field("running", &self.running.is_some())
            .finish_non_exhaustive()
    }
}

impl<S, T> Family<S, T>
where
    S: Default + Send + 'static,
    T: Clone + Default + Send + 'static,
{
    pub fn new(name: &'static str, section: SectionKind, state: S, work: Work<S, T>) -> Self {
        Self {
            name,
            section,
            work,
            state: Some(state),
            running: None,
            started_now: false,
            last: None,
        }
    }

    /// Starts a run on its own thread, unless the previous run is still stuck.
    pub fn start(&mut self, root: &Root) {
        self.started_now = false;
        if let Some((rx, _)) = &self.running {
            match rx.try_recv() {
                // An overrun that has ended since: its facts are stale, its state is reused.
                Ok((state, _late)) => self.state = Some(state),
                Err(TryRecvError::Empty) => return,
                // The thread died (a panic): its state went with it.
                Err(TryRecvError::Disconnected) => self.state = None,
            }
            self.running = None;
        }
        let mut state = self.state.take().unwrap_or_default();
        let (tx, rx) = mpsc::sync_channel(1);
        let work = Arc::clone(&self.work);
        let root = root.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("collect-{}", self.name))
            .spawn(move || {
                let got = work(&mut state, &root);
                // Nobody listening any more (the agent is exiting): nothing to do.
                let _ = tx.send((state, got));
            });
        match spawned {
            Ok(_) => {
                self.running = Some((rx, Instant::now()));
                self.started_now = true;
            }
            Err(e) => tracing::error!("cannot start the {} collector: {e}", self.name),
        }
    }

    /// Waits for the run until `deadline` and gives what it collected, or, when it did not
    /// finish, an error for this family (and the facts of its last complete run, if any).
    pub fn finish(&mut self, deadline: Instant) -> Collected<T> {
        let Some((rx, since)) = &self.running else {
            return self.fallback("could not be started (no thread)".into());
        };
        let since = *since;
        if !self.started_now {
            return self.fallback(format!(
                "still running after {} s (an earlier collection overran its budget): not started again",
                since.elapsed().as_secs()
            ));
        }
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok((state, got)) => {
                self.state = Some(state);
                self.running = None;
                self.last = Some((got.value.clone(), Instant::now()));
                got
            }
            Err(RecvTimeoutError::Timeout) => self.fallback(format!(
                "did not finish within {} s: abandoned for this report (left to end on its own, not started again while it runs)",
                deadline.saturating_duration_since(since).as_secs()
            )),
            Err(RecvTimeoutError::Disconnected) => {
                self.running = None;
                self.fallback("failed (the collector panicked)".into())
            }
        }
    }

    /// The facts of the last complete run (or none) and an error saying so.
    fn fallback(&self, what: String) -> Collected<T> {
        let (value, note) = match &self.last {
            Some((value, at)) => (
                value.clone(),
                format!(
                    "; the facts shown are those of the last complete collection, {} s ago",
                    at.elapsed().as_secs()
                ),
            ),
            None => (T::default(), "; no facts this report".to_string()),
        };
        let mut out = Collected::new(value);
        out.error(
            self.section,
            format!("{} collector", self.name),
            format!("{what}{note}"),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A family whose run blocks until the test lets it go, counting its starts and its
    /// state (how many runs the state has been through).
    fn blocking() -> (Family<u32, u32>, Arc<AtomicUsize>, mpsc::Sender<()>) {
        let starts = Arc::new(AtomicUsize::new(0));
        let (go, wait) = mpsc::channel::<()>();
        let gate = Arc::new(Mutex::new(Some(wait)));
        let (s, g) = (Arc::clone(&starts), Arc::clone(&gate));
        let work: Work<u32, u32> = Arc::new(move |runs: &mut u32, _root: &Root| {
            s.fetch_add(1, Ordering::SeqCst);
            *runs += 1;
            // The first run waits for the gate; later ones return at once.
            let wait = g.lock().unwrap().take();
            if let Some(w) = wait {
                let _ = w.recv();
            }
            Collected::new(*runs * 10)
        });
        (
            Family::new("test", SectionKind::Software, 0, work),
            starts,
            go,
        )
    }

    #[test]
    fn an_overrun_is_an_error_and_is_not_started_again_while_stuck() {
        let (mut fam, starts, go) = blocking();
        let root = Root::new("/nonexistent");
        let t0 = Instant::now();
        fam.start(&root);
        let got = fam.finish(Instant::now() + Duration::from_millis(200));
        assert!(t0.elapsed() < Duration::from_secs(5), "the wait is bounded");
        assert_eq!(got.value, 0, "no facts from an unfinished run");
        assert!(
            got.errors[0].message.contains("did not finish"),
            "{:?}",
            got.errors
        );
        assert!(
            got.errors[0].message.contains("no facts"),
            "{:?}",
            got.errors
        );

        // Still stuck: reported, and no second thread.
        fam.start(&root);
        let got = fam.finish(Instant::now() + Duration::from_millis(200));
        assert!(
            got.errors[0].message.contains("still running"),
            "{:?}",
            got.errors
        );
        assert_eq!(starts.load(Ordering::SeqCst), 1);

        // Released: the late result is dropped, the state (one run) comes back, and the next
        // run starts from it.
        go.send(()).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        fam.start(&root);
        let got = fam.finish(Instant::now() + Duration::from_secs(20));
        assert!(got.errors.is_empty(), "{:?}", got.errors);
        assert_eq!(got.value, 20, "the state of the stuck run was taken back");
        assert_eq!(starts.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn after_a_complete_run_an_overrun_shows_the_last_facts_and_says_so() {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = Arc::clone(&calls);
        let work: Work<(), u32> = Arc::new(move |_: &mut (), _: &Root| {
            if c.fetch_add(1, Ordering::SeqCst) == 1 {
                std::thread::sleep(Duration::from_secs(2));
            }
            Collected::new(7)
        });
        let mut fam = Family::new("mail", SectionKind::Mail, (), work);
        let root = Root::new("/nonexistent");
        fam.start(&root);
        assert_eq!(
            fam.finish(Instant::now() + Duration::from_secs(20)).value,
            7
        );
        fam.start(&root);
        let got = fam.finish(Instant::now() + Duration::from_millis(100));
        assert_eq!(got.value, 7);
        assert_eq!(got.errors[0].section, SectionKind::Mail);
        assert_eq!(got.errors[0].source, "mail collector");
        assert!(
            got.errors[0].message.contains("last complete collection"),
            "{:?}",
            got.errors
        );
    }

    #[test]
    fn a_panicking_collector_is_an_error_and_runs_again_next_time() {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = Arc::clone(&calls);
        let work: Work<(), u32> = Arc::new(move |_: &mut (), _: &Root| {
            if c.fetch_add(1, Ordering::SeqCst) == 0 {
                panic!("collector bug");
            }
            Collected::new(1)
        });
        let mut fam = Family::new("host", SectionKind::Host, (), work);
        let root = Root::new("/nonexistent");
        fam.start(&root);
        let got = fam.finish(Instant::now() + Duration::from_secs(20));
        assert!(
            got.errors[0].message.contains("panicked"),
            "{:?}",
            got.errors
        );
        fam.start(&root);
        assert_eq!(
            fam.finish(Instant::now() + Duration::from_secs(20)).value,
            1
        );
    }
}
