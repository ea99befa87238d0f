//! Store operations of the token lifecycle: listing admin and enrollment tokens, and changing
//! one record atomically (revoke, approve, the last-used time).
//!
//! Every change is a read-modify-write of one key through `Tree::update` (a compare-and-swap
//! loop on sled, a row-locking transaction on PostgreSQL), so a last-used update that races a revocation can never write the
//! old, unrevoked record back.

use super::engine::Tree;
use super::{Store, StoreError, decode};
use prost::Message;
use vakt_proto::pb;

/// How often a token's last use is written: at most once a minute, without a flush.
pub const LAST_USED_GRANULARITY_MS: i64 = 60_000;

impl Store {
    /// Every admin token with the sha-256 it is stored under.
    pub fn admin_tokens(&self) -> Result<Vec<([u8; 32], pb::AdminTokenRecord)>, StoreError> {
        all(&self.admin_tokens, "admin_tokens")
    }

    /// Every enrollment token with the sha-256 it is stored under.
    pub fn enroll_tokens(&self) -> Result<Vec<([u8; 32], pb::EnrollTokenRecord)>, StoreError> {
        all(&self.enroll_tokens, "enroll_tokens")
    }

    /// Changes the admin token stored under `hash` and flushes; `None` if there is none.
    pub async fn update_admin_token(
        &self,
        hash: &[u8; 32],
        change: impl FnMut(&mut pb::AdminTokenRecord),
    ) -> Result<Option<pb::AdminTokenRecord>, StoreError> {
        let rec = update(&self.admin_tokens, "admin_tokens", hash, change)?;
        self.flush().await?;
        Ok(rec)
    }

    /// Changes the enrollment token stored under `hash` and flushes; `None` if there is none.
    pub async fn update_enroll_token(
        &self,
        hash: &[u8; 32],
        change: impl FnMut(&mut pb::EnrollTokenRecord),
    ) -> Result<Option<pb::EnrollTokenRecord>, StoreError> {
        let rec = update(&self.enroll_tokens, "enroll_tokens", hash, change)?;
        self.flush().await?;
        Ok(rec)
    }

    /// Records that the admin token under `hash` was used at `now_ms`, if its recorded last use
    /// is a minute old or more. No flush: the time is not acknowledged data, and a flush on
    /// every admin call would make every call wait for the disk.
    pub fn touch_admin_token(&self, hash: &[u8; 32], now_ms: i64) -> Result<(), StoreError> {
        update(
            &self.admin_tokens,
            "admin_tokens",
            hash,
            |r: &mut pb::AdminTokenRecord| {
                if now_ms.saturating_sub(r.last_used_at_ms) >= LAST_USED_GRANULARITY_MS {
                    r.last_used_at_ms = now_ms;
                }
            },
        )
        .map(|_| ())
    }

    /// [`Store::touch_admin_token`] without holding a runtime thread while PostgreSQL answers
    /// (the lock path's authorization).
    pub async fn touch_admin_token_async(
        &self,
        hash: [u8; 32],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.unblocked(move |s| s.touch_admin_token(&hash, now_ms))
            .await
    }
}

fn all<M: Message + Default>(
    tree: &Tree,
    name: &'static str,
) -> Result<Vec<([u8; 32], M)>, StoreError> {
    let mut out = Vec::new();
    for (k, v) in tree.iter()? {
        // Keys are sha-256 digests; anything else is not a token record.
        let Ok(hash) = <[u8; 32]>::try_from(AsRef::<[u8]>::as_ref(&k)) else {
            continue;
        };
        out.push((hash, decode(name, &k, &v)?));
    }
    Ok(out)
}

/// One record changed atomically. A record that does not decode is left as it is and reported.
fn update<M: Message + Default + Clone>(
    tree: &Tree,
    name: &'static str,
    key: &[u8; 32],
    mut change: impl FnMut(&mut M),
) -> Result<Option<M>, StoreError> {
    let mut failed = None;
    let mut result = None;
    tree.update(key, |old| {
        let old = old?;
        match decode::<M>(name, key, old) {
            Ok(mut rec) => {
                change(&mut rec);
                let bytes = rec.encode_to_vec();
                result = Some(rec);
                failed = None;
                Some(bytes)
            }
            Err(e) => {
                failed = Some(e);
                result = None;
                Some(old.to_vec())
            }
        }
    })?;
    match failed {
        Some(e) => Err(e),
        None => Ok(result),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn last_use_is_written_once_a_minute_and_never_undoes_a_revocation() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let h = crate::token::hash("vakt_a_x");
        let rec = pb::AdminTokenRecord {
            id: "a1".into(),
            ..Default::default()
        };
        s.put_admin_token(&h, &rec).await.unwrap();
        s.touch_admin_token(&h, 100_000).unwrap();
        s.touch_admin_token(&h, 130_000).unwrap();
        assert_eq!(s.admin_token(&h).unwrap().unwrap().last_used_at_ms, 100_000);
        s.update_admin_token(&h, |r| r.revoked = true)
            .await
            .unwrap();
        s.touch_admin_token(&h, 200_000).unwrap();
        let after = s.admin_token(&h).unwrap().unwrap();
        assert!(after.revoked);
        assert_eq!(after.last_used_at_ms, 200_000);
        // An update of a missing token creating nothing: tests/tests/store_engines.rs, on
        // both engines.
    }
}
