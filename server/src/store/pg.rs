//! The PostgreSQL engine: the store's trees as rows of one table, `vakt_kv (tree, key,
//! value)`, ordered by `(tree, key)` (bytea compares bytewise, as sled orders keys).
//!
//! Driver: tokio-postgres with deadpool-postgres (ARCHITECTURE.md says why). Transactions are
//! SERIALIZABLE and run again on a serialization failure or deadlock, so a multi-tree
//! transaction means what it means on sled under any number of concurrent writers, in this
//! process or another. Every write is committed before the call returns, and with
//! `synchronous_commit` on (checked at start) a commit is durable: that is the durability
//! point, so [`super::engine::Engine::flush`] has nothing left to do here.
//!
//! The bridge: the store's reads are synchronous and called from tokio tasks. The engine owns
//! a small runtime of its own that drives the connections; a call waits for its query from
//! the caller's thread. On a multi-threaded runtime (the server's) that wait is announced with
//! `block_in_place`, so tokio moves the worker's other tasks elsewhere instead of stalling
//! them; on a current-thread runtime (tests, the CLI) the query is waited for from a scoped
//! thread of its own, which never needs the caller's runtime to make progress. The wait
//! never depends on the caller's runtime, so it cannot deadlock on it.
//!
//! Schema migrations are SQL files in `server/migrations/`, compiled in and applied in order
//! at start under an advisory lock, each recorded in `vakt_schema`. A database whose schema is
//! newer than this build knows is refused before anything is written.

use super::StoreError;
use super::engine::{Entry, Indexed, Turn, TxError, TxFault, TxResult};
use super::pg_batch::{Many, Swap, Through};
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use prometheus_client::metrics::histogram::Histogram;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;
use tokio_postgres::error::SqlState;

/// The schema migrations, in order: (version, SQL). Never edit one that was released; add
/// the next.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("../../migrations/0001_trees.sql")),
    (2, include_str!("../../migrations/0002_changes.sql")),
    (3, include_str!("../../migrations/0003_indexes.sql")),
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i32 = 3;

/// Key of the advisory lock that serialises migrations between servers starting at once.
const MIGRATION_LOCK: i64 = 0x7661_6b74_0001;

/// How many times a transaction runs again after serialization failures before giving up.
const MAX_ATTEMPTS: u32 = 64;

/// How long a transaction waits for its turn's advisory lock before it gives up
/// ([`PgFault::TurnBusy`]). A turn is normally held for a batch's two round trips and a commit
/// (milliseconds); a replica that froze holding one (stopped, or cut off with its connection
/// not yet closed by TCP) would otherwise hold every other replica's enrollments on that turn,
/// and their pooled connections, until it came back.
pub const TURN_WAIT: Duration = Duration::from_secs(10);

/// A failure of PostgreSQL or of the pool, during an operation.
#[derive(Debug, thiserror::Error)]
pub enum PgFault {
    #[error("PostgreSQL: {}", describe(.0))]
    Db(#[from] tokio_postgres::Error),
    #[error("PostgreSQL: {}", pool_message(.0))]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("PostgreSQL: a transaction still conflicted after {0} attempts")]
    Retries(u32),
    #[error("PostgreSQL: a finished transaction was used")]
    Finished,
    /// A turn's advisory lock was held by another session for longer than the engine waits
    /// ([`TURN_WAIT`]); nothing was written.
    #[error(
        "PostgreSQL: another server held this turn for over {} ms (stopped or cut off while \
         enrolling?); nothing was written, try again",
        .0.as_millis()
    )]
    TurnBusy(Duration),
    /// An append found its new key taken: another writer appended first.
    #[error("PostgreSQL: another writer appended to {0} first")]
    Taken(&'static str),
    /// The engine's runtime ended an operation's task (the server is shutting down).
    #[error("PostgreSQL: the operation's task ended: {0}")]
    Task(String),
}

impl PgFault {
    /// Whether running the transaction again may succeed (a serialization failure or a
    /// deadlock another transaction won).
    fn is_conflict(&self) -> bool {
        match self {
            Self::Db(e) => matches!(
                e.code(),
                Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE
                    || *c == SqlState::T_R_DEADLOCK_DETECTED
            ),
            Self::Taken(_) => true,
            _ => false,
        }
    }
}

/// A pool error: the driver's own for a connection that failed, the pool's otherwise.
fn pool_message(e: &deadpool_postgres::PoolError) -> String {
    match e {
        deadpool_postgres::PoolError::Backend(e) => describe(e),
        other => format!("connection pool: {other}"),
    }
}

/// A driver error with its causes: tokio-postgres' own text is only the kind ("db error").
pub(super) fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

/// The files `sslcert` and `sslkey` name, read; a key file others can read is refused, as
/// libpq refuses it (`fsutil::exposed`).
fn read_client_cert(cert: &str, key: &str) -> Result<(Vec<u8>, Vec<u8>), String> {
    let read = |name: &str, path: &str| {
        std::fs::read(path).map_err(|e| format!("--store: {name} {path} cannot be read: {e}"))
    };
    let meta =
        std::fs::metadata(key).map_err(|e| format!("--store: sslkey {key} cannot be read: {e}"))?;
    if let Some(why) = crate::fsutil::exposed(&meta) {
        return Err(format!("--store: sslkey {key}: {why}"));
    }
    Ok((read("sslcert", cert)?, read("sslkey", key)?))
}

/// The engine; cheap to clone.
#[derive(Clone)]
pub struct PgEngine {
    inner: Arc<Inner>,
}

struct Inner {
    /// Drives the connections; `None` only while dropping.
    rt: Option<tokio::runtime::Runtime>,
    pool: Pool,
    /// user@host:port/database, for messages (never the password).
    display: String,
    commits: Histogram,
    /// The connection settings, for the change feed's own connection (outside the pool).
    config: tokio_postgres::Config,
    /// The TLS the URL asks for, for the change feed's connection as for the pool's.
    tls: super::pg_tls::MakeRustls,
    /// This process's `application_name` on every pooled connection, unique per process, so
    /// the change feed can tell this replica's own writes from others' (`pg_feed`).
    origin: String,
    /// Round trips waited for by store operations (a pipelined group counts once), for the
    /// round-trip test and the benchmarks.
    round_trips: AtomicU64,
    /// Transaction attempts that ended in a serialization failure or deadlock and were run
    /// again, for the tests and the benchmarks.
    conflicts: AtomicU64,
    /// The agents' hot path, gathered into shared statements (`pg_batch`).
    batch: super::pg_batch::Batchers,
    /// How long a transaction waits for its turn, in milliseconds ([`TURN_WAIT`] unless set).
    turn_wait_ms: AtomicU64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last store handle may be dropped inside a task, where a blocking shutdown would
        // panic; the connections end with their tasks either way.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// user@host:port/database of a parsed URL.
fn display(cfg: &tokio_postgres::Config) -> String {
    let host = match cfg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{}@{host}:{port}/{}",
        cfg.get_user().unwrap_or(""),
        cfg.get_dbname().unwrap_or("")
    )
}

impl PgEngine {
    /// Connects to the database at `url` (`postgresql://USER@HOST:PORT/DB`) and checks that it
    /// can be used: reachable, `synchronous_commit` on, and a schema no newer than this build.
    /// Writes nothing; [`PgEngine::migrate`] does, once the caller holds its data directory.
    pub fn connect(url: &str) -> Result<Self, StoreError> {
        let bad = |message: String| StoreError::BadUrl { message };
        if !(url.starts_with("postgresql://") || url.starts_with("postgres://")) {
            return Err(bad(
                "--store must be a URL postgresql://USER@HOST:PORT/DATABASE".into(),
            ));
        }
        // sslmode, sslrootcert and pool_size are read here (pg_tls.rs), the rest by the driver.
        let options = super::pg_tls::split(url).map_err(bad)?;
        let mut cfg: tokio_postgres::Config = options
            .url
            .parse()
            .map_err(|e: tokio_postgres::Error| bad(format!("--store: {}", describe(&e))))?;
        cfg.ssl_mode(options.driver_mode());
        if cfg.get_dbname().is_none_or(str::is_empty) {
            return Err(bad(
                "--store names no database (…/DATABASE at the end)".into()
            ));
        }
        if cfg.get_user().is_none_or(str::is_empty) {
            return Err(bad("--store names no user (postgresql://USER@…)".into()));
        }
        // Unique per process: the change feed's payload names the writer by it.
        let origin = format!(
            "vakt-server-{}",
            crate::token::hex(&crate::token::random_bytes::<8>())
        );
        cfg.connect_timeout(Duration::from_secs(10))
            .application_name(&origin)
            // A replica whose database vanished without a reset (a partition) finds out.
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30));
        let config = cfg.clone();
        let display = display(&cfg);
        let root_pem = match &options.sslrootcert {
            Some(super::pg_tls::RootCert::File(path)) => Some(
                std::fs::read(path)
                    .map_err(|e| bad(format!("--store: sslrootcert {path} cannot be read: {e}")))?,
            ),
            _ => None,
        };
        let client_pem = match &options.client_cert {
            Some((cert, key)) => Some(read_client_cert(cert, key).map_err(bad)?),
            None => None,
        };
        let client = client_pem
            .as_ref()
            .map(|(cert, key)| super::pg_tls::ClientPem { cert, key });
        let tls = super::pg_tls::connector(&options, root_pem.as_deref(), client).map_err(bad)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("vakt-pg")
            .enable_all()
            .build()
            .map_err(|source| StoreError::Io {
                path: "PostgreSQL runtime".into(),
                source,
            })?;
        let manager = Manager::from_config(
            cfg,
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(30)))
            .create_timeout(Some(Duration::from_secs(10)))
            .build()
            .map_err(|e| bad(format!("--store: {e}")))?;
        let batch = super::pg_batch::Batchers::start(rt.handle(), &pool);
        let engine = Self {
            inner: Arc::new(Inner {
                batch,
                rt: Some(rt),
                pool,
                display,
                config,
                tls,
                origin,
                commits: Histogram::new(
                    prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 16),
                ),
                round_trips: AtomicU64::new(0),
                conflicts: AtomicU64::new(0),
                turn_wait_ms: AtomicU64::new(
                    u64::try_from(TURN_WAIT.as_millis()).unwrap_or(u64::MAX),
                ),
            }),
        };
        engine.check()?;
        Ok(engine)
    }

    /// The reachability, durability and schema checks of [`PgEngine::connect`].
    fn check(&self) -> Result<(), StoreError> {
        let at = self.inner.display.clone();
        let unreachable = |e: PgFault| StoreError::Unreachable {
            at: at.clone(),
            message: e.to_string(),
        };
        let (sync, found) = self
            .block(async {
                let c = self.inner.pool.get().await?;
                let sync: String = c.query_one("SHOW synchronous_commit", &[]).await?.get(0);
                let found = schema_version(&c).await?;
                Ok::<_, PgFault>((sync, found))
            })
            .map_err(unreachable)?;
        if sync == "off" {
            return Err(StoreError::NotDurable { at });
        }
        if found > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                at,
                found,
                known: SCHEMA_VERSION,
            });
        }
        Ok(())
    }

    /// Applies the migrations the database lacks, in one transaction under an advisory lock
    /// (servers starting together take turns), refusing a schema newer than this build.
    pub fn migrate(&self) -> Result<(), StoreError> {
        let found = self.block(async {
            let mut c = self.inner.pool.get().await?;
            let tx = c.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .await?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS vakt_schema (
                     version integer PRIMARY KEY,
                     applied_at timestamptz NOT NULL DEFAULT now())",
            )
            .await?;
            let found = schema_version(&tx).await?;
            if found > SCHEMA_VERSION {
                // Written nothing: the rollback takes the CREATE IF NOT EXISTS back too.
                return Ok::<_, PgFault>(found);
            }
            for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > found) {
                tx.batch_execute(sql).await?;
                tx.execute("INSERT INTO vakt_schema (version) VALUES ($1)", &[version])
                    .await?;
                tracing::info!(version, "PostgreSQL schema migrated");
            }
            tx.commit().await?;
            Ok(found)
        })?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                at: self.inner.display.clone(),
                found,
                known: SCHEMA_VERSION,
            });
        }
        Ok(())
    }

    /// Waits for `f`, driven by the engine's runtime (see the module doc).
    fn block<F>(&self, f: F) -> F::Output
    where
        F: Future + Send,
        F::Output: Send,
    {
        let Some(rt) = self.inner.rt.as_ref() else {
            // Only `Inner::drop` takes it, and nothing runs after that.
            unreachable!("the PostgreSQL runtime is gone while the engine is in use");
        };
        let handle = rt.handle();
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => {
                tokio::task::block_in_place(|| handle.block_on(f))
            }
            Ok(_) => std::thread::scope(|s| {
                s.spawn(|| handle.block_on(f))
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p))
            }),
            Err(_) => handle.block_on(f),
        }
    }

    /// A connection from the pool.
    fn conn(&self) -> Result<Conn, PgFault> {
        let client = self.block(self.inner.pool.get())?;
        Ok(Conn {
            engine: self.clone(),
            client,
        })
    }

    /// Runs `f` on a pooled connection as a task of the engine's runtime and awaits it: an
    /// asynchronous operation that blocks no thread of the caller's runtime. One round trip.
    async fn alone<T, F, Fut>(&self, f: F) -> Result<T, PgFault>
    where
        T: Send + 'static,
        F: FnOnce(Conn) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, tokio_postgres::Error>> + Send,
    {
        let Some(rt) = self.inner.rt.as_ref() else {
            unreachable!("the PostgreSQL runtime is gone while the engine is in use");
        };
        self.inner.round_trips.fetch_add(1, Ordering::Relaxed);
        let engine = self.clone();
        rt.spawn(async move {
            let client = engine.inner.pool.get().await?;
            Ok(f(Conn { engine, client }).await?)
        })
        .await
        .map_err(|e| PgFault::Task(e.to_string()))?
    }

    /// The gathered statements of the hot path (`pg_batch`); each call counts as one round
    /// trip, which is what its caller waits for.
    fn gathered(&self) -> &super::pg_batch::Batchers {
        self.inner.round_trips.fetch_add(1, Ordering::Relaxed);
        &self.inner.batch
    }

    /// The changes other processes commit to the watched trees, from a LISTEN connection of
    /// its own driven by the engine's runtime (`pg_feed`).
    pub fn changes(&self) -> tokio::sync::mpsc::Receiver<super::engine::Change> {
        let Some(rt) = self.inner.rt.as_ref() else {
            unreachable!("the PostgreSQL runtime is gone while the engine is in use");
        };
        super::pg_feed::start(
            rt.handle(),
            self.inner.config.clone(),
            self.inner.tls.clone(),
            self.inner.origin.clone(),
        )
    }

    /// The pool's size: how many operations can talk to the database at once.
    pub fn pool_size(&self) -> usize {
        self.inner.pool.status().max_size
    }

    /// The tree `name`.
    pub fn tree(&self, name: &'static str) -> PgTree {
        PgTree {
            engine: self.clone(),
            name,
        }
    }

    /// Commit durations, for the flush histogram.
    pub fn commit_histogram(&self) -> Histogram {
        self.inner.commits.clone()
    }

    /// Round trips to PostgreSQL waited for so far by store operations (a pipelined group
    /// counts once): what the round-trip test and the benchmarks count.
    pub fn round_trips(&self) -> u64 {
        self.inner.round_trips.load(Ordering::Relaxed)
    }

    /// Statements the gathered hot path (`pg_batch`) has sent so far; with
    /// [`PgEngine::round_trips`], how much gathering saved.
    pub fn gathered_statements(&self) -> u64 {
        self.inner.batch.statements()
    }

    /// How long a transaction in turn waits for the turn ([`TURN_WAIT`] unless set).
    pub fn turn_wait(&self) -> Duration {
        Duration::from_millis(self.inner.turn_wait_ms.load(Ordering::Relaxed))
    }

    /// Sets how long a transaction in turn waits for another session's turn before it gives
    /// up with [`PgFault::TurnBusy`] (tests shorten it; at least 1 ms).
    pub fn set_turn_wait(&self, wait: Duration) {
        let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
        self.inner.turn_wait_ms.store(ms, Ordering::Relaxed);
    }

    /// Transaction attempts run again after a serialization failure or deadlock, so far.
    pub fn conflicts(&self) -> u64 {
        self.inner.conflicts.load(Ordering::Relaxed)
    }

    /// Runs `f` in a SERIALIZABLE transaction, again (up to [`MAX_ATTEMPTS`] times) when
    /// PostgreSQL reports a serialization failure or a deadlock. Round trips are saved where
    /// the meaning allows (see [`PgTx`]): BEGIN goes out with the first read, the writes are
    /// held and go out with the COMMIT, and a transaction that read nothing sends its writes
    /// as one statement.
    pub fn transaction<T, E>(&self, f: impl FnMut(&PgTx) -> TxResult<T, E>) -> Result<T, E>
    where
        E: From<StoreError>,
    {
        self.transaction_in(None, f)
    }

    /// [`PgEngine::transaction`], each attempt first waiting for `turn`'s advisory lock when
    /// given (see [`super::engine::Engine::transaction_in_turn`] and [`PgTx`]).
    pub fn transaction_in<T, E>(
        &self,
        turn: Option<Turn>,
        mut f: impl FnMut(&PgTx) -> TxResult<T, E>,
    ) -> Result<T, E>
    where
        E: From<StoreError>,
    {
        let fail = |e: PgFault| E::from(StoreError::from(e));
        for attempt in 1..=MAX_ATTEMPTS {
            let tx = PgTx::new(self.conn().map_err(fail)?, turn, self.turn_wait());
            let fault = match f(&tx) {
                Ok(v) => {
                    let began = std::time::Instant::now();
                    match tx.commit() {
                        Ok(()) => {
                            self.inner.commits.observe(began.elapsed().as_secs_f64());
                            return Ok(v);
                        }
                        Err(fault) => fault,
                    }
                }
                Err(TxError::Abort(e)) => {
                    tx.rollback();
                    return Err(e);
                }
                Err(TxError::Fault(TxFault::Pg(fault))) => {
                    tx.rollback();
                    fault
                }
                Err(TxError::Fault(TxFault::Sled(_))) => {
                    tx.rollback();
                    return Err(E::from(StoreError::MixedEngines));
                }
            };
            if !fault.is_conflict() {
                return Err(fail(fault));
            }
            self.inner.conflicts.fetch_add(1, Ordering::Relaxed);
            // Let the transaction that won finish before trying again.
            // (Waited like a query, so a runtime worker is never stalled silently.)
            let pause = Duration::from_micros(200 * u64::from(attempt.min(20)));
            // The timer is the engine runtime's: made inside the future it drives.
            self.block(async move { tokio::time::sleep(pause).await });
        }
        Err(fail(PgFault::Retries(MAX_ATTEMPTS)))
    }
}

/// Rows a [`PgEngine::load_into_empty`] batch brings, as parallel key and value arrays.
const LOAD_BATCH: &str = "INSERT INTO vakt_kv (tree, key, value) \
     SELECT $1, k, v FROM unnest($2::bytea[], $3::bytea[]) AS t(k, v)";

impl PgEngine {
    /// How many rows the database holds in each tree.
    pub fn tree_counts(&self) -> Result<std::collections::BTreeMap<String, u64>, StoreError> {
        let c = self.conn()?;
        let rows = c.block(async {
            c.client
                .query("SELECT tree, count(*) FROM vakt_kv GROUP BY tree", &[])
                .await
        })?;
        Ok(rows
            .iter()
            .map(|r| {
                let n: i64 = r.get(1);
                (r.get::<_, String>(0), u64::try_from(n).unwrap_or(0))
            })
            .collect())
    }

    /// Fills an empty database in one transaction from `batches` (tree, rows), pulled one at
    /// a time so memory holds one batch: all of it or nothing. The table is locked against
    /// other writers (a server starting on it) first, and found non-empty, nothing is written
    /// and `Ok(false)` returned.
    pub fn load_into_empty(
        &self,
        batches: impl Iterator<Item = Result<(String, Vec<Entry>), StoreError>>,
    ) -> Result<bool, StoreError> {
        let tx = PgTx::new(self.conn()?, None, Duration::ZERO);
        // BEGIN goes out here by hand, with the lock; the rows go straight to the connection
        // (the transaction holds no writes of its own), and `commit` sends the COMMIT.
        tx.begun.store(true, Ordering::Relaxed);
        let c = tx.conn()?;
        c.batch("BEGIN; LOCK TABLE vakt_kv IN SHARE ROW EXCLUSIVE MODE")?;
        let any: bool = c.block(async {
            c.client
                .query_one("SELECT EXISTS (SELECT 1 FROM vakt_kv)", &[])
                .await
                .map(|r| r.get(0))
        })?;
        if any {
            tx.rollback();
            return Ok(false);
        }
        for batch in batches {
            let (tree, rows) = batch?;
            let (keys, values): (Vec<Vec<u8>>, Vec<Vec<u8>>) = rows.into_iter().unzip();
            c.block(async {
                c.client
                    .execute(LOAD_BATCH, &[&tree, &keys, &values])
                    .await
                    .map(|_| ())
            })?;
        }
        tx.commit()?;
        Ok(true)
    }
}

/// The schema version recorded in the database (0 for a database never migrated).
async fn schema_version(c: &impl deadpool_postgres::GenericClient) -> Result<i32, PgFault> {
    let exists: bool = c
        .query_one("SELECT to_regclass('vakt_schema') IS NOT NULL", &[])
        .await?
        .get(0);
    if !exists {
        return Ok(0);
    }
    let v: Option<i32> = c
        .query_one("SELECT max(version) FROM vakt_schema", &[])
        .await?
        .get(0);
    Ok(v.unwrap_or(0))
}

const GET: &str = "SELECT value FROM vakt_kv WHERE tree = $1 AND key = $2";
/// Several keys of one tree in one query (the absent ones are simply not returned).
const GET_MANY: &str = "SELECT key, value FROM vakt_kv WHERE tree = $1 AND key = ANY($2)";
/// A record found through an index tree: the index's value is the record's key. The index
/// value comes back even when the record is missing.
const GET_THROUGH: &str = "SELECT i.value, r.value FROM vakt_kv i \
                           LEFT JOIN vakt_kv r ON r.tree = $3 AND r.key = i.value \
                           WHERE i.tree = $1 AND i.key = $2";
const PUT: &str = "INSERT INTO vakt_kv (tree, key, value) VALUES ($1, $2, $3) \
                   ON CONFLICT (tree, key) DO UPDATE SET value = EXCLUDED.value";
/// Insert-only: a row already under the key is left alone and no row is reported written.
const PUT_NEW: &str = "INSERT INTO vakt_kv (tree, key, value) VALUES ($1, $2, $3) \
                       ON CONFLICT (tree, key) DO NOTHING";
/// Compare-and-swap: writes only over the value read.
const SWAP: &str = "UPDATE vakt_kv SET value = $4 WHERE tree = $1 AND key = $2 AND value = $3";
const DELETE: &str = "DELETE FROM vakt_kv WHERE tree = $1 AND key = $2";
/// Compare-and-delete: removes only the value read.
const DELETE_IF: &str = "DELETE FROM vakt_kv WHERE tree = $1 AND key = $2 AND value = $3";
/// A transaction's held writes as one statement: removals ($1 trees, $2 keys) and upserts
/// ($3 trees, $4 keys, $5 values). A key is in one list at most (the latest write wins
/// before they are sent), so the two parts never touch the same row.
const WRITE_ALL: &str = "WITH gone AS (DELETE FROM vakt_kv WHERE (tree, key) IN \
                             (SELECT * FROM unnest($1::text[], $2::bytea[]))) \
                         INSERT INTO vakt_kv (tree, key, value) \
                         SELECT * FROM unnest($3::text[], $4::bytea[], $5::bytea[]) \
                         ON CONFLICT (tree, key) DO UPDATE SET value = EXCLUDED.value";
const SCAN: &str = "SELECT key, value FROM vakt_kv WHERE tree = $1 AND key >= $2 ORDER BY key";
const SCAN_BOUNDED: &str =
    "SELECT key, value FROM vakt_kv WHERE tree = $1 AND key >= $2 AND key < $3 ORDER BY key";
/// Records found through an index tree by a prefix of the index's keys ($1 index, $2 prefix,
/// $3 the prefix's end, $4 the records' tree): each index value is a record's key. Index
/// entries whose record is gone find nothing (inner join).
const SCAN_THROUGH: &str = "SELECT r.key, r.value FROM vakt_kv i \
                            JOIN vakt_kv r ON r.tree = $4 AND r.key = i.value \
                            WHERE i.tree = $1 AND i.key >= $2 AND i.key < $3 ORDER BY i.key";
/// [`SCAN_THROUGH`] for a prefix without an end (empty or all 0xff): $3 is the records' tree.
const SCAN_THROUGH_OPEN: &str = "SELECT r.key, r.value FROM vakt_kv i \
                                 JOIN vakt_kv r ON r.tree = $3 AND r.key = i.value \
                                 WHERE i.tree = $1 AND i.key >= $2 ORDER BY i.key";
const KEYS: &str = "SELECT key FROM vakt_kv WHERE tree = $1 ORDER BY key";
const LAST: &str = "SELECT key, value FROM vakt_kv WHERE tree = $1 ORDER BY key DESC LIMIT 1";
const COUNT: &str = "SELECT count(*) FROM vakt_kv WHERE tree = $1";
const BEGIN: &str = "BEGIN ISOLATION LEVEL SERIALIZABLE";

/// The least key greater than every key starting with `prefix`; `None` when there is none
/// (the prefix is empty or all 0xff).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Runs `a` and `b` together, `a` polled first each time. tokio-postgres sends a request
/// when its future is first polled and the connection answers requests in the order sent,
/// so `a`'s statement reaches the server before `b`'s and both share one round trip, as long
/// as `a` sends its statement on its first poll: a prepared statement, or a simple query
/// (one still to be prepared would send only its Parse first, and `b` would overtake it).
async fn in_order<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
    let (mut a, mut b) = (pin!(a), pin!(b));
    let (mut ra, mut rb) = (None, None);
    std::future::poll_fn(|cx| {
        if ra.is_none()
            && let Poll::Ready(v) = a.as_mut().poll(cx)
        {
            ra = Some(v);
        }
        if rb.is_none()
            && let Poll::Ready(v) = b.as_mut().poll(cx)
        {
            rb = Some(v);
        }
        match (ra.take(), rb.take()) {
            (Some(x), Some(y)) => Poll::Ready((x, y)),
            (x, y) => {
                (ra, rb) = (x, y);
                Poll::Pending
            }
        }
    })
    .await
}

/// The values of `keys` in that order, from the (key, value) rows a query found.
fn in_key_order(keys: &[&[u8]], rows: Vec<Entry>) -> Vec<Option<Vec<u8>>> {
    let mut found: BTreeMap<Vec<u8>, Vec<u8>> = rows.into_iter().collect();
    keys.iter().map(|k| found.remove(*k)).collect()
}

/// A pooled connection with the tree operations; outside a transaction each statement
/// commits on its own.
struct Conn {
    engine: PgEngine,
    client: Object,
}

impl Conn {
    /// Waits for one round trip (or one pipelined group of statements).
    fn block<T: Send>(
        &self,
        f: impl Future<Output = Result<T, tokio_postgres::Error>> + Send,
    ) -> Result<T, PgFault> {
        Ok(self.block_both(f)?)
    }

    /// [`Conn::block`] for a round trip whose caller reads the driver's outcome itself.
    fn block_both<T: Send>(&self, f: impl Future<Output = T> + Send) -> T {
        self.engine
            .inner
            .round_trips
            .fetch_add(1, Ordering::Relaxed);
        self.engine.block(f)
    }

    async fn get_q(
        &self,
        tree: &str,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, tokio_postgres::Error> {
        let c = &self.client;
        let st = c.prepare_cached(GET).await?;
        Ok(c.query_opt(&st, &[&tree, &key]).await?.map(|r| r.get(0)))
    }

    async fn get_many_q(
        &self,
        tree: &str,
        keys: &[&[u8]],
    ) -> Result<Vec<Option<Vec<u8>>>, tokio_postgres::Error> {
        let c = &self.client;
        let st = c.prepare_cached(GET_MANY).await?;
        let rows = c.query(&st, &[&tree, &keys]).await?;
        Ok(in_key_order(
            keys,
            rows.iter().map(|r| (r.get(0), r.get(1))).collect(),
        ))
    }

    fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>, PgFault> {
        self.block(self.get_q(tree, key))
    }

    /// The values of `pairs` (tree, key) in that order, in one query.
    async fn get_pairs_q(
        &self,
        pairs: &[(&'static str, &[u8])],
    ) -> Result<Vec<Option<Vec<u8>>>, tokio_postgres::Error> {
        let c = &self.client;
        let st = c.prepare_cached(super::pg_batch::GET).await?;
        let (trees, keys): (Vec<&str>, Vec<&[u8]>) = pairs.iter().copied().unzip();
        let rows = c.query(&st, &[&trees, &keys]).await?;
        let mut out = vec![None; pairs.len()];
        for row in rows {
            if let Some(i) = super::pg_batch::place(row.get(0), out.len()) {
                out[i] = Some(row.get(1));
            }
        }
        Ok(out)
    }

    fn get_many(&self, tree: &str, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, PgFault> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.block(self.get_many_q(tree, keys))
    }

    async fn get_through_q(
        &self,
        index: &str,
        key: &[u8],
        tree: &str,
    ) -> Result<Option<Indexed>, tokio_postgres::Error> {
        let c = &self.client;
        let st = c.prepare_cached(GET_THROUGH).await?;
        Ok(c.query_opt(&st, &[&index, &key, &tree])
            .await?
            .map(|r| (r.get(0), r.get(1))))
    }

    fn get_through(&self, index: &str, key: &[u8], tree: &str) -> Result<Option<Indexed>, PgFault> {
        self.block(self.get_through_q(index, key, tree))
    }

    fn put(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<(), PgFault> {
        let c = &self.client;
        self.block(async {
            let st = c.prepare_cached(PUT).await?;
            c.execute(&st, &[&tree, &key, &value]).await.map(|_| ())
        })
    }

    /// Runs `sql` with `params` and says whether it touched a row (the conditional writes).
    fn changed_one(
        &self,
        sql: &'static str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<bool, PgFault> {
        self.block(self.changed_q(sql, params))
    }

    async fn changed_q(
        &self,
        sql: &'static str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<bool, tokio_postgres::Error> {
        let c = &self.client;
        let st = c.prepare_cached(sql).await?;
        Ok(c.execute(&st, params).await? == 1)
    }

    fn delete(&self, tree: &str, key: &[u8]) -> Result<(), PgFault> {
        self.changed_one(DELETE, &[&tree, &key]).map(|_| ())
    }

    fn scan(&self, tree: &str, prefix: &[u8]) -> Result<Vec<Entry>, PgFault> {
        let c = &self.client;
        let end = prefix_end(prefix);
        self.block(async {
            let rows = match &end {
                Some(end) => {
                    let st = c.prepare_cached(SCAN_BOUNDED).await?;
                    c.query(&st, &[&tree, &prefix, end]).await?
                }
                None => {
                    let st = c.prepare_cached(SCAN).await?;
                    c.query(&st, &[&tree, &prefix]).await?
                }
            };
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }

    async fn scan_through_q(
        &self,
        index: &str,
        prefix: &[u8],
        tree: &str,
    ) -> Result<Vec<Entry>, tokio_postgres::Error> {
        let c = &self.client;
        let rows = match prefix_end(prefix) {
            Some(end) => {
                let st = c.prepare_cached(SCAN_THROUGH).await?;
                c.query(&st, &[&index, &prefix, &end, &tree]).await?
            }
            None => {
                let st = c.prepare_cached(SCAN_THROUGH_OPEN).await?;
                c.query(&st, &[&index, &prefix, &tree]).await?
            }
        };
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    fn keys(&self, tree: &str) -> Result<Vec<Vec<u8>>, PgFault> {
        let c = &self.client;
        self.block(async {
            let st = c.prepare_cached(KEYS).await?;
            Ok(c.query(&st, &[&tree])
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect())
        })
    }

    async fn last_q(&self, tree: &str) -> Result<Option<Entry>, tokio_postgres::Error> {
        let c = &self.client;
        let st = c.prepare_cached(LAST).await?;
        Ok(c.query_opt(&st, &[&tree])
            .await?
            .map(|r| (r.get(0), r.get(1))))
    }

    fn last(&self, tree: &str) -> Result<Option<Entry>, PgFault> {
        self.block(self.last_q(tree))
    }

    fn count(&self, tree: &str) -> Result<usize, PgFault> {
        let c = &self.client;
        let n: i64 = self.block(async {
            let st = c.prepare_cached(COUNT).await?;
            Ok(c.query_one(&st, &[&tree]).await?.get(0))
        })?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// Sends `writes` (see [`WRITE_ALL`]) as one statement, followed in the same round trip
    /// by `then` (COMMIT) when given. A failed write aborts the transaction, so the COMMIT
    /// behind it commits nothing; the write's error is the one returned.
    fn write_all(&self, writes: &Writes, then: Option<&str>) -> Result<(), PgFault> {
        let (mut gone_t, mut gone_k, mut put_t, mut put_k, mut put_v) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for ((tree, key), value) in writes {
            match value {
                Some(v) => {
                    put_t.push(*tree);
                    put_k.push(key.as_slice());
                    put_v.push(v.as_slice());
                }
                None => {
                    gone_t.push(*tree);
                    gone_k.push(key.as_slice());
                }
            }
        }
        let c = &self.client;
        self.block(async {
            // Prepared (once per connection) before the pipeline: a statement still being
            // prepared would go out behind the COMMIT, outside the transaction.
            let st = c.prepare_cached(WRITE_ALL).await?;
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] =
                [&gone_t, &gone_k, &put_t, &put_k, &put_v];
            let write = c.execute(&st, &params);
            match then {
                None => write.await.map(|_| ()),
                Some(sql) => {
                    let (w, t) = in_order(write, c.batch_execute(sql)).await;
                    w.and(t)
                }
            }
        })
    }

    fn batch(&self, sql: &str) -> Result<(), PgFault> {
        self.block(self.client.batch_execute(sql))
    }
}

/// A transaction's writes not sent yet: (tree, key) → the value, or `None` for a removal.
type Writes = BTreeMap<(&'static str, Vec<u8>), Option<Vec<u8>>>;

/// One transaction and the connection it runs on. Nothing is sent when it is made: BEGIN
/// goes out in the same round trip as its first read, and its writes are held (its own reads
/// see them) and sent with the COMMIT, so a read-modify-write costs two round trips however
/// many keys it writes. A transaction that read nothing sends its writes as one statement
/// (atomic on its own) without BEGIN or COMMIT.
///
/// With a [`Turn`], the session-level advisory lock goes out first in that same round trip
/// (PostgreSQL takes the snapshot at the first statement after BEGIN, so after the lock), and
/// its release goes out behind the COMMIT or ROLLBACK, again in the same round trip.
///
/// Dropped without a COMMIT or a ROLLBACK that worked, its connection leaves the pool and
/// closes, so PostgreSQL rolls the transaction back and releases its turn, and no other
/// caller gets a connection in the middle of one.
pub struct PgTx {
    conn: Option<Conn>,
    /// Whether BEGIN has been sent.
    begun: AtomicBool,
    writes: Mutex<Writes>,
    /// Values read ahead ([`PgTx::prefetch`]), `None` for a key found absent.
    read: Mutex<Writes>,
    /// The advisory lock taken with BEGIN and released with the end, if any.
    turn: Option<Turn>,
    /// How long to wait for `turn` before giving up.
    turn_wait: Duration,
}

impl PgTx {
    fn new(conn: Conn, turn: Option<Turn>, turn_wait: Duration) -> Self {
        Self {
            conn: Some(conn),
            begun: AtomicBool::new(false),
            writes: Mutex::new(BTreeMap::new()),
            read: Mutex::new(BTreeMap::new()),
            turn,
            turn_wait,
        }
    }

    /// `end` (COMMIT or ROLLBACK), followed in the same simple query by the release of the
    /// turn, if the transaction has one. A failed COMMIT skips the release; the caller then
    /// drops the connection, which releases it.
    fn end_sql(&self, end: &str) -> String {
        match self.turn {
            None => end.to_string(),
            Some(t) => format!("{end}; SELECT pg_advisory_unlock({}, {})", t.space, t.key),
        }
    }

    fn conn(&self) -> Result<&Conn, PgFault> {
        // Only `commit` and `rollback` take the connection, and they consume the transaction.
        self.conn.as_ref().ok_or(PgFault::Finished)
    }

    fn writes(&self) -> std::sync::MutexGuard<'_, Writes> {
        // A panic while holding it leaves a map that is still whole.
        self.writes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn read(&self) -> std::sync::MutexGuard<'_, Writes> {
        self.read
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What the transaction already knows of `key`: its own held write, else a value read
    /// ahead; `None` when it must ask the database.
    fn known(&self, tree: &'static str, key: &[u8]) -> Option<Option<Vec<u8>>> {
        let k = (tree, key.to_vec());
        if let Some(v) = self.writes().get(&k) {
            return Some(v.clone());
        }
        self.read().get(&k).cloned()
    }

    /// Waits for `q`, sent behind BEGIN in the same round trip if this is the first
    /// statement. BEGIN's own failure is returned before anything else is sent.
    fn run<T: Send>(
        &self,
        q: impl Future<Output = Result<T, tokio_postgres::Error>> + Send,
    ) -> Result<T, PgFault> {
        let conn = self.conn()?;
        if self.begun.swap(true, Ordering::Relaxed) {
            return conn.block(q);
        }
        let c = &conn.client;
        match self.turn {
            None => conn.block(async {
                let (b, r) = in_order(c.batch_execute(BEGIN), q).await;
                b?;
                r
            }),
            Some(t) => {
                // Blocks in PostgreSQL until the turn is free, at most `turn_wait`; BEGIN and
                // `q` wait behind it. The three statements are one implicit transaction, so a
                // lock that times out also undoes the SET, and one that is taken keeps the
                // session's own timeout for everything after.
                let lock = format!(
                    "SET lock_timeout = {}; SELECT pg_advisory_lock({}, {}); RESET lock_timeout",
                    self.turn_wait.as_millis().max(1),
                    t.space,
                    t.key
                );
                let (l, rest) = conn.block_both(async {
                    let (l, (b, r)) =
                        in_order(c.batch_execute(&lock), in_order(c.batch_execute(BEGIN), q)).await;
                    (l, b.and(r))
                });
                match l {
                    // BEGIN and `q` ran without the turn: the caller rolls back.
                    Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
                        Err(PgFault::TurnBusy(self.turn_wait))
                    }
                    Err(e) => Err(e.into()),
                    Ok(()) => Ok(rest?),
                }
            }
        }
    }

    /// Sends the held writes with the COMMIT; on success the connection goes back to the
    /// pool.
    fn commit(mut self) -> Result<(), PgFault> {
        let writes = std::mem::take(&mut *self.writes());
        let begun = self.begun.load(Ordering::Relaxed);
        let end = self.end_sql("COMMIT");
        let conn = self.conn()?;
        match (begun, writes.is_empty()) {
            (false, true) => {}
            (false, false) => conn.write_all(&writes, None)?,
            (true, true) => conn.batch(&end)?,
            (true, false) => conn.write_all(&writes, Some(&end))?,
        }
        drop(self.conn.take());
        Ok(())
    }

    fn rollback(mut self) {
        if self.begun.load(Ordering::Relaxed) {
            // A failed ROLLBACK leaves the connection here, and dropping takes it out of
            // the pool.
            let end = self.end_sql("ROLLBACK");
            if self.conn().and_then(|c| c.batch(&end)).is_err() {
                return;
            }
        }
        drop(self.conn.take());
    }

    pub fn get(&self, tree: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, PgFault> {
        if let Some(v) = self.known(tree, key) {
            return Ok(v);
        }
        let conn = self.conn()?;
        self.run(conn.get_q(tree, key))
    }

    /// Reads `keys` (tree, key) ahead in one round trip and keeps what it found (see
    /// [`super::engine::prefetch`]); keys the transaction already knows are not asked for.
    pub fn prefetch(&self, keys: &[(&'static str, &[u8])]) -> Result<(), PgFault> {
        let wanted: Vec<(&'static str, &[u8])> = keys
            .iter()
            .filter(|&&(t, k)| self.known(t, k).is_none())
            .copied()
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let conn = self.conn()?;
        let found = self.run(conn.get_pairs_q(&wanted))?;
        let mut read = self.read();
        for ((tree, key), value) in wanted.into_iter().zip(found) {
            read.insert((tree, key.to_vec()), value);
        }
        Ok(())
    }

    /// The values of `keys` in that order, in one round trip.
    pub fn get_many(
        &self,
        tree: &'static str,
        keys: &[&[u8]],
    ) -> Result<Vec<Option<Vec<u8>>>, PgFault> {
        let held: Vec<Option<Option<Vec<u8>>>> = keys.iter().map(|k| self.known(tree, k)).collect();
        let unheld: Vec<&[u8]> = keys
            .iter()
            .zip(&held)
            .filter(|(_, h)| h.is_none())
            .map(|(k, _)| *k)
            .collect();
        let conn = self.conn()?;
        let mut read = if unheld.is_empty() {
            Vec::new()
        } else {
            self.run(conn.get_many_q(tree, &unheld))?
        }
        .into_iter();
        Ok(held
            .into_iter()
            .map(|h| match h {
                Some(v) => v,
                None => read.next().flatten(),
            })
            .collect())
    }

    pub fn insert(&self, tree: &'static str, key: &[u8], value: &[u8]) -> Result<(), PgFault> {
        self.writes()
            .insert((tree, key.to_vec()), Some(value.to_vec()));
        Ok(())
    }

    pub fn remove(&self, tree: &'static str, key: &[u8]) -> Result<(), PgFault> {
        self.writes().insert((tree, key.to_vec()), None);
        Ok(())
    }

    /// The tree's last entry as the transaction sees it. Only for a transaction that has
    /// held no writes to `tree` (the append's).
    fn last(&self, tree: &'static str) -> Result<Option<Entry>, PgFault> {
        let conn = self.conn()?;
        self.run(conn.last_q(tree))
    }

    /// Writes `value` under `key` at once, only if the key holds nothing; whether it did.
    fn put_new(&self, tree: &'static str, key: &[u8], value: &[u8]) -> Result<bool, PgFault> {
        let conn = self.conn()?;
        let c = &conn.client;
        // Written around the held writes: forget anything read ahead of it.
        self.read().remove(&(tree, key.to_vec()));
        self.run(async {
            let st = c.prepare_cached(PUT_NEW).await?;
            Ok(c.execute(&st, &[&tree, &key, &value]).await? == 1)
        })
    }
}

impl Drop for PgTx {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            drop(Object::take(c.client));
        }
    }
}

/// One tree: the rows of `vakt_kv` with `tree = name`.
#[derive(Clone)]
pub struct PgTree {
    engine: PgEngine,
    name: &'static str,
}

impl PgTree {
    fn conn(&self) -> Result<Conn, PgFault> {
        self.engine.conn()
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, PgFault> {
        self.conn()?.get(self.name, key)
    }

    /// The values of `keys` in that order, in one query.
    pub fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, PgFault> {
        self.conn()?.get_many(self.name, keys)
    }

    /// The value `index` holds under `key`, and this tree's value under that, in one query.
    pub fn get_through(&self, index: &PgTree, key: &[u8]) -> Result<Option<Indexed>, PgFault> {
        self.conn()?.get_through(index.name, key, self.name)
    }

    pub fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<Entry>, PgFault> {
        self.conn()?.scan(self.name, prefix)
    }

    pub fn keys(&self) -> Result<Vec<Vec<u8>>, PgFault> {
        self.conn()?.keys(self.name)
    }

    pub fn last(&self) -> Result<Option<Entry>, PgFault> {
        self.conn()?.last(self.name)
    }

    pub fn len(&self) -> Result<usize, PgFault> {
        self.conn()?.count(self.name)
    }

    /// Writes and removes atomically: one statement (a transaction that reads nothing sends
    /// its writes as one).
    pub fn apply(&self, puts: &[(&[u8], &[u8])], removes: &[&[u8]]) -> Result<(), StoreError> {
        match (puts, removes) {
            ([(k, v)], []) => Ok(self.conn()?.put(self.name, k, v)?),
            ([], [k]) => Ok(self.conn()?.delete(self.name, k)?),
            _ => self.engine.transaction::<(), StoreError>(|tx| {
                for k in removes {
                    tx.remove(self.name, k).map_err(TxFault::Pg)?;
                }
                for (k, v) in puts {
                    tx.insert(self.name, k, v).map_err(TxFault::Pg)?;
                }
                Ok(())
            }),
        }
    }

    /// Reads the last entry and inserts the next in one SERIALIZABLE transaction (see
    /// [`super::engine::Tree::append`]). A writer that got in between makes either a
    /// serialization failure or a taken key; both run the whole append again.
    pub fn append(
        &self,
        mut make: impl FnMut(Option<&Entry>) -> Result<Entry, StoreError>,
    ) -> Result<Entry, StoreError> {
        self.engine.transaction::<_, StoreError>(|tx| {
            let last = tx.last(self.name).map_err(TxFault::Pg)?;
            let (k, v) = make(last.as_ref()).map_err(TxError::Abort)?;
            if !tx.put_new(self.name, &k, &v).map_err(TxFault::Pg)? {
                return Err(TxFault::Pg(PgFault::Taken(self.name)).into());
            }
            Ok((k, v))
        })
    }

    /// Read, change and write one value (see [`super::engine::Tree::update`]) as a
    /// compare-and-swap: the write is conditional on the value read, and when another writer
    /// got in between, it is read and changed again. Two round trips, one when `guess` (a
    /// value the caller believes current) is right; none written when the value is unchanged.
    pub fn update(
        &self,
        key: &[u8],
        guess: Option<&[u8]>,
        mut f: impl FnMut(Option<&[u8]>) -> Option<Vec<u8>>,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let conn = self.conn()?;
        let name = self.name;
        let mut guessed = guess.map(<[u8]>::to_vec);
        for _ in 0..MAX_ATTEMPTS {
            let is_guess = guessed.is_some();
            let old = match guessed.take() {
                Some(g) => Some(g),
                None => conn.get(name, key)?,
            };
            let new = f(old.as_deref());
            let done = match (&old, &new) {
                // Unchanged: nothing to write, once the value is known to be current.
                (Some(o), Some(n)) if o == n => !is_guess,
                (None, None) => true,
                (Some(o), Some(n)) => conn.changed_one(SWAP, &[&name, &key, o, n])?,
                (None, Some(n)) => conn.changed_one(PUT_NEW, &[&name, &key, n])?,
                (Some(o), None) => conn.changed_one(DELETE_IF, &[&name, &key, o])?,
            };
            if done {
                return Ok(new);
            }
        }
        Err(PgFault::Retries(MAX_ATTEMPTS).into())
    }
}

/// Asynchronous operations, which hold no thread of the caller's runtime: the agents' hot
/// path, gathered with other callers' requests into shared statements (`pg_batch`; a gathered
/// statement that failed is run again alone, so the caller gets the real outcome or the real
/// error), and IT's reads, each alone.
impl PgTree {
    /// [`PgTree::get_through`], gathered.
    pub async fn get_through_async(
        &self,
        index: &PgTree,
        key: &[u8],
    ) -> Result<Option<Indexed>, PgFault> {
        let req = Through {
            index: index.name,
            key: key.to_vec(),
            tree: self.name,
        };
        if let Ok(found) = self.engine.gathered().through.call(req).await {
            return Ok(found);
        }
        let (index, key, tree) = (index.name, key.to_vec(), self.name);
        self.engine
            .alone(move |c| async move { c.get_through_q(index, &key, tree).await })
            .await
    }

    /// [`PgTree::get_many`], gathered.
    pub async fn get_many_async(&self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, PgFault> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<Vec<u8>> = keys.iter().map(|k| k.to_vec()).collect();
        let req = Many {
            tree: self.name,
            keys: keys.clone(),
        };
        if let Ok(found) = self.engine.gathered().many.call(req).await {
            return Ok(found);
        }
        let tree = self.name;
        self.engine
            .alone(move |c| async move {
                let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
                c.get_many_q(tree, &refs).await
            })
            .await
    }

    /// [`PgTree::get`], awaited on the engine's runtime (alone: IT's reads, not the hot path).
    pub async fn get_async(&self, key: &[u8]) -> Result<Option<Vec<u8>>, PgFault> {
        let (tree, key) = (self.name, key.to_vec());
        self.engine
            .alone(move |c| async move { c.get_q(tree, &key).await })
            .await
    }

    /// The records of this tree that `index` names under `prefix` (see
    /// [`super::engine::Tree::scan_through_async`]), in one query awaited on the engine's
    /// runtime.
    pub async fn scan_through_async(
        &self,
        index: &PgTree,
        prefix: &[u8],
    ) -> Result<Vec<Entry>, PgFault> {
        let (index, tree, prefix) = (index.name, self.name, prefix.to_vec());
        self.engine
            .alone(move |c| async move { c.scan_through_q(index, &prefix, tree).await })
            .await
    }

    /// A conditional write run alone: `sql` is [`SWAP`], [`PUT_NEW`] or [`DELETE_IF`], with
    /// the tree and key and then `values`.
    async fn changed_alone(
        &self,
        sql: &'static str,
        key: &[u8],
        values: Vec<Vec<u8>>,
    ) -> Result<bool, PgFault> {
        let (tree, key) = (self.name, key.to_vec());
        self.engine
            .alone(move |c| async move {
                let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&tree, &key];
                params.extend(
                    values
                        .iter()
                        .map(|v| v as &(dyn tokio_postgres::types::ToSql + Sync)),
                );
                c.changed_q(sql, &params).await
            })
            .await
    }

    /// [`PgTree::update`], asynchronous, its compare-and-swap gathered.
    pub async fn update_async<F>(
        &self,
        key: &[u8],
        guess: Option<&[u8]>,
        mut f: F,
    ) -> Result<Option<Vec<u8>>, StoreError>
    where
        F: FnMut(Option<&[u8]>) -> Option<Vec<u8>> + Send,
    {
        let mut guessed = guess.map(<[u8]>::to_vec);
        for _ in 0..MAX_ATTEMPTS {
            let is_guess = guessed.is_some();
            let old = match guessed.take() {
                Some(g) => Some(g),
                None => self.get_many_async(&[key]).await?.pop().flatten(),
            };
            let new = f(old.as_deref());
            let done = match (old, &new) {
                // Unchanged: nothing to write, once the value is known to be current.
                (Some(o), Some(n)) if o == *n => !is_guess,
                (None, None) => true,
                (Some(o), Some(n)) => {
                    let req = Swap {
                        tree: self.name,
                        key: key.to_vec(),
                        old: o.clone(),
                        new: n.clone(),
                    };
                    match self.engine.gathered().swap.call(req).await {
                        Ok(written) => written,
                        Err(_) => self.changed_alone(SWAP, key, vec![o, n.clone()]).await?,
                    }
                }
                (None, Some(n)) => self.changed_alone(PUT_NEW, key, vec![n.clone()]).await?,
                (Some(o), None) => self.changed_alone(DELETE_IF, key, vec![o]).await?,
            };
            if done {
                return Ok(new);
            }
        }
        Err(PgFault::Retries(MAX_ATTEMPTS).into())
    }
}
