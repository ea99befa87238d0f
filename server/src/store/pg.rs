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
use super::engine::{Entry, TxError, TxFault, TxResult};
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use prometheus_client::metrics::histogram::Histogram;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::error::SqlState;

/// The schema migrations, in order: (version, SQL). Never edit one that was released; add
/// the next.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("../../migrations/0001_trees.sql")),
    (2, include_str!("../../migrations/0002_changes.sql")),
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i32 = 2;

/// Key of the advisory lock that serialises migrations between servers starting at once.
const MIGRATION_LOCK: i64 = 0x7661_6b74_0001;

/// How many times a transaction runs again after serialization failures before giving up.
const MAX_ATTEMPTS: u32 = 64;

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
    /// An append found its new key taken: another writer appended first.
    #[error("PostgreSQL: another writer appended to {0} first")]
    Taken(&'static str),
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
        let tls = super::pg_tls::connector(&options, root_pem.as_deref()).map_err(bad)?;
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
        let engine = Self {
            inner: Arc::new(Inner {
                rt: Some(rt),
                pool,
                display,
                config,
                tls,
                origin,
                commits: Histogram::new(
                    prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 16),
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

    /// Runs `f` in a SERIALIZABLE transaction, again (up to [`MAX_ATTEMPTS`] times) when
    /// PostgreSQL reports a serialization failure or a deadlock.
    pub fn transaction<T, E>(&self, mut f: impl FnMut(&PgTx) -> TxResult<T, E>) -> Result<T, E>
    where
        E: From<StoreError>,
    {
        let fail = |e: PgFault| E::from(StoreError::from(e));
        for attempt in 1..=MAX_ATTEMPTS {
            let tx = PgTx {
                conn: Some(self.conn().map_err(fail)?),
            };
            tx.conn()
                .and_then(|c| c.batch("BEGIN ISOLATION LEVEL SERIALIZABLE"))
                .map_err(fail)?;
            let fault = match f(&tx) {
                Ok(v) => {
                    let began = std::time::Instant::now();
                    match tx.finish("COMMIT") {
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
        let tx = PgTx {
            conn: Some(self.conn()?),
        };
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
        tx.finish("COMMIT")?;
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
const GET_FOR_UPDATE: &str = "SELECT value FROM vakt_kv WHERE tree = $1 AND key = $2 FOR UPDATE";
const PUT: &str = "INSERT INTO vakt_kv (tree, key, value) VALUES ($1, $2, $3) \
                   ON CONFLICT (tree, key) DO UPDATE SET value = EXCLUDED.value";
/// Insert-only: a row already under the key is left alone and no row is reported written.
const PUT_NEW: &str = "INSERT INTO vakt_kv (tree, key, value) VALUES ($1, $2, $3) \
                       ON CONFLICT (tree, key) DO NOTHING";
const DELETE: &str = "DELETE FROM vakt_kv WHERE tree = $1 AND key = $2";
const SCAN: &str = "SELECT key, value FROM vakt_kv WHERE tree = $1 AND key >= $2 ORDER BY key";
const SCAN_BOUNDED: &str =
    "SELECT key, value FROM vakt_kv WHERE tree = $1 AND key >= $2 AND key < $3 ORDER BY key";
const KEYS: &str = "SELECT key FROM vakt_kv WHERE tree = $1 ORDER BY key";
const LAST: &str = "SELECT key, value FROM vakt_kv WHERE tree = $1 ORDER BY key DESC LIMIT 1";
const COUNT: &str = "SELECT count(*) FROM vakt_kv WHERE tree = $1";

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

/// A pooled connection with the tree operations; outside a transaction each statement
/// commits on its own.
struct Conn {
    engine: PgEngine,
    client: Object,
}

impl Conn {
    fn block<T: Send>(
        &self,
        f: impl Future<Output = Result<T, tokio_postgres::Error>> + Send,
    ) -> Result<T, PgFault> {
        Ok(self.engine.block(f)?)
    }

    fn get(&self, tree: &str, key: &[u8], lock: bool) -> Result<Option<Vec<u8>>, PgFault> {
        let c = &self.client;
        let sql = if lock { GET_FOR_UPDATE } else { GET };
        self.block(async {
            let st = c.prepare_cached(sql).await?;
            Ok(c.query_opt(&st, &[&tree, &key]).await?.map(|r| r.get(0)))
        })
    }

    fn put(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<(), PgFault> {
        let c = &self.client;
        self.block(async {
            let st = c.prepare_cached(PUT).await?;
            c.execute(&st, &[&tree, &key, &value]).await.map(|_| ())
        })
    }

    /// Writes `value` under `key` only if the key holds nothing; whether it did.
    fn put_new(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<bool, PgFault> {
        let c = &self.client;
        self.block(async {
            let st = c.prepare_cached(PUT_NEW).await?;
            Ok(c.execute(&st, &[&tree, &key, &value]).await? == 1)
        })
    }

    fn delete(&self, tree: &str, key: &[u8]) -> Result<(), PgFault> {
        let c = &self.client;
        self.block(async {
            let st = c.prepare_cached(DELETE).await?;
            c.execute(&st, &[&tree, &key]).await.map(|_| ())
        })
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

    fn last(&self, tree: &str) -> Result<Option<Entry>, PgFault> {
        let c = &self.client;
        self.block(async {
            let st = c.prepare_cached(LAST).await?;
            Ok(c.query_opt(&st, &[&tree])
                .await?
                .map(|r| (r.get(0), r.get(1))))
        })
    }

    fn count(&self, tree: &str) -> Result<usize, PgFault> {
        let c = &self.client;
        let n: i64 = self.block(async {
            let st = c.prepare_cached(COUNT).await?;
            Ok(c.query_one(&st, &[&tree]).await?.get(0))
        })?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    fn batch(&self, sql: &str) -> Result<(), PgFault> {
        self.block(self.client.batch_execute(sql))
    }
}

/// One open transaction and the connection it runs on. Dropped without a COMMIT or a
/// ROLLBACK that worked, its connection leaves the pool and closes, so PostgreSQL rolls the
/// transaction back and no other caller gets a connection in the middle of one.
pub struct PgTx {
    conn: Option<Conn>,
}

impl PgTx {
    fn conn(&self) -> Result<&Conn, PgFault> {
        // Only `finish` takes the connection, and it consumes the transaction.
        self.conn.as_ref().ok_or(PgFault::Finished)
    }

    /// COMMIT or ROLLBACK; on success the connection goes back to the pool.
    fn finish(mut self, sql: &str) -> Result<(), PgFault> {
        self.conn()?.batch(sql)?;
        drop(self.conn.take());
        Ok(())
    }

    fn rollback(self) {
        // A failed ROLLBACK leaves the connection here, and dropping takes it out of the pool.
        let _ = self.finish("ROLLBACK");
    }

    pub fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>, PgFault> {
        self.conn()?.get(tree, key, false)
    }

    pub fn insert(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<(), PgFault> {
        self.conn()?.put(tree, key, value)
    }

    pub fn remove(&self, tree: &str, key: &[u8]) -> Result<(), PgFault> {
        self.conn()?.delete(tree, key)
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
        self.conn()?.get(self.name, key, false)
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

    /// Writes and removes atomically: one statement on its own, more in one transaction.
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
            let conn = tx.conn().map_err(TxFault::Pg)?;
            let last = conn.last(self.name).map_err(TxFault::Pg)?;
            let (k, v) = make(last.as_ref()).map_err(TxError::Abort)?;
            if !conn.put_new(self.name, &k, &v).map_err(TxFault::Pg)? {
                return Err(TxFault::Pg(PgFault::Taken(self.name)).into());
            }
            Ok((k, v))
        })
    }

    /// Read, change and write one value in a transaction holding its row (see
    /// [`super::engine::Tree::update`]).
    pub fn update(
        &self,
        key: &[u8],
        mut f: impl FnMut(Option<&[u8]>) -> Option<Vec<u8>>,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.engine.transaction::<_, StoreError>(|tx| {
            let conn = tx.conn().map_err(TxFault::Pg)?;
            let old = conn.get(self.name, key, true).map_err(TxFault::Pg)?;
            let new = f(old.as_deref());
            match (&old, &new) {
                (_, Some(v)) => conn.put(self.name, key, v).map_err(TxFault::Pg)?,
                (Some(_), None) => conn.delete(self.name, key).map_err(TxFault::Pg)?,
                (None, None) => {}
            }
            Ok(new)
        })
    }
}
