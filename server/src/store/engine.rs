//! The storage engine under the store: ordered trees of byte keys and values, multi-tree
//! transactions, and a durable commit, with two implementations: sled (embedded, the
//! default) and PostgreSQL (`super::pg`). Everything in `store*` above this module is written
//! against these operations only, so the store means the same on either engine.
//!
//! The contract both keep:
//! - keys are ordered bytewise; `scan_prefix` and `last` follow that order;
//! - a single `insert`, `remove`, `update` or `apply` is atomic;
//! - `transaction` runs its closure against a consistent view of the trees it names and
//!   applies all of its writes or none; when a concurrent writer conflicts, the closure is run
//!   again (so it must not have effects outside the trees);
//! - `get_many` and `get_through` read what the same `get`s would, in one round trip on
//!   PostgreSQL (not one snapshot outside a transaction, like the `get`s they replace);
//! - [`Engine::flush`] returns once every write made before it is durable. sled buffers writes
//!   and flushes them in groups (`commit.rs`); PostgreSQL commits each write or transaction
//!   durably before it returns, so there it has nothing left to do;
//! - [`Engine::changes`] tells of writes other processes committed to the trees other
//!   replicas must act on. sled belongs to one process, so its feed is empty; PostgreSQL's
//!   is `pg_feed`.

use super::StoreError;
use super::pg::{PgEngine, PgFault, PgTree, PgTx};

/// A key and its value, as a scan returns them.
pub type Entry = (Vec<u8>, Vec<u8>);

/// What a lookup through an index finds: the key the index holds, and the record under it
/// (if any).
pub type Indexed = (Vec<u8>, Option<Vec<u8>>);

/// A turn that transactions changing one hot record take one after another
/// ([`Engine::transaction_in_turn`]): on PostgreSQL the two keys of a session-level advisory
/// lock (the two-key form, so it never meets the one-key lock migrations take).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Turn {
    /// What kind of record the turn is for (one value per kind).
    pub space: i32,
    /// Which record (records whose keys collide only share turns).
    pub key: i32,
}

/// One of the two engines; cheap to clone.
#[derive(Clone)]
pub enum Engine {
    Sled {
        db: sled::Db,
        commit: crate::commit::GroupCommit,
    },
    Pg(PgEngine),
}

/// A write another process committed, as the engine's change feed reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The key `key` of tree `tree` was written or removed.
    Written { tree: String, key: Vec<u8> },
    /// Changes may have been missed (the feed was (re)connected): rebuild whatever is derived
    /// from the trees.
    Resync,
}

/// The engine's change feed (see [`Engine::changes`]).
pub struct Changes(Option<tokio::sync::mpsc::Receiver<Change>>);

impl Changes {
    /// The next change; `None` when the feed has ended (at once on sled).
    pub async fn next(&mut self) -> Option<Change> {
        match &mut self.0 {
            Some(rx) => rx.recv().await,
            None => None,
        }
    }
}

/// A named tree of one engine; cheap to clone.
#[derive(Clone)]
pub struct Tree {
    name: &'static str,
    inner: TreeInner,
}

#[derive(Clone)]
enum TreeInner {
    Sled(sled::Tree),
    Pg(PgTree),
}

/// Why a transaction's operation failed. Returned by [`TxTree`]'s operations and passed on
/// with `?`: the engine decides whether it means "run the closure again" (a conflict) or an
/// error.
#[derive(Debug)]
pub enum TxFault {
    Sled(sled::transaction::UnabortableTransactionError),
    Pg(PgFault),
}

/// How a transaction's closure ends early: its own error (nothing is written), or a fault of
/// the engine.
#[derive(Debug)]
pub enum TxError<E> {
    Abort(E),
    Fault(TxFault),
}

impl<E> From<TxFault> for TxError<E> {
    fn from(f: TxFault) -> Self {
        Self::Fault(f)
    }
}

/// What a transaction's closure returns.
pub type TxResult<T, E> = Result<T, TxError<E>>;

/// Ends a transaction with the caller's own error: nothing it wrote is kept.
pub fn abort<E>(e: E) -> TxError<E> {
    TxError::Abort(e)
}

/// One tree inside a transaction.
pub enum TxTree<'a> {
    Sled(&'a sled::transaction::TransactionalTree, &'static str),
    Pg(&'a PgTx, &'static str),
}

impl TxTree<'_> {
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, TxFault> {
        match self {
            Self::Sled(t, _) => t
                .get(key.as_ref())
                .map(|v| v.map(|v| v.to_vec()))
                .map_err(TxFault::Sled),
            Self::Pg(tx, name) => tx.get(name, key.as_ref()).map_err(TxFault::Pg),
        }
    }

    /// The values of `keys`, in that order (one round trip on PostgreSQL).
    pub fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, TxFault> {
        match self {
            Self::Sled(t, _) => keys
                .iter()
                .map(|k| t.get(k).map(|v| v.map(|v| v.to_vec())))
                .collect::<Result<_, _>>()
                .map_err(TxFault::Sled),
            Self::Pg(tx, name) => tx.get_many(name, keys).map_err(TxFault::Pg),
        }
    }

    pub fn insert(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<(), TxFault> {
        match self {
            Self::Sled(t, _) => t
                .insert(key.as_ref(), value.as_ref())
                .map(|_| ())
                .map_err(TxFault::Sled),
            Self::Pg(tx, name) => tx
                .insert(name, key.as_ref(), value.as_ref())
                .map_err(TxFault::Pg),
        }
    }

    pub fn remove(&self, key: impl AsRef<[u8]>) -> Result<(), TxFault> {
        match self {
            Self::Sled(t, _) => t.remove(key.as_ref()).map(|_| ()).map_err(TxFault::Sled),
            Self::Pg(tx, name) => tx.remove(name, key.as_ref()).map_err(TxFault::Pg),
        }
    }
}

/// Reads `keys` (each a tree of one transaction and a key of it) ahead, in one round trip on
/// PostgreSQL, so the `get`s of them that follow are answered from memory (the transaction's
/// snapshot does not move, so what was read stays right). Nothing on sled, which reads in
/// memory anyway.
pub fn prefetch(keys: &[(&TxTree<'_>, &[u8])]) -> Result<(), TxFault> {
    let Some((TxTree::Pg(tx, _), _)) = keys.first() else {
        return Ok(());
    };
    let pairs: Vec<(&'static str, &[u8])> = keys
        .iter()
        .filter_map(|(t, k)| match t {
            // Every tree of one transaction shares its `PgTx`.
            TxTree::Pg(other, name) if std::ptr::eq(*other, *tx) => Some((*name, *k)),
            _ => None,
        })
        .collect();
    tx.prefetch(&pairs).map_err(TxFault::Pg)
}

impl Engine {
    /// The sled engine over the database at `path`, with its group-commit thread.
    pub fn open_sled(path: &std::path::Path) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(64 * 1024 * 1024)
            .flush_every_ms(Some(500))
            .open()?;
        let commit =
            crate::commit::GroupCommit::start(db.clone()).map_err(|source| StoreError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Self::Sled { db, commit })
    }

    /// The tree called `name` (created if it does not exist).
    pub fn tree(&self, name: &'static str) -> Result<Tree, StoreError> {
        let inner = match self {
            Self::Sled { db, .. } => TreeInner::Sled(db.open_tree(name)?),
            Self::Pg(pg) => TreeInner::Pg(pg.tree(name)),
        };
        Ok(Tree { name, inner })
    }

    /// Makes every write made before the call durable (see the module doc).
    pub async fn flush(&self) -> Result<(), StoreError> {
        match self {
            Self::Sled { commit, .. } => Ok(commit.flush().await?),
            Self::Pg(_) => Ok(()),
        }
    }

    /// The changes other processes commit from now on (see the module doc). Call it once per
    /// process: each call on PostgreSQL opens a listening connection.
    pub fn changes(&self) -> Changes {
        match self {
            Self::Sled { .. } => Changes(None),
            Self::Pg(pg) => Changes(Some(pg.changes())),
        }
    }

    /// The durations of the engine's durable commits (sled's group flushes, PostgreSQL's
    /// transaction commits), for `vakt_store_flush_duration_seconds`.
    pub fn flush_histogram(&self) -> prometheus_client::metrics::histogram::Histogram {
        match self {
            Self::Sled { commit, .. } => commit.flush_histogram(),
            Self::Pg(pg) => pg.commit_histogram(),
        }
    }

    /// Round trips to the database so far (PostgreSQL; `None` on sled, which has none): for
    /// the round-trip test and the benchmarks.
    pub fn round_trips(&self) -> Option<u64> {
        match self {
            Self::Sled { .. } => None,
            Self::Pg(pg) => Some(pg.round_trips()),
        }
    }

    /// Statements the gathered hot path has sent so far (PostgreSQL; `None` on sled): each
    /// carries one or more callers' requests (`pg_batch`).
    pub fn gathered_statements(&self) -> Option<u64> {
        match self {
            Self::Sled { .. } => None,
            Self::Pg(pg) => Some(pg.gathered_statements()),
        }
    }

    /// How many connections the engine holds for concurrent operations: `None` on sled (no
    /// limit of its own), the pool's size on PostgreSQL.
    pub fn connections(&self) -> Option<usize> {
        match self {
            Self::Sled { .. } => None,
            Self::Pg(pg) => Some(pg.pool_size()),
        }
    }

    /// Transactions PostgreSQL made run again after a serialization failure or deadlock
    /// (`None` on sled, whose conflicts stay inside it): for the tests and the benchmarks.
    pub fn conflicts(&self) -> Option<u64> {
        match self {
            Self::Sled { .. } => None,
            Self::Pg(pg) => Some(pg.conflicts()),
        }
    }

    /// The PostgreSQL engine, if this is one (for its own settings).
    pub fn pg(&self) -> Option<&super::pg::PgEngine> {
        match self {
            Self::Sled { .. } => None,
            Self::Pg(pg) => Some(pg),
        }
    }

    /// Runs `f` as one transaction over `trees` (all of this engine), again on a conflict.
    /// `f` sees the trees in the order given.
    pub fn transaction<T, E, const N: usize>(
        &self,
        trees: [&Tree; N],
        f: impl Fn(&[TxTree<'_>; N]) -> TxResult<T, E>,
    ) -> Result<T, E>
    where
        E: From<StoreError>,
    {
        self.transaction_in(None, trees, f)
    }

    /// [`Engine::transaction`] in turn with every other transaction of the same `turn`, in
    /// this process and in other servers on the database, for transactions that all change
    /// one hot record (an enrollment token's count of uses). Without it, concurrent ones
    /// conflict on that record and all but one run again, each attempt a few round trips,
    /// until some give up. On PostgreSQL the transaction waits for a session-level advisory
    /// lock sent in the same round trip as its BEGIN and first read, so its snapshot is taken
    /// after the previous holder committed (a lock taken inside the transaction would come
    /// after the snapshot and leave the conflict); the lock is released with the COMMIT or
    /// ROLLBACK, or by PostgreSQL when a failed connection is dropped. The wait holds a
    /// pooled connection, so callers in one process should take turns among themselves first
    /// and let only one of them wait here. On sled the same as [`Engine::transaction`]
    /// (one process; its conflicts are retried in memory).
    pub fn transaction_in_turn<T, E, const N: usize>(
        &self,
        turn: Turn,
        trees: [&Tree; N],
        f: impl Fn(&[TxTree<'_>; N]) -> TxResult<T, E>,
    ) -> Result<T, E>
    where
        E: From<StoreError>,
    {
        self.transaction_in(Some(turn), trees, f)
    }

    fn transaction_in<T, E, const N: usize>(
        &self,
        turn: Option<Turn>,
        trees: [&Tree; N],
        f: impl Fn(&[TxTree<'_>; N]) -> TxResult<T, E>,
    ) -> Result<T, E>
    where
        E: From<StoreError>,
    {
        match self {
            Self::Sled { .. } => {
                use sled::Transactional;
                use sled::transaction::{ConflictableTransactionError as C, TransactionError};
                let mut sled_trees = Vec::with_capacity(N);
                for t in trees {
                    match &t.inner {
                        TreeInner::Sled(s) => sled_trees.push(s.clone()),
                        TreeInner::Pg(_) => return Err(E::from(StoreError::MixedEngines)),
                    }
                }
                let r = sled_trees.as_slice().transaction(|views| {
                    // sled gives one view per tree, in the order given.
                    let txs: [TxTree<'_>; N] =
                        std::array::from_fn(|i| TxTree::Sled(&views[i], trees[i].name));
                    f(&txs).map_err(|e| match e {
                        TxError::Abort(e) => C::Abort(e),
                        TxError::Fault(TxFault::Sled(u)) => u.into(),
                        // Only a PostgreSQL tree makes a PostgreSQL fault, and there is none.
                        TxError::Fault(TxFault::Pg(p)) => C::Abort(E::from(p.into())),
                    })
                });
                match r {
                    Ok(v) => Ok(v),
                    Err(TransactionError::Abort(e)) => Err(e),
                    Err(TransactionError::Storage(e)) => Err(E::from(e.into())),
                }
            }
            Self::Pg(pg) => {
                if trees.iter().any(|t| matches!(t.inner, TreeInner::Sled(_))) {
                    return Err(E::from(StoreError::MixedEngines));
                }
                pg.transaction_in(turn, |tx| {
                    let txs: [TxTree<'_>; N] =
                        std::array::from_fn(|i| TxTree::Pg(tx, trees[i].name));
                    f(&txs)
                })
            }
        }
    }
}

impl Tree {
    /// The tree's name, for error messages.
    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, StoreError> {
        match &self.inner {
            TreeInner::Sled(t) => Ok(t.get(key)?.map(|v| v.to_vec())),
            TreeInner::Pg(t) => Ok(t.get(key.as_ref())?),
        }
    }

    /// The values of `keys`, in that order (one query on PostgreSQL).
    pub fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        match &self.inner {
            TreeInner::Sled(t) => keys
                .iter()
                .map(|k| Ok(t.get(k)?.map(|v| v.to_vec())))
                .collect(),
            TreeInner::Pg(t) => Ok(t.get_many(keys)?),
        }
    }

    /// A lookup through an index: the value `index` holds under `key` (a key of this tree),
    /// and this tree's value under it, if any (one query on PostgreSQL). `None` when the
    /// index holds nothing under `key`.
    pub fn get_through(
        &self,
        index: &Tree,
        key: impl AsRef<[u8]>,
    ) -> Result<Option<Indexed>, StoreError> {
        match (&self.inner, &index.inner) {
            (TreeInner::Pg(t), TreeInner::Pg(i)) => Ok(t.get_through(i, key.as_ref())?),
            (TreeInner::Sled(t), TreeInner::Sled(i)) => match i.get(key)? {
                Some(k) => {
                    let v = t.get(&k)?.map(|v| v.to_vec());
                    Ok(Some((k.to_vec(), v)))
                }
                None => Ok(None),
            },
            _ => Err(StoreError::MixedEngines),
        }
    }

    /// [`Tree::get_through`] for the agents' hot path: on PostgreSQL asynchronous and gathered
    /// with other callers' lookups into one statement (`pg_batch`).
    pub async fn get_through_async(
        &self,
        index: &Tree,
        key: impl AsRef<[u8]>,
    ) -> Result<Option<Indexed>, StoreError> {
        match (&self.inner, &index.inner) {
            (TreeInner::Pg(t), TreeInner::Pg(i)) => {
                Ok(t.get_through_async(i, key.as_ref()).await?)
            }
            _ => self.get_through(index, key),
        }
    }

    /// [`Tree::get_many`] for the agents' hot path (see [`Tree::get_through_async`]).
    pub async fn get_many_async(&self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        match &self.inner {
            TreeInner::Pg(t) => Ok(t.get_many_async(keys).await?),
            TreeInner::Sled(_) => self.get_many(keys),
        }
    }

    /// [`Tree::get`] without holding a thread of the caller's runtime: on PostgreSQL the query
    /// runs as a task of the engine's own runtime and is awaited (one round trip, alone, not
    /// gathered with the agents' hot path, so IT's calls never queue behind the fleet's). On
    /// sled the same as `get`, which reads memory or its page cache.
    pub async fn get_async(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, StoreError> {
        match &self.inner {
            TreeInner::Pg(t) => Ok(t.get_async(key.as_ref()).await?),
            TreeInner::Sled(_) => self.get(key),
        }
    }

    /// The records of this tree that an index names: for each entry of `index` whose key
    /// starts with `prefix`, in the index's key order, its value (a key of this tree) and this
    /// tree's record under it. Index entries whose record is gone are left out. Only those
    /// records are read: one query on PostgreSQL, awaited as [`Tree::get_async`] is.
    pub async fn scan_through_async(
        &self,
        index: &Tree,
        prefix: impl AsRef<[u8]>,
    ) -> Result<Vec<Entry>, StoreError> {
        match (&self.inner, &index.inner) {
            (TreeInner::Pg(t), TreeInner::Pg(i)) => {
                Ok(t.scan_through_async(i, prefix.as_ref()).await?)
            }
            (TreeInner::Sled(t), TreeInner::Sled(i)) => {
                let mut out = Vec::new();
                for kv in i.scan_prefix(prefix) {
                    let (_, key) = kv?;
                    if let Some(v) = t.get(&key)? {
                        out.push((key.to_vec(), v.to_vec()));
                    }
                }
                Ok(out)
            }
            _ => Err(StoreError::MixedEngines),
        }
    }

    pub fn insert(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<(), StoreError> {
        match &self.inner {
            TreeInner::Sled(t) => t.insert(key.as_ref(), value.as_ref()).map(|_| ())?,
            TreeInner::Pg(t) => t.apply(&[(key.as_ref(), value.as_ref())], &[])?,
        }
        Ok(())
    }

    /// Every entry whose key starts with `prefix`, in key order (all of them for `b""`).
    pub fn scan_prefix(&self, prefix: impl AsRef<[u8]>) -> Result<Vec<Entry>, StoreError> {
        match &self.inner {
            TreeInner::Sled(t) => t
                .scan_prefix(prefix)
                .map(|kv| {
                    let (k, v) = kv?;
                    Ok((k.to_vec(), v.to_vec()))
                })
                .collect(),
            TreeInner::Pg(t) => Ok(t.scan_prefix(prefix.as_ref())?),
        }
    }

    /// Every entry, in key order.
    pub fn iter(&self) -> Result<Vec<Entry>, StoreError> {
        self.scan_prefix(b"")
    }

    /// Every key, in order.
    pub fn keys(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        match &self.inner {
            TreeInner::Sled(t) => t
                .iter()
                .keys()
                .map(|k| Ok(k?.to_vec()))
                .collect::<Result<_, StoreError>>(),
            TreeInner::Pg(t) => Ok(t.keys()?),
        }
    }

    /// The entry with the greatest key.
    pub fn last(&self) -> Result<Option<Entry>, StoreError> {
        match &self.inner {
            TreeInner::Sled(t) => Ok(t.last()?.map(|(k, v)| (k.to_vec(), v.to_vec()))),
            TreeInner::Pg(t) => Ok(t.last()?),
        }
    }

    /// Inserts the entry `make` builds from the tree's last entry, never overwriting: when
    /// another writer (a task, or another server on the same database) has put anything
    /// under the new key since the last entry was read, the whole append is run again from a
    /// fresh read. So an append-only log keyed by sequence stays one dense chain under
    /// concurrent writers. `make` may be called more than once; its error ends the append
    /// with nothing written. Returns the entry written.
    pub fn append(
        &self,
        mut make: impl FnMut(Option<&Entry>) -> Result<Entry, StoreError>,
    ) -> Result<Entry, StoreError> {
        match &self.inner {
            TreeInner::Sled(t) => loop {
                let last = t.last()?.map(|(k, v)| (k.to_vec(), v.to_vec()));
                let (k, v) = make(last.as_ref())?;
                // Insert only if absent. Each failure means another writer's entry went in,
                // so the loop always makes progress.
                if t.compare_and_swap(&k, None::<&[u8]>, Some(v.as_slice()))?
                    .is_ok()
                {
                    return Ok((k, v));
                }
            },
            TreeInner::Pg(t) => t.append(make),
        }
    }

    /// How many entries the tree holds.
    pub fn len(&self) -> Result<usize, StoreError> {
        match &self.inner {
            TreeInner::Sled(t) => Ok(t.len()),
            TreeInner::Pg(t) => Ok(t.len()?),
        }
    }

    /// Writes `puts` and removes `removes` atomically.
    pub fn apply(&self, puts: &[Entry], removes: &[Vec<u8>]) -> Result<(), StoreError> {
        match &self.inner {
            TreeInner::Sled(t) => {
                let mut batch = sled::Batch::default();
                for k in removes {
                    batch.remove(k.as_slice());
                }
                for (k, v) in puts {
                    batch.insert(k.as_slice(), v.as_slice());
                }
                t.apply_batch(batch)?;
            }
            TreeInner::Pg(t) => {
                let puts: Vec<(&[u8], &[u8])> = puts
                    .iter()
                    .map(|(k, v)| (k.as_slice(), v.as_slice()))
                    .collect();
                let removes: Vec<&[u8]> = removes.iter().map(Vec::as_slice).collect();
                t.apply(&puts, &removes)?;
            }
        }
        Ok(())
    }

    /// Replaces the value under `key` with `f(old)` atomically (`None` removes it; `f` may be
    /// called more than once when another writer gets in between) and returns what was
    /// written.
    pub fn update(
        &self,
        key: impl AsRef<[u8]>,
        f: impl FnMut(Option<&[u8]>) -> Option<Vec<u8>>,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.update_guessing(key, None, f)
    }

    /// [`Tree::update`], starting from `guess`, a value the caller read a moment ago and
    /// believes current: on PostgreSQL a right guess saves the read (the write is conditional
    /// on it, and a wrong one is read and changed again). sled reads in memory anyway.
    pub fn update_guessing(
        &self,
        key: impl AsRef<[u8]>,
        guess: Option<&[u8]>,
        f: impl FnMut(Option<&[u8]>) -> Option<Vec<u8>>,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        match &self.inner {
            TreeInner::Sled(t) => Ok(t.update_and_fetch(key, f)?.map(|v| v.to_vec())),
            TreeInner::Pg(t) => t.update(key.as_ref(), guess, f),
        }
    }

    /// [`Tree::update_guessing`] for the agents' hot path: on PostgreSQL asynchronous, its
    /// compare-and-swap gathered with other callers' into one statement (`pg_batch`).
    pub async fn update_guessing_async<F>(
        &self,
        key: impl AsRef<[u8]>,
        guess: Option<&[u8]>,
        f: F,
    ) -> Result<Option<Vec<u8>>, StoreError>
    where
        F: FnMut(Option<&[u8]>) -> Option<Vec<u8>> + Send,
    {
        match &self.inner {
            TreeInner::Sled(t) => Ok(t.update_and_fetch(key, f)?.map(|v| v.to_vec())),
            TreeInner::Pg(t) => t.update_async(key.as_ref(), guess, f).await,
        }
    }
}
