//! The engine half of `vakt-server migrate`: every tree of an embedded (sled) store copied as
//! it is into an empty PostgreSQL database. The engines keep the same bytes under the same
//! keys (`engine.rs`), so a generic copy of all trees is the whole translation. The copy is one
//! transaction, pulled from sled in batches; the sled store is only read.

use super::engine::Entry;
use super::pg::PgEngine;
use super::{StoreError, lock_dir};
use std::collections::BTreeMap;
use std::path::Path;

/// Rows per INSERT: big enough that round trips do not dominate, small enough to keep memory
/// flat (a section is a few KiB).
const BATCH_ROWS: usize = 500;

/// Trees of a sled database that are not the store's: sled's own default tree, and the
/// `secrets` tree (always empty on sled; the caller brings the sealed secrets).
const SKIPPED: &[&[u8]] = &[b"__sled__default", b"secrets"];

/// An embedded store opened for copying, with its data directory's lock held (so no server
/// runs on it meanwhile).
pub struct EmbeddedSource {
    db: sled::Db,
    _lock: std::fs::File,
}

impl EmbeddedSource {
    /// Opens `dir/db` under `dir`'s lock. A directory without an embedded store is refused
    /// (nothing is created in it).
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join("db");
        if !path.is_dir() {
            return Err(StoreError::Io {
                path,
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no embedded store here (is --data the server's data directory?)",
                ),
            });
        }
        let lock = lock_dir(dir)?;
        let db = sled::Config::new().path(&path).open()?;
        Ok(Self { db, _lock: lock })
    }

    fn trees(&self) -> Vec<(String, sled::Tree)> {
        let mut trees = Vec::new();
        for name in self.db.tree_names() {
            if SKIPPED.contains(&name.as_ref()) {
                continue;
            }
            if let Ok(tree) = self.db.open_tree(&name) {
                trees.push((String::from_utf8_lossy(&name).into_owned(), tree));
            }
        }
        trees
    }

    /// How many entries each tree holds (every tree, empty ones too).
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.trees()
            .into_iter()
            .map(|(name, t)| (name, u64::try_from(t.len()).unwrap_or(u64::MAX)))
            .collect()
    }

    /// Every tree in batches of at most [`BATCH_ROWS`], read as the copy goes.
    fn batches(&self) -> impl Iterator<Item = Result<(String, Vec<Entry>), StoreError>> + '_ {
        self.trees().into_iter().flat_map(|(name, tree)| {
            let mut rows = tree.iter();
            let mut done = false;
            std::iter::from_fn(move || {
                if done {
                    return None;
                }
                let mut batch = Vec::with_capacity(BATCH_ROWS);
                for kv in rows.by_ref() {
                    match kv {
                        Ok((k, v)) => batch.push((k.to_vec(), v.to_vec())),
                        Err(e) => {
                            done = true;
                            return Some(Err(StoreError::from(e)));
                        }
                    }
                    if batch.len() == BATCH_ROWS {
                        return Some(Ok((name.clone(), batch)));
                    }
                }
                done = true;
                (!batch.is_empty()).then(|| Ok((name.clone(), batch)))
            })
        })
    }
}

/// The PostgreSQL database a migration fills.
pub struct PostgresTarget {
    engine: PgEngine,
}

impl PostgresTarget {
    /// Connects to `url` and brings its schema up to date (checks first, as `serve` does).
    pub fn connect(url: &str) -> Result<Self, StoreError> {
        let engine = PgEngine::connect(url)?;
        engine.migrate()?;
        Ok(Self { engine })
    }

    /// Rows per tree in the database.
    pub fn counts(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        self.engine.tree_counts()
    }

    /// Copies every tree of `source`, plus `extra` (tree, rows), in one transaction; `false`
    /// (nothing written) when the database is not empty.
    pub fn copy_from(
        &self,
        source: &EmbeddedSource,
        extra: Vec<(String, Vec<Entry>)>,
    ) -> Result<bool, StoreError> {
        self.engine
            .load_into_empty(source.batches().chain(extra.into_iter().map(Ok)))
    }
}
