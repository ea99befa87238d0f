//! The agents' hot path on PostgreSQL, gathered: lookups and compare-and-swaps that many
//! tasks make at once (every check-in finds its device through the certificate index, reads
//! its sections' hashes and swaps its device record) go out as one statement for all of them
//! instead of one each.
//!
//! Why: at 10,000 agents a check-in cost about 0.45 ms of server CPU and 0.45 ms of PostgreSQL
//! CPU, nearly all of it per statement (parse/bind/execute, a commit, the driver, and the
//! `block_in_place` handoff of the synchronous store interface), not per row. Gathered, a
//! statement carries as many requests as arrived while the previous ones were in flight, so
//! under load the per-statement cost is shared, and when the server is idle a statement
//! carries one request and costs what it did before. Callers await their answer
//! asynchronously: nothing here blocks a runtime worker.
//!
//! Each kind of operation has a [`Batcher`]: a task on the engine's runtime that takes every
//! request waiting, runs them as one statement on a pooled connection, and answers each.
//! At most [`IN_FLIGHT`] statements of a kind run at once; requests arriving meanwhile wait
//! for the next. Each statement commits on its own (autocommit), so an answered write is
//! durable, as every PostgreSQL write of the store is. A statement that fails (the database
//! gone, a deadlock between two gathered swaps) answers every request with [`Gathered::Failed`]
//! and the caller runs its request alone, which gives it the real error or the real outcome.

use super::engine::Indexed;
use deadpool_postgres::{Object, Pool};
use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{Semaphore, mpsc, oneshot};

/// The most requests one statement carries (its arrays' length).
const MAX_BATCH: usize = 512;

/// Statements of one kind running at once. Two: while one runs, the next fills; more would
/// split a busy server's requests into smaller statements for no gain.
const IN_FLIGHT: usize = 2;

/// Found through an index: `$1` index trees, `$2` keys, `$3` record trees; one row per key
/// the index holds, numbered by its place in the arrays (1-based), with the record if any.
const GET_THROUGH: &str = "SELECT q.n, i.value, r.value \
     FROM unnest($1::text[], $2::bytea[], $3::text[]) WITH ORDINALITY AS q(idx, k, tr, n) \
     JOIN vakt_kv i ON i.tree = q.idx AND i.key = q.k \
     LEFT JOIN vakt_kv r ON r.tree = q.tr AND r.key = i.value";

/// Values of `$1` trees, `$2` keys; one row per key present, numbered as in [`GET_THROUGH`].
pub(super) const GET: &str = "SELECT q.n, v.value \
     FROM unnest($1::text[], $2::bytea[]) WITH ORDINALITY AS q(t, k, n) \
     JOIN vakt_kv v ON v.tree = q.t AND v.key = q.k";

/// Compare-and-swap of many rows: `$1` trees, `$2` keys, `$3` the values read, `$4` the new
/// values; the numbers of the rows written. Under READ COMMITTED a row another writer changed
/// meanwhile is compared again in its new version, so a stale swap writes nothing.
const SWAP: &str = "UPDATE vakt_kv v SET value = q.nv \
     FROM unnest($1::text[], $2::bytea[], $3::bytea[], $4::bytea[]) WITH ORDINALITY \
          AS q(t, k, ov, nv, n) \
     WHERE v.tree = q.t AND v.key = q.k AND v.value = q.ov \
     RETURNING q.n";

/// A gathered request's answer was not given: the caller runs it alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gathered {
    Failed,
}

type Answer<O> = oneshot::Sender<Result<O, Gathered>>;
type Run<R, O> =
    fn(Object, Vec<R>) -> Pin<Box<dyn Future<Output = Result<Vec<O>, Gathered>> + Send>>;

/// Gathers requests of one kind into statements (see the module doc).
pub struct Batcher<R, O> {
    tx: mpsc::UnboundedSender<(R, Answer<O>)>,
}

impl<R: Send + 'static, O: Send + 'static> Batcher<R, O> {
    /// Starts the gathering task on `rt`; it ends when the batcher is dropped. Each statement
    /// it sends is counted in `sent`.
    fn start(
        rt: &tokio::runtime::Handle,
        pool: Pool,
        run: Run<R, O>,
        sent: Arc<AtomicU64>,
    ) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<(R, Answer<O>)>();
        rt.spawn(async move {
            let slots = Arc::new(Semaphore::new(IN_FLIGHT));
            while let Some(first) = rx.recv().await {
                // Never closed, so this waits for a running statement to finish; what arrives
                // meanwhile goes into this one.
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    break;
                };
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(req) => batch.push(req),
                        Err(_) => break,
                    }
                }
                let pool = pool.clone();
                sent.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    let (reqs, answers): (Vec<R>, Vec<Answer<O>>) = batch.into_iter().unzip();
                    let n = reqs.len();
                    let out = match pool.get().await {
                        Ok(client) => run(client, reqs).await,
                        Err(_) => Err(Gathered::Failed),
                    };
                    drop(slot);
                    match out {
                        Ok(outs) if outs.len() == n => {
                            for (answer, o) in answers.into_iter().zip(outs) {
                                // A caller that stopped waiting has nothing to be told.
                                let _ = answer.send(Ok(o));
                            }
                        }
                        _ => {
                            for answer in answers {
                                let _ = answer.send(Err(Gathered::Failed));
                            }
                        }
                    }
                });
            }
        });
        Self { tx }
    }

    /// Sends `req` with the next statement and waits for its answer.
    pub async fn call(&self, req: R) -> Result<O, Gathered> {
        let (answer, rx) = oneshot::channel();
        self.tx.send((req, answer)).map_err(|_| Gathered::Failed)?;
        rx.await.map_err(|_| Gathered::Failed)?
    }
}

/// A lookup through an index (see [`super::engine::Tree::get_through`]).
pub struct Through {
    pub index: &'static str,
    pub key: Vec<u8>,
    pub tree: &'static str,
}

/// Keys of one tree, read together.
pub struct Many {
    pub tree: &'static str,
    pub keys: Vec<Vec<u8>>,
}

/// A compare-and-swap of one row.
pub struct Swap {
    pub tree: &'static str,
    pub key: Vec<u8>,
    pub old: Vec<u8>,
    pub new: Vec<u8>,
}

/// The batchers of one engine.
pub struct Batchers {
    pub through: Batcher<Through, Option<Indexed>>,
    pub many: Batcher<Many, Vec<Option<Vec<u8>>>>,
    pub swap: Batcher<Swap, bool>,
    /// Gathered statements sent so far, of every kind.
    sent: Arc<AtomicU64>,
}

impl Batchers {
    pub fn start(rt: &tokio::runtime::Handle, pool: &Pool) -> Self {
        let sent = Arc::new(AtomicU64::new(0));
        Self {
            through: Batcher::start(
                rt,
                pool.clone(),
                |c, r| Box::pin(run_through(c, r)),
                sent.clone(),
            ),
            many: Batcher::start(
                rt,
                pool.clone(),
                |c, r| Box::pin(run_many(c, r)),
                sent.clone(),
            ),
            swap: Batcher::start(
                rt,
                pool.clone(),
                |c, r| Box::pin(run_swap(c, r)),
                sent.clone(),
            ),
            sent,
        }
    }

    /// Gathered statements sent so far (each carries one or more callers' requests).
    pub fn statements(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

/// A row's place in the arrays (1-based, from `WITH ORDINALITY`) as an index, if in range.
pub(super) fn place(n: i64, len: usize) -> Option<usize> {
    usize::try_from(n)
        .ok()
        .and_then(|n| n.checked_sub(1))
        .filter(|i| *i < len)
}

async fn run_through(c: Object, reqs: Vec<Through>) -> Result<Vec<Option<Indexed>>, Gathered> {
    let indexes: Vec<&str> = reqs.iter().map(|r| r.index).collect();
    let keys: Vec<&[u8]> = reqs.iter().map(|r| r.key.as_slice()).collect();
    let trees: Vec<&str> = reqs.iter().map(|r| r.tree).collect();
    let st = c.prepare_cached(GET_THROUGH).await.map_err(failed)?;
    let rows = c
        .query(&st, &[&indexes, &keys, &trees])
        .await
        .map_err(failed)?;
    let mut out: Vec<Option<Indexed>> = (0..reqs.len()).map(|_| None).collect();
    for row in rows {
        let i = place(row.try_get(0).map_err(failed)?, out.len()).ok_or(Gathered::Failed)?;
        out[i] = Some((
            row.try_get(1).map_err(failed)?,
            row.try_get(2).map_err(failed)?,
        ));
    }
    Ok(out)
}

async fn run_many(c: Object, reqs: Vec<Many>) -> Result<Vec<Vec<Option<Vec<u8>>>>, Gathered> {
    // Every request's keys in one pair of arrays; `owner` maps a place back to its request.
    let mut trees = Vec::new();
    let mut keys: Vec<&[u8]> = Vec::new();
    let mut owner = Vec::new();
    for (i, r) in reqs.iter().enumerate() {
        for (j, k) in r.keys.iter().enumerate() {
            trees.push(r.tree);
            keys.push(k);
            owner.push((i, j));
        }
    }
    let mut out: Vec<Vec<Option<Vec<u8>>>> =
        reqs.iter().map(|r| vec![None; r.keys.len()]).collect();
    if keys.is_empty() {
        return Ok(out);
    }
    let st = c.prepare_cached(GET).await.map_err(failed)?;
    let rows = c.query(&st, &[&trees, &keys]).await.map_err(failed)?;
    for row in rows {
        let p = place(row.try_get(0).map_err(failed)?, owner.len()).ok_or(Gathered::Failed)?;
        let (i, j) = owner[p];
        out[i][j] = Some(row.try_get(1).map_err(failed)?);
    }
    Ok(out)
}

async fn run_swap(c: Object, reqs: Vec<Swap>) -> Result<Vec<bool>, Gathered> {
    // A row named twice would be written once by an arbitrary one of them: only the first
    // goes out, and the others are answered "not written", so their callers read again.
    let mut seen = HashSet::new();
    let sent: Vec<usize> = (0..reqs.len())
        .filter(|&i| seen.insert((reqs[i].tree, reqs[i].key.as_slice())))
        .collect();
    let trees: Vec<&str> = sent.iter().map(|&i| reqs[i].tree).collect();
    let keys: Vec<&[u8]> = sent.iter().map(|&i| reqs[i].key.as_slice()).collect();
    let olds: Vec<&[u8]> = sent.iter().map(|&i| reqs[i].old.as_slice()).collect();
    let news: Vec<&[u8]> = sent.iter().map(|&i| reqs[i].new.as_slice()).collect();
    let st = c.prepare_cached(SWAP).await.map_err(failed)?;
    let rows = c
        .query(&st, &[&trees, &keys, &olds, &news])
        .await
        .map_err(failed)?;
    let mut out = vec![false; reqs.len()];
    for row in rows {
        let p = place(row.try_get(0).map_err(failed)?, sent.len()).ok_or(Gathered::Failed)?;
        out[sent[p]] = true;
    }
    Ok(out)
}

/// A statement's failure, for the batch: its callers run alone and meet the real error.
fn failed(_: tokio_postgres::Error) -> Gathered {
    Gathered::Failed
}

#[cfg(test)]
mod tests {
    use super::place;

    #[test]
    fn places_outside_the_arrays_are_refused() {
        assert_eq!(place(1, 3), Some(0));
        assert_eq!(place(3, 3), Some(2));
        assert_eq!(place(0, 3), None);
        assert_eq!(place(4, 3), None);
        assert_eq!(place(-1, 3), None);
    }
}
