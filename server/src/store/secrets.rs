//! The `secrets` tree: sealed blobs by name, written only by an insert that never overwrites
//! (a shared secret is made once) and by a retirement (a retired signing key's private item
//! removed, its public form inserted, in one transaction), and the one transaction that initialises an empty database
//! (sealed secrets, the initial admin token, its audit entry). The store only moves bytes;
//! sealing and opening is `crate::secrets`.

use super::engine::{TxTree, abort};
use super::{Store, StoreError, audit_entry};
use prost::Message;
use vakt_proto::pb;

/// An audit entry to be written: what `Store::audit` takes, as one value.
#[derive(Debug, Clone)]
pub struct AuditDraft {
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
    pub at_ms: i64,
}

/// How an attempt to initialise the database's secrets ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitOutcome {
    /// Another replica's secrets were there first; nothing was written.
    Lost,
    /// Ours went in. `audited`: the audit entry went in with them (false only when the audit
    /// log was not empty, an older database: the caller appends it then).
    Won { audited: bool },
}

/// The key that marks a database as initialised (`crate::secrets::CA_KEY`).
const MARK: &[u8] = b"ca.key";

/// How a transaction here ends early: the item it would write is there already, or the
/// store failed.
#[derive(Debug)]
enum Taken {
    There,
    Store(StoreError),
}

impl From<StoreError> for Taken {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

impl Store {
    /// The sealed item `name`.
    pub fn secret(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.secrets.get(name.as_bytes())
    }

    /// The names of every sealed item, in order.
    pub fn secret_names(&self) -> Result<Vec<String>, StoreError> {
        Ok(self
            .secrets
            .keys()?
            .into_iter()
            .map(|k| String::from_utf8_lossy(&k).into_owned())
            .collect())
    }

    /// Stores `sealed` as `name` unless something is there already: `false` then, and nothing
    /// written (another replica made the same item first). Durable when it returns.
    pub fn put_new_secret(&self, name: &str, sealed: &[u8]) -> Result<bool, StoreError> {
        let r = self
            .engine
            .transaction([&self.secrets], |[t]: &[TxTree<'_>; 1]| {
                if t.get(name.as_bytes())?.is_some() {
                    return Err(abort(Taken::There));
                }
                t.insert(name.as_bytes(), sealed)?;
                Ok(())
            });
        match r {
            Ok(()) => Ok(true),
            Err(Taken::There) => Ok(false),
            Err(Taken::Store(e)) => Err(e),
        }
    }

    /// Retires a secret: `sealed` stored as `retired` (unless there already) and `live`
    /// removed, in one transaction, so a reader finds one or the other, never neither. The only
    /// removal in this tree: a retired command-signing generation's private key. Durable when
    /// it returns on PostgreSQL, where this tree is used (each commit is durable there).
    pub fn retire_secret(
        &self,
        live: &str,
        retired: &str,
        sealed: &[u8],
    ) -> Result<(), StoreError> {
        self.engine
            .transaction::<(), StoreError, 1>([&self.secrets], |[t]: &[TxTree<'_>; 1]| {
                if t.get(retired.as_bytes())?.is_none() {
                    t.insert(retired.as_bytes(), sealed)?;
                }
                t.remove(live.as_bytes())?;
                Ok(())
            })
    }

    /// Writes `items` (sealed, by name), the initial admin token and its audit entry as one
    /// transaction, unless the database holds secrets already ([`InitOutcome::Lost`]: nothing
    /// written). Two replicas doing this at once: the database serialises the two
    /// transactions, and the second finds the first's secrets when it runs again.
    pub async fn initialise_secrets(
        &self,
        items: &[(String, Vec<u8>)],
        token: Option<(&[u8; 32], &pb::AdminTokenRecord)>,
        audit: Option<&AuditDraft>,
    ) -> Result<InitOutcome, StoreError> {
        let r = self.engine.transaction(
            [&self.secrets, &self.admin_tokens, &self.audit],
            |[secrets, tokens, log]: &[TxTree<'_>; 3]| {
                if secrets.get(MARK)?.is_some() {
                    return Err(abort(Taken::There));
                }
                for (name, sealed) in items {
                    secrets.insert(name.as_bytes(), sealed)?;
                }
                if let Some((hash, rec)) = token {
                    tokens.insert(hash, rec.encode_to_vec())?;
                }
                let mut audited = false;
                if let Some(d) = audit {
                    // The first entry of the chain, when there is none yet (a new database).
                    let first = 1u64.to_be_bytes();
                    if log.get(first)?.is_none() {
                        let (k, v) = audit_entry(None, d).map_err(|e| abort(Taken::Store(e)))?;
                        log.insert(k, v)?;
                        audited = true;
                    }
                }
                Ok(InitOutcome::Won { audited })
            },
        );
        let outcome = match r {
            Ok(o) => o,
            Err(Taken::There) => return Ok(InitOutcome::Lost),
            Err(Taken::Store(e)) => return Err(e),
        };
        self.flush().await?;
        Ok(outcome)
    }
}
