//! Group commit: many writers waiting for durability share one flush.
//!
//! Every acknowledged write (a report, an enrollment, a command result, an audit entry) must be
//! on disk before the answer goes out. Flushing sled once per writer costs a write and an fsync
//! each; under a few thousand concurrent check-ins that is the whole budget. Instead each
//! writer, *after* its writes are done, queues a ticket here and waits. One flusher thread
//! takes every ticket queued so far, flushes once, and answers them all: each ticket's writes
//! happened before the ticket was queued, so the flush that starts after taking it covers them.
//! Writers that arrive during a flush wait for the next one, which begins as soon as this one
//! ends — there is no timer, so a lone writer waits for exactly one flush, as before.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use tokio::sync::oneshot;

type Ticket = oneshot::Sender<Result<(), sled::Error>>;

/// The flusher of one sled database; cheap to clone. When the last clone is dropped the
/// thread is stopped and joined, so the database is closed (and its lock file free) once the
/// store that owned it is gone: a store reopened in the same process must not find its own
/// flusher still holding the old handle.
#[derive(Clone, Debug)]
pub struct GroupCommit {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// `None` only while dropping.
    tickets: Option<mpsc::Sender<Ticket>>,
    thread: Option<std::thread::JoinHandle<()>>,
    counts: Arc<Counts>,
    /// Every flush's duration, for `vakt_store_flush_duration_seconds` (an atomic update).
    flush_seconds: prometheus_client::metrics::histogram::Histogram,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop after the flush it may be running.
        drop(self.tickets.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How many flushes served how many writers.
#[derive(Debug, Default)]
pub struct Counts {
    pub flushes: AtomicU64,
    pub writers: AtomicU64,
}

impl GroupCommit {
    /// Starts the flusher thread for `db`.
    pub fn start(db: sled::Db) -> std::io::Result<Self> {
        let (tickets, rx) = mpsc::channel::<Ticket>();
        let counts = Arc::new(Counts::default());
        let c = counts.clone();
        let flush_seconds = prometheus_client::metrics::histogram::Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 16),
        );
        let h = flush_seconds.clone();
        let thread = std::thread::Builder::new()
            .name("vakt-commit".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    batch.extend(rx.try_iter());
                    let began = std::time::Instant::now();
                    let result = db.flush().map(|_| ());
                    // Every writer in the batch waited this long on the disk: worth a line
                    // when it is long enough for an admin or an agent to notice.
                    let took = began.elapsed();
                    h.observe(took.as_secs_f64());
                    if took > std::time::Duration::from_millis(250) {
                        tracing::warn!(
                            "slow flush: {} ms for {} writers",
                            took.as_millis(),
                            batch.len()
                        );
                    }
                    c.flushes.fetch_add(1, Ordering::Relaxed);
                    c.writers.fetch_add(batch.len() as u64, Ordering::Relaxed);
                    for t in batch {
                        let _ = t.send(result.clone());
                    }
                }
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                tickets: Some(tickets),
                thread: Some(thread),
                counts,
                flush_seconds,
            }),
        })
    }

    /// The histogram of flush durations (shared: the metrics registry holds a clone).
    pub fn flush_histogram(&self) -> prometheus_client::metrics::histogram::Histogram {
        self.inner.flush_seconds.clone()
    }

    /// Flushes so far and the writers they served.
    pub fn counts(&self) -> (u64, u64) {
        let c = &self.inner.counts;
        (
            c.flushes.load(Ordering::Relaxed),
            c.writers.load(Ordering::Relaxed),
        )
    }

    /// Waits until everything this task wrote before the call is on disk.
    pub async fn flush(&self) -> Result<(), sled::Error> {
        let stopped = || sled::Error::ReportableBug("the group-commit thread has stopped".into());
        let (tx, rx) = oneshot::channel();
        self.inner
            .tickets
            .as_ref()
            .ok_or_else(stopped)?
            .send(tx)
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| {
            sled::Error::ReportableBug("the group-commit thread dropped a flush".into())
        })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_share_flushes_and_each_waits_for_one() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new()
            .path(dir.path().join("db"))
            .flush_every_ms(None)
            .open()
            .unwrap();
        let gc = GroupCommit::start(db.clone()).unwrap();
        let mut set = tokio::task::JoinSet::new();
        for i in 0..200u32 {
            let (db, gc) = (db.clone(), gc.clone());
            set.spawn(async move {
                db.insert(i.to_be_bytes(), &b"v"[..]).unwrap();
                gc.flush().await.unwrap();
            });
        }
        while let Some(r) = set.join_next().await {
            r.unwrap();
        }
        let (flushes, writers) = gc.counts();
        assert_eq!(writers, 200, "every writer was answered by a flush");
        assert!(
            flushes < 200,
            "{flushes} flushes for 200 concurrent writers"
        );
        // A lone writer after the crowd still gets its own flush.
        db.insert(b"last", &b"v"[..]).unwrap();
        gc.flush().await.unwrap();
        assert_eq!(gc.counts(), (flushes + 1, 201));
    }
}
