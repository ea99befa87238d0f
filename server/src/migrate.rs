//! `vakt-server migrate --data DIR --to postgresql://… --secrets-key FILE`: an embedded
//! installation moved into an empty PostgreSQL database, so `serve --data DIR --store URL
//! --secrets-key FILE` serves the same installation (agents keep their certificates, admin
//! tokens keep working).
//!
//! Every tree of the sled store is copied as it is (`store::migrate`), and the data
//! directory's CA key and command-signing generations are sealed into the `secrets` tree
//! (`secrets.rs`), all in one transaction into a database that must be empty. DIR's lock is
//! held throughout (no server may run there), the sled store is only read (it stays as a way
//! back), and afterwards the per-tree counts and the audit chain are checked on the target.

use crate::secrets::{Material, SecretsError, SecretsKey};
use crate::store::migrate::{EmbeddedSource, PostgresTarget};
use crate::store::{Store, StoreError};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    #[error(
        "{0} has no CA (ca.pem and ca.key): not a vakt-server data directory, or one already migrated"
    )]
    NoCa(PathBuf),
    #[error(
        "the PostgreSQL database is not empty ({rows} rows in {trees} trees); migrate only into an empty database (nothing was written)"
    )]
    NotEmpty { rows: u64, trees: usize },
    #[error(
        "after the copy, tree {tree} holds {target} rows in PostgreSQL but {embedded} in the embedded store"
    )]
    CountMismatch {
        tree: String,
        embedded: u64,
        target: u64,
    },
    #[error("after the copy, the audit log in PostgreSQL does not verify: {0}")]
    AuditBroken(String),
}

/// What a migration copied and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Rows per tree, as found in both stores (the sealed secrets included).
    pub trees: BTreeMap<String, u64>,
    /// Audit entries whose chain was verified in PostgreSQL.
    pub audit_entries: u64,
    /// Whether the secrets key file was made by this run.
    pub key_created: bool,
}

impl Summary {
    pub fn rows(&self) -> u64 {
        self.trees.values().sum()
    }
}

fn not_empty(counts: &BTreeMap<String, u64>) -> MigrateError {
    MigrateError::NotEmpty {
        rows: counts.values().sum(),
        trees: counts.len(),
    }
}

/// Migrates the embedded installation in `data` into the empty database at `url`, sealing its
/// secrets under the key in `key_path` (created if absent; removed again when the copy does
/// not happen).
pub fn migrate(data: &Path, url: &str, key_path: &Path) -> Result<Summary, MigrateError> {
    // Checks that write nothing, cheapest first: the directory, the database, the CA.
    let source = EmbeddedSource::open(data)?;
    let target = PostgresTarget::connect(url)?;
    let before = target.counts()?;
    if !before.is_empty() {
        return Err(not_empty(&before));
    }
    let material = Material::from_dir(data)?.ok_or_else(|| MigrateError::NoCa(data.into()))?;
    let (key, key_created) = SecretsKey::load_or_create(key_path)?;
    let sealed = material.sealed(&key);
    let secrets_rows = u64::try_from(sealed.len()).unwrap_or(u64::MAX);
    let copied = target.copy_from(
        &source,
        vec![(
            "secrets".to_string(),
            sealed
                .into_iter()
                .map(|(name, blob)| (name.into_bytes(), blob))
                .collect(),
        )],
    );
    let copied = match copied {
        Ok(c) => c,
        Err(e) => {
            forget_key(key_created, key_path);
            return Err(e.into());
        }
    };
    if !copied {
        // Someone wrote to it between the first look and the table lock.
        forget_key(key_created, key_path);
        return Err(not_empty(&target.counts()?));
    }

    // Check what landed: every tree's count, and the audit chain as `vakt audit verify` does.
    let mut expected = source.counts();
    expected.retain(|_, n| *n > 0);
    expected.insert("secrets".into(), secrets_rows);
    let found = target.counts()?;
    for (tree, n) in &expected {
        let got = found.get(tree).copied().unwrap_or(0);
        if got != *n {
            return Err(MigrateError::CountMismatch {
                tree: tree.clone(),
                embedded: *n,
                target: got,
            });
        }
    }
    if let Some((tree, n)) = found.iter().find(|(t, _)| !expected.contains_key(*t)) {
        return Err(MigrateError::CountMismatch {
            tree: tree.clone(),
            embedded: 0,
            target: *n,
        });
    }
    let log = Store::connect_postgres(url)?.audit_log()?;
    let verified = crate::api::admin::verify_chain(&log);
    if !verified.ok {
        return Err(MigrateError::AuditBroken(verified.problem));
    }
    Ok(Summary {
        trees: found,
        audit_entries: verified.entries,
        key_created,
    })
}

/// Removes a key file this run made when nothing was sealed with it.
fn forget_key(created: bool, key_path: &Path) {
    if created {
        let _ = std::fs::remove_file(key_path);
    }
}
